// The fault matrix of incremental backups: a base snapshot removed between runs or under a
// delta export, a delta export cut short, a chain with a missing, damaged or misplaced file,
// and SIGTERM during a delta export and during a chain restore. Whatever happens: no snapshot
// but the one base, no partial file, and the VM's disks untouched by a restore that is refused
// or stopped. Each case runs on both delta paths: the host's VHD export, and changed block
// tracking (cbt) with the changed blocks read over TLS NBD, its base kept as disks without data.
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { runPostExec } from '../../src/backup/post.js'
import { runPreExec } from '../../src/backup/run.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import type { ChainManifest } from '../../src/staging/chain.js'
import { run, tempDir, terminateWhen } from '../helpers/hooks.js'
import { baseRuns, diskHashes, guestWrites, serveNbd, snapshots } from '../helpers/pool.js'
import { world } from '../helpers/world.js'

const PRE_EXEC = fileURLToPath(new URL('../../dist/hooks/pre-exec.js', import.meta.url))
const RESTORE = fileURLToPath(new URL('../../dist/hooks/restore-post-exec.js', import.meta.url))

/** How each delta path is reached, and how the host fails it. */
const PATHS = [
  {
    path: 'vhd',
    cbt: false,
    cut: 'vhd-truncate:3MiB',
    stall: (s: number) => `export-stall:${s}`,
    baseGone: 'vhd-base-gone',
    reading: /Debian: exporting disk \d/,
  },
  {
    path: 'cbt',
    cbt: true,
    cut: 'nbd-cut:3MiB',
    stall: (s: number) => `nbd-stall:${s}`,
    baseGone: 'cbt-base-gone',
    reading: /Debian: reading the changed blocks of disk \d over NBD/,
  },
] as const
type DeltaPath = (typeof PATHS)[number]

/** A pool, an incremental configuration, and a way to run backups whose files are kept aside. */
async function chainWorld(p: DeltaPath, extra: Record<string, unknown> = {}) {
  const w = await world({ mode: 'online', vmName: ['Debian'], incremental: true, cbt: p.cbt, ...extra })
  mkdirSync(w.backupDir)
  if (p.cbt) await serveNbd(w.xapi)
  const kept = tempDir()
  const vm = await w.xapi.vmByName('Debian')
  /** One backup as Data Protector runs it: pre-exec, the files kept, post-exec. */
  const backUp = async (
    session: { SMEXIT?: string } = {},
  ): Promise<{ code: number; text: string; post: string }> => {
    const pre = await run(runPreExec, [w.config])
    // Data Protector keeps the files only when the session backed them up.
    if (session.SMEXIT === undefined || session.SMEXIT === '0')
      for (const f of readdirSync(w.backupDir).filter((n) => !n.startsWith('.')))
        copyFileSync(join(w.backupDir, f), join(kept, f))
    const post = await run(runPostExec, [w.config], { env: session })
    return { code: pre.code, text: pre.text, post: post.text }
  }
  const manifests = (): ChainManifest[] =>
    readdirSync(kept)
      .filter((n) => n.endsWith('.chain.json'))
      .sort()
      .map((n) => JSON.parse(readFileSync(join(kept, n), 'utf8')) as ChainManifest)
  const base = (): Promise<string[]> => baseRuns(w.xapi)
  const putBack = (): void => {
    for (const f of readdirSync(kept)) copyFileSync(join(kept, f), join(w.backupDir, f))
  }
  return { ...w, kept, vm, backUp, manifests, base, putBack }
}

