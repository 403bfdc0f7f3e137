// The fault matrix: each fault injected into online and offline backups and restores, and
// after each the invariants checked: no snapshot or imported leftover, every VM as it was, no
// partial file under a final name, one clear line naming the VM and the cause, the documented
// exit code, and neither the password nor a session id in the output or the debug file.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runPreExec } from '../../src/backup/run.js'
import { runPostExec } from '../../src/backup/post.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import type { XapiSim } from '../../simulator/xapi/server.js'
import { run, tempDir, writeConfig, type HookRun } from '../helpers/hooks.js'
import { powerStates, records } from '../helpers/pool.js'
import type { TestClient } from '../helpers/rpc.js'
import { demoSim } from '../helpers/sim.js'
import { world } from '../helpers/world.js'

const PASSWORD = 'Pa55-word-never-printed'

interface World {
  sim: XapiSim
  xapi: TestClient
  dir: string
  backupDir: string
  debugDir: string
  config: (extra?: Record<string, unknown>) => string
}

async function matrixWorld(mode: string, stateDir?: string): Promise<World> {
  const w = await world(
    { mode, vmName: ['Debian'], debug: true },
    { password: PASSWORD, ...(stateDir ? { stateDir } : {}) },
  )
  const debugDir = join(w.dir, 'debug')
  return { ...w, debugDir, config: (extra = {}) => w.configFor({ debugDir, ...extra }) }
}

interface Snapshot {
  vms: string[]
  vdis: number
  power: Record<string, string>
}

async function pool(xapi: TestClient): Promise<Snapshot> {
  return {
    vms: Object.keys(await records(xapi, 'VM')).sort(),
    vdis: (await xapi.call<string[]>('VDI.get_all')).length,
    power: await powerStates(xapi),
  }
}

/** The invariants every fault must leave intact. */
async function checkInvariants(
  w: World,
  before: Snapshot,
  result: HookRun,
  expected: { code: number; line: RegExp; replacesVm?: boolean },
): Promise<void> {
  expect(result.code).toBe(expected.code)
  expect(result.lines.some((l) => expected.line.test(l))).toBe(true)
  const after = await pool(w.xapi)
  if (!expected.replacesVm) expect(after.vms).toEqual(before.vms)
  expect(after.vdis).toBe(before.vdis)
  expect(after.power).toEqual(before.power)
  expect(Object.values(await records(w.xapi, 'VM')).filter((v) => v.is_a_snapshot)).toEqual([])
  const files = existsSync(w.backupDir) ? readdirSync(w.backupDir) : []
  expect(files.filter((f) => f.endsWith('.partial'))).toEqual([])
  const sessions = w.sim.context.db
    .eventsSince(0)
    .events.filter((e) => e.cls === 'session' && e.operation === 'add')
    .map((e) => e.ref)
  const debug = existsSync(w.debugDir)
    ? readdirSync(w.debugDir)
        .map((f) => readFileSync(join(w.debugDir, f), 'utf8'))
        .join('\n')
    : ''
  for (const text of [result.text, debug]) {
    expect(text).not.toContain(PASSWORD)
    for (const s of sessions) expect(text).not.toContain(s)
  }
}

type Case = [string, string, (w: World) => Promise<void>, { code: number; line: RegExp; abort?: RegExp }]

