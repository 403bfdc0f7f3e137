// Backups when things go wrong: credentials, pool members, expired sessions, VDI_IN_USE, cut
// exports, failing snapshots, a VM that will not start again, and SIGTERM from Data Protector.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { describe, expect, it } from 'vitest'
import { runPreExec } from '../../src/backup/run.js'
import type { XapiSimOptions } from '../../simulator/xapi/server.js'
import { run, terminateWhen, writeConfig } from '../helpers/hooks.js'
import { powerStates, snapshots } from '../helpers/pool.js'
import { world } from '../helpers/world.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

const PRE_EXEC = fileURLToPath(new URL('../../dist/hooks/pre-exec.js', import.meta.url))
const POST_EXEC = fileURLToPath(new URL('../../dist/hooks/post-exec.js', import.meta.url))

const setup = (values: Record<string, unknown>, simOptions: XapiSimOptions = {}) => world(values, simOptions)

function files(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).sort() : []
}

describe('backup under faults', () => {
  it('bad credentials: one line, exit 4, no password anywhere', async () => {
    const { config, sim } = await setup({ mode: 'allOnline', password: 'Wrong-Secret-42' })
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(4)
    expect(result.lines).toEqual([
      `dpxen: ${sim.url} refused the password of user root (check username and password)`,
    ])
    expect(result.text).not.toContain('Wrong-Secret-42')
  })

  it('an unreachable host: one line, exit 3', async () => {
    const { config } = await setup({ mode: 'allOnline', url: 'http://127.0.0.1:9' })
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(3)
    expect(result.lines).toEqual([
      'dpxen: cannot reach http://127.0.0.1:9: ECONNREFUSED (check url and the network)',
    ])
  })

  it('bad configuration: every problem, exit 2, before touching the pool', async () => {
    const { config: _c, dir } = await setup({ mode: 'online' })
    const config = writeConfig(
      dir,
      { mode: 'sideways', url: 'x', username: 'root', password: 'pw', colour: 1 },
      'bad.json',
    )
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(2)
    expect(result.lines.length).toBe(3)
    for (const line of result.lines) expect(line).toMatch(new RegExp(`^dpxen: config ${config}: `))
  })

  it('follows HOST_IS_SLAVE from a pool member to the master', async () => {
    const { sim, dir, backupDir } = await setup({ mode: 'online' }, { hosts: 2 })
    const config = writeConfig(
      dir,
      {
        mode: 'online',
        vmName: ['vm2'],
        url: sim.memberUrl,
        username: 'root',
        password: SIM_PASSWORD,
        backupDir,
      },
      'member.json',
    )
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    expect(files(backupDir)).toContain('127.0.0.2_vm2_Snapshot.xva')
  })

  it('logs in again once on SESSION_INVALID', async () => {
    const { sim, backupDir, config } = await setup({ mode: 'online', vmName: ['vm2'] })
    sim.faults.add('session-invalid-once')
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    expect(files(backupDir)).toContain('127.0.0.1_vm2_Snapshot.xva')
    expect(sim.openSessions()).toBe(1)
  })

  it('retries VDI_IN_USE when destroying the snapshot, and leaves nothing behind', async () => {
    const { sim, xapi, config } = await setup({ mode: 'online', vmName: ['vm2'] })
    const vdis = (await xapi.call<string[]>('VDI.get_all')).length
    sim.faults.add('vdi-in-use-once')
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    expect(await snapshots(xapi)).toEqual([])
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdis)
  })

  it('a truncated export fails that VM: no partial file, no final file, snapshot destroyed', async () => {
    const { xapi, backupDir, config } = await setup(
      { mode: 'online', vmName: ['Debian'] },
      { faults: ['export-truncate:3MiB'] },
    )
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(5)
    expect(result.lines).toContain(
      'dpxen: Debian: FAILED: the export stopped after 3145728 bytes: VDI_IO_ERROR Device I/O errors',
    )
    expect(files(backupDir)).toEqual(['.dpxen-lock', '.dpxen-state.json'])
    expect(await snapshots(xapi)).toEqual([])
    expect(await powerStates(xapi)).toMatchObject({ Debian: 'Running' })
  })

  it('an export whose tail never arrives fails that VM although the task succeeded, with verifyExport off too', async () => {
    for (const verifyExport of [true, false]) {
      const { xapi, backupDir, config } = await setup(
        { mode: 'online', vmName: ['Debian'], verifyExport },
        { faults: ['export-lose-tail:3MiB'] },
      )
      const result = await run(runPreExec, [config])
      expect(result.code).toBe(5)
      expect(result.lines).toContain(
        'dpxen: Debian: FAILED: the exported XVA is invalid: the archive is cut off at byte 3145728 (truncated)',
      )
      expect(files(backupDir)).toEqual(['.dpxen-lock', '.dpxen-state.json'])
      expect(await snapshots(xapi)).toEqual([])
    }
  })

  it("a failing snapshot (chain too long) fails that VM with xapi's reason", async () => {
    const { config } = await setup(
      { mode: 'online', vmName: ['Debian', 'vm2'] },
      { faults: ['snapshot-fail'] },
    )
    const result = await run(runPreExec, [config])
    expect(result.lines).toContain(
      'dpxen: Debian: FAILED: VM.snapshot failed: SR_BACKEND_FAILURE_109 The snapshot chain is too long',
    )
  })

  it('offline: a VM that cannot be started again is named clearly and fails the session', async () => {
    const { sim, xapi, config } = await setup({ mode: 'offline', vmName: ['Debian'] })
    sim.faults.add('start-fail')
    const result = await run(runPreExec, [config])
    expect(result.text).toMatch(
      /^dpxen: Debian: FAILED: Debian was stopped for the backup and could not be started again: .*HOST_NOT_ENOUGH_FREE_MEMORY.* \(start it by hand\)$/m,
    )
    expect(result.code).toBe(5)
    sim.faults.clear()
    expect(await powerStates(xapi)).toMatchObject({ Debian: 'Halted' })
  })

  it('offline: no host can start it again (NO_HOSTS_AVAILABLE): each host and its reason in the line', async () => {
    const { sim, config } = await setup({ mode: 'offline', vmName: ['Debian'] })
    sim.faults.add('start-no-host')
    const result = await run(runPreExec, [config])
    expect(result.text).toMatch(
      /^dpxen: Debian: FAILED: Debian was stopped for the backup and could not be started again: .*NO_HOSTS_AVAILABLE.* \(xenserver-sim: not enough free memory \(the VM needs 2\.0 GiB, it has 512\.0 MiB\); xenserver-sim-2: .*\) \(start it by hand\)$/m,
    )
    expect(result.code).toBe(5)
  })

  it('offline: a guest slower than shutdownTimeout fails the VM, left running; forceShutdown forces it off and backs it up', async () => {
    const slow = await setup({
      mode: 'offline',
      vmName: ['Debian'],
      shutdownTimeout: 1,
      progressInterval: 0.2,
    })
    slow.sim.faults.add('shutdown-slow:30')
    const failed = await run(runPreExec, [slow.config])
    // A line every progressInterval while the VM shuts down, as in every long step.
    expect(failed.lines.filter((l) => l.startsWith('dpxen: Debian: shutting down')).length).toBeGreaterThan(1)
    expect(failed.lines).toContain(
      'dpxen: Debian: FAILED: Debian did not shut down within 1 s (is the guest responding? raise shutdownTimeout)',
    )
    expect(await powerStates(slow.xapi)).toMatchObject({ Debian: 'Running' })

    const forced = await setup({
      mode: 'offline',
      vmName: ['Debian'],
      shutdownTimeout: 1,
      forceShutdown: true,
    })
    forced.sim.faults.add('shutdown-slow:30')
    const result = await run(runPreExec, [forced.config])
    expect(result.code, result.text).toBe(0)
    expect(result.lines).toContain(
      'dpxen: Debian: did not shut down within 1 s; forcing it off (forceShutdown)',
    )
    expect(result.lines).toContain('dpxen: Debian: running again')
    expect(files(forced.backupDir)).toContain('127.0.0.1_Debian.xva')
    expect(await powerStates(forced.xapi)).toMatchObject({ Debian: 'Running' })
  })

  it('offline: a VM that refuses to shut down is left running and reported', async () => {
    const { sim, xapi, config } = await setup({ mode: 'offline', vmName: ['Debian'] })
    const vm = await xapi.vmByName('Debian')
    await xapi.call('VM.add_to_blocked_operations', vm, 'clean_shutdown', 'guest does not answer')
    const result = await run(runPreExec, [config])
    expect(result.text).toMatch(/^dpxen: Debian: FAILED: Debian could not be shut down: OPERATION_BLOCKED/m)
    expect(await powerStates(xapi)).toMatchObject({ Debian: 'Running' })
    void sim
  })

  it('writes a debug file with every call, and neither the password nor the session id', async () => {
    const { dir, config: _c, sim } = await setup({ mode: 'online' })
    const debugDir = join(dir, 'debug')
    const config = writeConfig(
      dir,
      {
        mode: 'online',
        vmName: ['vm2'],
        url: sim.url,
        username: 'root',
        password: SIM_PASSWORD,
        backupDir: join(dir, 'b'),
        debug: true,
        debugDir,
      },
      'debug.json',
    )
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    const [file] = readdirSync(debugDir)
    const text = readFileSync(join(debugDir, file!), 'utf8')
    expect(text).toMatch(/call session\.login_with_password\(\["root","\*\*\*","2\.21","dpxen"\]\) ok/)
    expect(text).toMatch(/call VM\.get_all_records\(\["\*\*\*"\]\) ok in [\d.]+ ms/)
    expect(text).not.toContain(SIM_PASSWORD)
    const sessions = [...text.matchAll(/session_id=([^&\s]+)/g)].map((m) => m[1])
    for (const s of sessions) expect(s).toBe('***')
  })

  it('reads the original DPxen_config.py end to end', async () => {
    const { sim, dir } = await setup({ mode: 'online' })
    const backupDir = join(dir, 'legacy')
    const config = writeConfig(
      dir,
      {
        text: `# from the white paper\nMode = "online"\nurl = ${sim.url}\nusername = "root"\npassword = "xenroot"\nvmName = ["vm2"]\ndebug = False\nsr = ""\nbackupDir = "${backupDir}"\n`,
      },
      'DPxen_config.py',
    )
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    expect(files(backupDir)).toContain('127.0.0.1_vm2_Snapshot.xva')
  })

  it('the real executables: pre-exec and post-exec as Data Protector runs them', async () => {
    const { xapi, backupDir, config } = await setup({ mode: 'online', vmName: ['vm2', 'legacy-win'] })
    const env = {
      DATALIST: 'xen-backup',
      MODE: 'full',
      OWNER: 'root.sys@dp',
      PREVIEW: '0',
      RESTARTED: '0',
      SESSIONID: '2026/11/22-1',
      SESSIONKEY: 'k',
    }
    const pre = await execa(PRE_EXEC, [config], { env, reject: false })
    expect(pre.exitCode).toBe(0)
    expect(pre.stdout).toMatch(/^dpxen: vm2: done/m)
    expect(pre.stderr).toBe('')
    expect(files(backupDir)).toContain('127.0.0.1_vm2_Snapshot.xva')
    const post = await execa(POST_EXEC, [config], { env: { ...env, SMEXIT: '0' }, reject: false })
    expect(post.exitCode).toBe(5)
    expect(post.stdout).toContain(
      'dpxen: FAILED in the backup: legacy-win: At least one sr used by legacy-win does not support snapshot',
    )
    expect(files(backupDir)).toEqual([])
    expect(await snapshots(xapi)).toEqual([])
  })

  it.each([
    ['online', ['Debian'], 'Running'],
    ['offline', ['Debian'], 'Running'],
  ])(
    'SIGTERM mid-export (%s): stops within seconds, exit 130, nothing left, VM as before',
    async (mode, vmName, state) => {
      const { xapi, backupDir, config } = await setup({ mode, vmName }, { faults: ['export-stall:30'] })
      const { result, stopMs } = await terminateWhen(PRE_EXEC, [config], /backup started/, 400)
      expect(stopMs).toBeLessThan(10_000)
      expect(result.exitCode).toBe(130)
      expect(result.stdout).toMatch(/^dpxen: interrupted: stopped and cleaned up$/m)
      expect(files(backupDir).filter((f) => f.endsWith('.partial') || f.endsWith('.xva'))).toEqual([])
      expect(await snapshots(xapi)).toEqual([])
      expect((await powerStates(xapi)).Debian).toBe(state)
      void hostname
    },
  )
})