describe.each(PATHS)('incremental backups: faults ($path deltas)', (p) => {
  it('the base snapshot removed between runs: the next run is a full, a new chain', async () => {
    const w = await chainWorld(p)
    expect((await w.backUp()).code).toBe(0)
    // An administrator deletes the base snapshot (and its disks) in XenCenter.
    for (const snap of await w.xapi.call<string[]>('VM.get_all'))
      if (await w.xapi.call('VM.get_is_a_snapshot', snap)) await w.xapi.call('VM.destroy', snap)
    for (const vdi of await w.xapi.call<string[]>('VDI.get_all'))
      if (await w.xapi.call('VDI.get_is_a_snapshot', vdi)) await w.xapi.call('VDI.destroy', vdi)
    expect(await snapshots(w.xapi)).toEqual([])
    expect(await w.base()).toEqual([])
    await guestWrites(w.sim, w.xapi, w.vm, 'one', 0.5)
    const second = await w.backUp()
    expect(second.text).toMatch(/Debian: full run \(no base snapshot on the host/)
    expect(w.manifests().map((m) => m.position)).toEqual([0, 0])
    expect(await w.base()).toEqual([w.manifests()[1]!.run])
  })

  it('the base deleted under the delta export: this run becomes a full, a new chain', async () => {
    const w = await chainWorld(p)
    expect((await w.backUp()).code).toBe(0)
    await guestWrites(w.sim, w.xapi, w.vm, 'one', 0.5)
    w.sim.faults.add(p.baseGone)
    const second = await w.backUp()
    expect(second.code, second.text).toBe(0)
    expect(second.text).toMatch(
      /Debian: the base snapshot disappeared during the run .*; exporting whole disks: a new chain/,
    )
    const [, latest] = w.manifests()
    expect(latest!.position).toBe(0)
    expect(latest!.parentRun).toBeUndefined()
    expect(await w.base()).toEqual([latest!.run])
  })

  it('a delta export cut short: the VM fails, no file is left, the base stays; the next run is a delta against it', async () => {
    const w = await chainWorld(p)
    expect((await w.backUp()).code).toBe(0)
    const [first] = w.manifests()
    await guestWrites(w.sim, w.xapi, w.vm, 'one', 0.5)
    w.sim.faults.add(p.cut)
    const cut = await run(runPreExec, [w.config])
    expect(cut.code).toBe(5)
    expect(cut.text).toMatch(/Debian: FAILED: /)
    expect(readdirSync(w.backupDir).filter((n) => n.endsWith('.vhd') || n.endsWith('.partial'))).toEqual([])
    await run(runPostExec, [w.config])
    expect(await w.base()).toEqual([first!.run])
    w.sim.faults.clear()
    expect((await w.backUp()).code).toBe(0)
    const [, next] = w.manifests()
    expect(next!.parentRun).toBe(first!.run)
    expect(next!.position).toBe(1)
  })

  it('a session that did not back up the files (SMEXIT 12): the run is not a base; the next delta is against the run before', async () => {
    const w = await chainWorld(p)
    expect((await w.backUp({ SMEXIT: '0' })).post).toMatch(
      /Debian: run \S+ is the base of the next incremental run/,
    )
    const [first] = w.manifests()
    await guestWrites(w.sim, w.xapi, w.vm, 'one', 0.5)
    const failed = await w.backUp({ SMEXIT: '12' })
    expect(failed.post).toMatch(
      new RegExp(
        `Debian: Data Protector did not back up every file of run \\S+: its snapshot was removed; the next incremental run holds the changes since run ${first!.run}`,
      ),
    )
    expect(await w.base()).toEqual([first!.run])
    await guestWrites(w.sim, w.xapi, w.vm, 'two', 0.5)
    expect((await w.backUp()).code).toBe(0)
    const [, next] = w.manifests()
    expect(next!.parentRun).toBe(first!.run)
    // Both runs' changes are in it: the chain restores the disks as they are now.
    const now = await diskHashes(w.sim.url, w.xapi, w.vm)
    await guestWrites(w.sim, w.xapi, w.vm, 'damage', 0.5)
    w.putBack()
    expect((await run(runRestorePostExec, [w.config])).code).toBe(0)
    expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(now)
  })

  it('a chain with a missing, damaged or misplaced file is refused; the pool is not touched', async () => {
    const w = await chainWorld(p)
    for (const seed of ['', 'one', 'two']) {
      if (seed) await guestWrites(w.sim, w.xapi, w.vm, seed, 0.5)
      expect((await w.backUp()).code).toBe(0)
    }
    const [, middle, last] = w.manifests()
    const before = await diskHashes(w.sim.url, w.xapi, w.vm)
    const restore = async (): Promise<string> => {
      const result = await run(runRestorePostExec, [w.config])
      expect(result.code).toBe(5)
      expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(before)
      return result.text
    }
    // A delta's file missing.
    w.putBack()
    rmSync(join(w.backupDir, middle!.disks[0]!.file))
    expect(await restore()).toMatch(
      new RegExp(
        `Debian: FAILED: ${middle!.disks[0]!.file} \\(run ${middle!.run}\\) is not in backupDir: restore that run's whole session`,
      ),
    )
    // The last delta's file is the middle one's (same disk, another run): its hash says so.
    w.putBack()
    copyFileSync(join(w.kept, middle!.disks[0]!.file), join(w.backupDir, last!.disks[0]!.file))
    expect(await restore()).toMatch(/does not match its chain manifest \(size or XXH64 differ\)/)
    // A manifest out of place in its chain.
    w.putBack()
    const name = readdirSync(w.backupDir)
      .filter((n) => n.endsWith('.chain.json'))
      .sort()[1]!
    writeFileSync(join(w.backupDir, name), JSON.stringify({ ...middle!, position: 5 }))
    expect(await restore()).toMatch(/are not consecutive runs of one chain/)
  })

  it("SIGTERM during a delta export: exit 130, the run's snapshot and files gone, the base kept", async () => {
    const w = await chainWorld(p, { progressInterval: 0.2 })
    expect((await w.backUp()).code).toBe(0)
    const [first] = w.manifests()
    await guestWrites(w.sim, w.xapi, w.vm, 'one', 0.5)
    w.sim.faults.add(p.stall(30))
    const { result, stopMs } = await terminateWhen(PRE_EXEC, [w.config], p.reading, 200)
    expect(result.exitCode, `${result.signal} ${result.stdout}\n${result.stderr}`).toBe(130)
    expect(stopMs).toBeLessThan(10_000)
    expect(result.stdout).toMatch(/^dpxen: interrupted: stopped and cleaned up$/m)
    expect(await w.base()).toEqual([first!.run])
    expect(await snapshots(w.xapi)).toHaveLength(p.cbt ? 0 : 1)
    // Nothing partial is left, nor a disk file of the run (the next hook removes what it finished).
    expect(readdirSync(w.backupDir).filter((n) => n.endsWith('.partial') || n.endsWith('.vhd'))).toEqual([])
    // The next run goes on from the kept base, with a delta.
    w.sim.faults.clear()
    expect((await w.backUp()).code).toBe(0)
    expect(w.manifests()[1]!.parentRun).toBe(first!.run)
  })

  it('a host that pauses mid-transfer (delta export, then chain import): both go on, with progress lines, and the disks come back', async () => {
    const w = await chainWorld(p, { progressInterval: 0.2 })
    expect((await w.backUp()).code).toBe(0)
    await guestWrites(w.sim, w.xapi, w.vm, 'one', 0.5)
    w.sim.faults.add(p.stall(1))
    const delta = await w.backUp()
    expect(delta.code, delta.text).toBe(0)
    expect(delta.text).toMatch(p.reading)
    const now = await diskHashes(w.sim.url, w.xapi, w.vm)
    w.sim.faults.clear()
    await guestWrites(w.sim, w.xapi, w.vm, 'damage', 0.5)
    w.putBack()
    w.sim.faults.add('import-stall:1')
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    expect(restore.text).toMatch(/dpxen: Debian: writing \S+\.vhd/)
    expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(now)
  })

  it('SIGTERM during a chain restore: exit 130, the rebuilt disks removed, the VM as it was', async () => {
    const w = await chainWorld(p)
    expect((await w.backUp()).code).toBe(0)
    await guestWrites(w.sim, w.xapi, w.vm, 'one', 0.5)
    expect((await w.backUp()).code).toBe(0)
    await guestWrites(w.sim, w.xapi, w.vm, 'damage', 0.5)
    w.putBack()
    const hashes = await diskHashes(w.sim.url, w.xapi, w.vm)
    const vdis = (await w.xapi.call<string[]>('VDI.get_all')).length
    w.sim.faults.add('import-stall:30')
    const { result, stopMs } = await terminateWhen(RESTORE, [w.config], /restore started from run/, 300)
    expect(result.exitCode).toBe(130)
    expect(stopMs).toBeLessThan(10_000)
    for (let i = 0; i < 50 && (await w.xapi.call<string[]>('VDI.get_all')).length !== vdis; i++)
      await new Promise((r) => setTimeout(r, 100))
    expect((await w.xapi.call<string[]>('VDI.get_all')).length).toBe(vdis)
    expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(hashes)
    expect(await w.xapi.call('VM.get_power_state', w.vm)).toBe('Running')
    expect(existsSync(w.backupDir)).toBe(true)
  })
})