const backupCases: Case[] = [
  [
    'a truncated export',
    'online',
    async (w) => w.sim.faults.add('export-truncate:2MiB'),
    { code: 5, line: /^dpxen: Debian: FAILED: the export stopped after 2097152 bytes: VDI_IO_ERROR/ },
  ],
  [
    'a truncated export',
    'offline',
    async (w) => w.sim.faults.add('export-truncate:2MiB'),
    { code: 5, line: /^dpxen: Debian: FAILED: the export stopped after 2097152 bytes/ },
  ],
  [
    'a stalled export, then SIGTERM',
    'online',
    async (w) => w.sim.faults.add('export-stall:30'),
    { code: 130, line: /^dpxen: interrupted: stopped and cleaned up$/, abort: /Debian: backup started/ },
  ],
  [
    'a stalled export, then SIGTERM',
    'offline',
    async (w) => w.sim.faults.add('export-stall:30'),
    { code: 130, line: /^dpxen: interrupted: stopped and cleaned up$/, abort: /Debian: backup started/ },
  ],
  [
    'VDI_IN_USE when cleaning up',
    'online',
    async (w) => w.sim.faults.add('vdi-in-use-once'),
    { code: 0, line: /^dpxen: Debian: done/ },
  ],
  [
    'SESSION_INVALID mid-run',
    'online',
    async (w) => w.sim.faults.add('session-invalid-once'),
    { code: 0, line: /^dpxen: Debian: done/ },
  ],
  [
    'SESSION_INVALID mid-run',
    'offline',
    async (w) => w.sim.faults.add('session-invalid-once'),
    { code: 0, line: /^dpxen: Debian: done/ },
  ],
  [
    'a snapshot failure (chain too long)',
    'online',
    async (w) => w.sim.faults.add('snapshot-fail'),
    {
      code: 5,
      line: /^dpxen: Debian: FAILED: VM\.snapshot failed: SR_BACKEND_FAILURE_109 The snapshot chain is too long$/,
    },
  ],
  [
    'a VM that does not start again',
    'offline',
    async (w) => w.sim.faults.add('start-fail'),
    {
      code: 5,
      line: /^dpxen: Debian: FAILED: Debian was stopped for the backup and could not be started again/,
    },
  ],
  [
    'bad credentials',
    'online',
    async () => undefined,
    { code: 4, line: /refused the password of user root/ },
  ],
]

describe('fault matrix: backups', () => {
  it.each(backupCases)('%s (%s)', async (_what, mode, inject, expected) => {
    const w = await matrixWorld(mode)
    const before = await pool(w.xapi)
    await inject(w)
    const config = _what === 'bad credentials' ? w.config({ password: 'wrong' }) : w.config()
    const result = await run(runPreExec, [config], expected.abort ? { abortWhen: expected.abort } : {})
    w.sim.faults.clear()
    if (expected.code === 5 && _what === 'a VM that does not start again') {
      // The host refused to start it: the line says so; the post-exec tries again and reports.
      expect(result.lines.some((l) => expected.line.test(l))).toBe(true)
      const post = await run(runPostExec, [w.config()])
      expect(post.code).toBe(5)
      expect(await powerStates(w.xapi)).toEqual(before.power)
      return
    }
    if (_what === 'bad credentials') {
      expect(result.code).toBe(4)
      expect(result.text).not.toContain('wrong')
      return
    }
    await checkInvariants(w, before, result, expected)
    // A failed VM never leaves a file under its final name.
    if (expected.code !== 0)
      expect(
        existsSync(w.backupDir) ? readdirSync(w.backupDir).filter((f) => f.endsWith('.xva')) : [],
      ).toEqual([])
  })

  it('the staging folder full (ENOSPC) mid-export: that VM fails clearly, nothing is left', async (ctx) => {
    const { execa } = await import('execa')
    const { mkdirSync, writeFileSync } = await import('node:fs')
    const w = await matrixWorld('online')
    mkdirSync(w.backupDir)
    const mounted = await execa('mount', ['-t', 'tmpfs', '-o', 'size=12m,mode=0700', 'tmpfs', w.backupDir], {
      reject: false,
    })
    if (mounted.exitCode !== 0) {
      if (process.env.CI) throw new Error(`cannot mount a small tmpfs for the ENOSPC test: ${mounted.stderr}`)
      return ctx.skip()
    }
    try {
      const before = await pool(w.xapi)
      w.sim.faults.add('export-stall:1')
      const config = w.config({ vmName: ['vm2'], debug: false })
      const running = run(runPreExec, [config])
      // While the export stalls, something else fills the disk.
      await new Promise((r) => setTimeout(r, 500))
      try {
        writeFileSync(join(w.backupDir, 'filler.bin'), Buffer.alloc(11 * 1024 * 1024))
      } catch {
        // the disk is already full: all the better
      }
      const result = await running
      expect(result.code).toBe(5)
      expect(result.lines).toContainEqual(
        expect.stringMatching(
          /^dpxen: vm2: FAILED: the export stopped after \d+ bytes: the staging folder is full \(ENOSPC\)/,
        ),
      )
      expect(readdirSync(w.backupDir).filter((f) => f.endsWith('.partial') || f.endsWith('.xva'))).toEqual([])
      expect((await pool(w.xapi)).vms).toEqual(before.vms)
      expect(Object.values(await records(w.xapi, 'VM')).filter((v) => v.is_a_snapshot)).toEqual([])
    } finally {
      await execa('umount', [w.backupDir], { reject: false })
    }
  })

  it('HOST_IS_SLAVE at login: followed to the master', async () => {
    const { sim, xapi } = await demoSim({ password: PASSWORD, hosts: 2 })
    const dir = tempDir()
    const before = await pool(xapi)
    const config = writeConfig(dir, {
      mode: 'online',
      vmName: ['Debian'],
      url: sim.memberUrl,
      username: 'root',
      password: PASSWORD,
      backupDir: join(dir, 's'),
    })
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    expect((await pool(xapi)).vms).toEqual(before.vms)
  })

  it('the simulator killed mid-transfer: the VM fails; the next run removes the snapshot and restarts what it stopped', async () => {
    for (const mode of ['online', 'offline']) {
      const stateDir = join(tempDir(), 'pool')
      const w = await matrixWorld(mode, stateDir)
      const before = await pool(w.xapi)
      w.sim.faults.add('export-stall:30')
      const config = w.config()
      const running = run(runPreExec, [config])
      await new Promise((r) => setTimeout(r, 700))
      await w.sim.close()
      const result = await running
      expect(result.code).toBe(5)
      expect(result.text).toMatch(/^dpxen: Debian: FAILED: /m)
      expect(readdirSync(w.backupDir).filter((f) => f.endsWith('.partial') || f.endsWith('.xva'))).toEqual([])
      // The host comes back with what it had: the next run (here the post-exec) puts things right.
      const { startSim } = await import('../helpers/sim.js')
      const again = await startSim({
        stateDir,
        password: PASSWORD,
        port: Number(new URL(w.sim.url).port),
        authFailureDelayMs: 10,
      })
      try {
        const post = await run(runPostExec, [config])
        expect(post.code).toBe(5)
        const { TestClient } = await import('../helpers/rpc.js')
        const xapi = await TestClient.login(again.url, 'root', PASSWORD)
        expect(Object.values(await records(xapi, 'VM')).filter((v) => v.is_a_snapshot)).toEqual([])
        expect(await powerStates(xapi)).toEqual(before.power)
      } finally {
        await again.close()
      }
    }
  })
})

const restoreCases: Case[] = [
  [
    'a failed import',
    'online',
    async (w) => w.sim.faults.add('import-fail'),
    { code: 5, line: /^dpxen: Debian: FAILED: import failed: VDI_IO_ERROR Device I\/O errors$/ },
  ],
  [
    'a failed import',
    'offline',
    async (w) => w.sim.faults.add('import-fail'),
    { code: 5, line: /^dpxen: Debian: FAILED: import failed: VDI_IO_ERROR Device I\/O errors$/ },
  ],
  [
    'a corrupt XVA',
    'online',
    async (w) => corrupt(w),
    { code: 5, line: /^dpxen: 127\.0\.0\.1_Debian(_Snapshot)?\.xva: FAILED: .*; the pool is unchanged$/ },
  ],
  [
    'a corrupt XVA',
    'offline',
    async (w) => corrupt(w),
    { code: 5, line: /^dpxen: 127\.0\.0\.1_Debian\.xva: FAILED: .*; the pool is unchanged$/ },
  ],
  [
    'a wrong SR',
    'online',
    async () => undefined,
    {
      code: 5,
      line: /^dpxen: Debian: FAILED: SR "DVD drives" \(type udev\) cannot hold restored disks; set sr to another SR$/,
    },
  ],
  [
    'a wrong SR',
    'offline',
    async () => undefined,
    {
      code: 5,
      line: /^dpxen: Debian: FAILED: SR "DVD drives" \(type udev\) cannot hold restored disks; set sr to another SR$/,
    },
  ],
  [
    'no default SR',
    'online',
    async (w) => noDefault(w),
    { code: 2, line: /^dpxen: the pool has no default SR: set sr in / },
  ],
  [
    'no default SR',
    'offline',
    async (w) => noDefault(w),
    { code: 2, line: /^dpxen: the pool has no default SR: set sr in / },
  ],
  [
    'a stalled import, then SIGTERM',
    'online',
    async (w) => w.sim.faults.add('import-stall:30'),
    { code: 130, line: /^dpxen: interrupted: stopped and cleaned up$/, abort: /Debian: restore started/ },
  ],
  [
    'a stalled import, then SIGTERM',
    'offline',
    async (w) => w.sim.faults.add('import-stall:30'),
    { code: 130, line: /^dpxen: interrupted: stopped and cleaned up$/, abort: /Debian: restore started/ },
  ],
  ...(['online', 'offline'] as const).flatMap((mode): Case[] => [
    [
      'a failed import, as a copy',
      mode,
      async (w) => w.sim.faults.add('import-fail'),
      { code: 5, line: /^dpxen: Debian: FAILED: import failed: VDI_IO_ERROR Device I\/O errors$/ },
    ],
    [
      'a stalled import, then SIGTERM, as a copy',
      mode,
      async (w) => w.sim.faults.add('import-stall:30'),
      { code: 130, line: /^dpxen: interrupted: stopped and cleaned up$/, abort: /Debian: restore started/ },
    ],
    [
      'only a VM of the same name (another pool)',
      mode,
      async (w) => standIn(w),
      { code: 5, line: /^dpxen: Debian: FAILED: a VM named Debian exists but it is not the one backed up / },
    ],
  ]),
]

/** The backup's VM gone, another VM given its name: what a restore into another pool meets. */
async function standIn(w: World): Promise<void> {
  const vm = await w.xapi.vmByName('Debian')
  await w.xapi.call('VM.hard_shutdown', vm)
  for (const vbd of await w.xapi.call<string[]>('VM.get_VBDs', vm)) {
    const vdi = await w.xapi.call<string>('VBD.get_VDI', vbd)
    if (vdi !== 'OpaqueRef:NULL') await w.xapi.call('VDI.destroy', vdi)
  }
  await w.xapi.call('VM.destroy', vm)
  await w.xapi.call('VM.set_name_label', await w.xapi.vmByName('vm2'), 'Debian')
}

async function corrupt(w: World): Promise<void> {
  const { writeFileSync } = await import('node:fs')
  const file = readdirSync(w.backupDir).find((f) => f.endsWith('.xva'))!
  const bytes = readFileSync(join(w.backupDir, file))
  bytes[bytes.length - 5000] = bytes[bytes.length - 5000]! ^ 0x10
  bytes[1024 * 1024 + 777] = bytes[1024 * 1024 + 777]! ^ 0x10
  writeFileSync(join(w.backupDir, file), bytes)
}

async function noDefault(w: World): Promise<void> {
  const pool = (await w.xapi.call<string[]>('pool.get_all'))[0]!
  await w.xapi.call('pool.set_default_SR', pool, 'OpaqueRef:NULL')
}

describe('fault matrix: restores', () => {
  it.each(restoreCases)('%s (%s)', async (what, mode, inject, expected) => {
    const w = await matrixWorld(mode)
    expect((await run(runPreExec, [w.config()])).code).toBe(0)
    // After the injection: a case may set the pool up (another VM in the backup's place).
    await inject(w)
    const before = await pool(w.xapi)
    const config =
      what === 'a wrong SR'
        ? w.config({ sr: 'DVD drives' })
        : what.endsWith('as a copy')
          ? w.config({ restoreAs: 'copy' })
          : w.config()
    const result = await run(
      runRestorePostExec,
      [config],
      expected.abort ? { abortWhen: expected.abort } : {},
    )
    w.sim.faults.clear()
    // After an abort the host removes what the cancelled import made, moments later.
    for (let i = 0; i < 50 && (await w.xapi.call<string[]>('VDI.get_all')).length !== before.vdis; i++)
      await new Promise((r) => setTimeout(r, 100))
    await checkInvariants(w, before, result, expected)
  })
})
