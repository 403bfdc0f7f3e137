// Health checks on the pool of three hosts: the newest backup of a VM restored as a copy, its
// network cards removed, started, watched until its guest agent (or its health-check script)
// answers, then destroyed with its disks, whatever happened; one line a VM, a record beside the
// folder for `dpxen list`, exit 8 when a backup does not prove that it boots.
import { execFileSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { runPreExec } from '../../src/backup/run.js'
import { runDpxen } from '../../src/cli/dpxen.js'
import { OC_HEALTH_CHECK } from '../../src/pool/tags.js'
import { readHealthChecks } from '../../src/staging/health-record.js'
import { GUEST_KEY } from '../../simulator/xapi/model/guest.js'
import type { XapiSimOptions } from '../../simulator/xapi/server.js'
import { runRestoreSession } from '../../simulator/dp/restore.js'
import { runBackupSession } from '../../simulator/dp/session.js'
import { Store } from '../../simulator/dp/store.js'
import { backupSpec } from '../helpers/dp.js'
import { run, terminateWhen } from '../helpers/hooks.js'
import { records, serveNbd } from '../helpers/pool.js'
import type { TestClient } from '../helpers/rpc.js'
import { world } from '../helpers/world.js'

const DIST = fileURLToPath(new URL('../../dist/', import.meta.url))
const DPXEN = join(DIST, 'hooks', 'dpxen.js')

/** What a health check must leave as it found it: the VMs, the disks, the network cards. */
async function poolShape(xapi: TestClient) {
  const vms = Object.values(await records(xapi, 'VM'))
  return {
    vms: vms.map((v) => String(v.uuid)).sort(),
    vdis: (await xapi.call<string[]>('VDI.get_all')).length,
    vifs: (await xapi.call<string[]>('VIF.get_all')).length,
    copies: vms.filter((v) => (v.other_config as Record<string, string>)[OC_HEALTH_CHECK]).length,
  }
}

/** Gives the VM's guest this behaviour (as the simulator's seed would). */
async function guest(xapi: TestClient, vm: string, behaviour: Record<string, unknown>): Promise<void> {
  await xapi.call('VM.remove_from_other_config', vm, GUEST_KEY)
  await xapi.call('VM.add_to_other_config', vm, GUEST_KEY, JSON.stringify(behaviour))
}

async function healthWorld(values: Record<string, unknown>, simOptions: XapiSimOptions = {}) {
  const w = await world(
    { keepRestoredFiles: true, healthCheckPerGiB: 0, progressInterval: 0.5, ...values },
    simOptions,
  )
  const check = (...args: string[]) => run(runDpxen, ['health-check', ...args, w.config])
  /** A backup into the folder (the pre-exec); the pool's shape after it, which a check must keep. */
  const backUp = async () => {
    expect((await run(runPreExec, [w.config])).code).toBe(0)
    return poolShape(w.xapi)
  }
  return { ...w, check, backUp }
}

describe('health checks', () => {
  it.each([
    { mode: 'offline', vm: 'vm2', kind: /offline backup \S+_vm2\.xva of \d{4}-\d\d-\d\d \d\d:\d\d UTC/ },
    { mode: 'online', vm: 'Debian', kind: /online backup \S+_Debian_Snapshot\.xva of / },
  ])(
    'an $mode XVA: the copy boots without network, its agent answers; passed, the copy gone, the record kept',
    async ({ mode, vm, kind }) => {
      const w = await healthWorld({ mode, vmName: [vm] })
      const ref = await w.xapi.vmByName(vm)
      await guest(w.xapi, ref, { bootSeconds: 1, agent: '7.1.2' })
      await w.xapi.call('VM.set_ha_restart_priority', ref, 'restart')
      const before = await w.backUp()
      // Watch the copy as it lives: no network card, no HA protection while it runs.
      let vifsWhileRunning = -1
      let haWhileRunning = '?'
      const checking = w.check()
      for (let i = 0; i < 200 && vifsWhileRunning < 0; i++) {
        const copy = Object.entries(await records(w.xapi, 'VM')).find(
          ([, r]) =>
            (r.other_config as Record<string, string>)[OC_HEALTH_CHECK] && r.power_state === 'Running',
        )
        if (copy) {
          vifsWhileRunning = (copy[1].VIFs as string[]).length
          haWhileRunning = String(copy[1].ha_restart_priority)
        }
        await new Promise((r) => setTimeout(r, 50))
      }
      const result = await checking
      expect(result.code, result.text).toBe(0)
      expect(vifsWhileRunning).toBe(0)
      expect(haWhileRunning).toBe('')
      expect(result.text).toMatch(
        new RegExp(
          `^dpxen: ${vm}: health check passed: booted in \\d+ s, guest agent 7\\.1 answered \\(`,
          'm',
        ),
      )
      // The copy of a running VM arrives with the guest metrics its backup carried: only the
      // guest's own report after this start counts (the guest takes 1 s).
      expect(Number(/booted in (\d+) s/.exec(result.text)?.[1])).toBeGreaterThanOrEqual(1)
      expect(result.text).toMatch(kind)
      expect(result.text).toMatch(/^dpxen: health checks: 1 passed, 0 failed$/m)
      expect(await poolShape(w.xapi)).toEqual(before)
      const [record] = await readHealthChecks(w.backupDir)
      expect(record).toMatchObject({ vmName: vm, passed: true })
      // dpxen list shows when the backup was last checked, and how it went.
      const list = await run(runDpxen, ['list', w.backupDir])
      expect(list.text).toMatch(/health check passed on \d{4}-\d\d-\d\d \d\d:\d\d UTC/)
    },
  )

  it("an incremental chain's newest point (CBT, over TLS NBD): made as a copy from its runs, passed", async () => {
    const w = await healthWorld({ mode: 'online', vmName: ['Debian'], incremental: true, cbt: true })
    await serveNbd(w.xapi)
    const debian = await w.xapi.vmByName('Debian')
    await guest(w.xapi, debian, { bootSeconds: 1, agent: '8.4.0' })
    const before = await w.backUp()
    const result = await w.check()
    expect(result.code, result.text).toBe(0)
    expect(result.text).toMatch(
      /^dpxen: Debian: health check passed: booted in \d+ s, guest agent 8\.4 answered \(incremental run \S+ of .* \(1 run\(s\) of its chain\)\)$/m,
    )
    expect(await poolShape(w.xapi)).toEqual(before)
  })

  it("a guest with dpxen's health-check script: its verdict decides; a failure says why, exits 8, and leaves nothing", async () => {
    const w = await healthWorld({ mode: 'offline', vmName: ['vm2'] })
    const vm2 = await w.xapi.vmByName('vm2')
    await w.xapi.call('VM.add_to_xenstore_data', vm2, 'vm-data/dpxen-health-check', 'idle')
    await guest(w.xapi, vm2, { bootSeconds: 0.5, agent: '8.4.0', script: 'success' })
    await w.backUp()
    const passed = await w.check()
    expect(passed.text).toMatch(
      /vm2: health check passed: booted, its health-check script answered success in \d+ s/,
    )
    await guest(w.xapi, vm2, { bootSeconds: 0.5, agent: '8.4.0', script: 'failure' })
    const before = await w.backUp()
    const failed = await w.check()
    expect(failed.code).toBe(8)
    expect(failed.text).toMatch(
      /^dpxen: vm2: health check FAILED: its health-check script answered failure after \d+ s: the application check failed \(offline backup /m,
    )
    expect(await poolShape(w.xapi)).toEqual(before)
  })

  it('a guest that never answers: FAILED after healthCheckTimeout with progress lines meanwhile, exit 8, the copy gone', async () => {
    // vm2 ran once: its backup carries the guest metrics its agent last wrote, which prove nothing.
    const w = await healthWorld({ mode: 'offline', vmName: ['vm2'], healthCheckTimeout: 10 })
    const vm2 = await w.xapi.vmByName('vm2')
    await guest(w.xapi, vm2, { bootSeconds: 0.1 })
    await w.xapi.call('VM.start', vm2, false, false)
    await new Promise((r) => setTimeout(r, 500))
    await w.xapi.call('VM.hard_shutdown', vm2)
    expect(
      await w.xapi.call(
        'VM_guest_metrics.get_PV_drivers_version',
        await w.xapi.call('VM.get_guest_metrics', vm2),
      ),
    ).toMatchObject({ major: '8' })
    const before = await w.backUp()
    w.sim.faults.add('guest-no-boot')
    const result = await w.check()
    expect(result.code).toBe(8)
    expect(result.text).toMatch(/dpxen: vm2: waiting for its guest agent \(\d+ s of 10 s\)/)
    expect(result.text).toMatch(
      /^dpxen: vm2: health check FAILED: the guest never answered in 10 s \(no guest agent report: .*\) \(offline backup /m,
    )
    expect(result.text).toMatch(/^dpxen: health checks: 0 passed, 1 failed$/m)
    expect(await poolShape(w.xapi)).toEqual(before)
    expect((await readHealthChecks(w.backupDir))[0]).toMatchObject({ vmName: 'vm2', passed: false })
  })

  it('no host can start the copy: NO_HOSTS_AVAILABLE with each host and why, exit 8, the copy gone', async () => {
    const w = await healthWorld({ mode: 'offline', vmName: ['vm2'] })
    const before = await w.backUp()
    w.sim.faults.add('start-no-host')
    const result = await w.check()
    expect(result.code).toBe(8)
    expect(result.text).toMatch(
      /vm2: health check FAILED: NO_HOSTS_AVAILABLE: no host of the pool could start the copy \(xenserver-sim: not enough free memory \(the copy needs 2\.0 GiB, it has 512\.0 MiB\); xenserver-sim-2: not enough free memory/,
    )
    expect(await poolShape(w.xapi)).toEqual(before)
  })

  it('an SR too small for the copy: FAILED in words before anything is made', async () => {
    const w = await healthWorld(
      { mode: 'offline', vmName: ['vm2'], healthCheckSr: 'Tiny' },
      { seed: { srs: [{ name: 'Tiny', type: 'ext', size: '1MiB' }], vms: [] } },
    )
    const before = await w.backUp()
    const result = await w.check()
    expect(result.code).toBe(8)
    expect(result.text).toMatch(/vm2: health check FAILED: SR "Tiny" has .* free, the restore needs 6\.0 MiB/)
    expect(await poolShape(w.xapi)).toEqual(before)
  })

  it('healthCheckSr naming no SR: FAILED, naming the key and the SRs there are; nothing made', async () => {
    const w = await healthWorld({ mode: 'offline', vmName: ['vm2'], healthCheckSr: 'Nope' })
    const before = await w.backUp()
    const result = await w.check()
    expect(result.code).toBe(8)
    expect(result.text).toMatch(
      /^dpxen: vm2: health check FAILED: healthCheckSr: no SR is named "Nope" \(the pool has .*"Shared Storage".*\); fix healthCheckSr in \S+dpxen\.json \(/m,
    )
    expect(await poolShape(w.xapi)).toEqual(before)
  })

  it("storage without room for the copy, though its records show some (sr-full): FAILED with xapi's words, nothing left", async () => {
    const w = await healthWorld({ mode: 'offline', vmName: ['vm2'] })
    const before = await w.backUp()
    w.sim.faults.add('sr-full')
    const result = await w.check()
    expect(result.code).toBe(8)
    expect(result.text).toMatch(/^dpxen: vm2: health check FAILED: .*SR_FULL/m)
    w.sim.faults.clear()
    expect(await poolShape(w.xapi)).toEqual(before)
  })

  it('a damaged backup file: FAILED before anything is made on the pool', async () => {
    const w = await healthWorld({ mode: 'offline', vmName: ['vm2'] })
    await w.backUp()
    const xva = readdirSync(w.backupDir).find((f) => f.endsWith('.xva'))!
    const bytes = readFileSync(join(w.backupDir, xva))
    bytes[bytes.length >> 1]! ^= 0xff
    writeFileSync(join(w.backupDir, xva), bytes)
    const before = await poolShape(w.xapi)
    const result = await w.check()
    expect(result.code).toBe(8)
    expect(result.text).toMatch(
      new RegExp(`^dpxen: ${xva.replace(/\./g, '\\.')}: health check FAILED: `, 'm'),
    )
    expect(result.text).not.toMatch(/health check started/)
    expect(await poolShape(w.xapi)).toEqual(before)
  })

  it('hostile files beside the backup (a FIFO and a link named .xva, a stray file): each refused in a line, never waited on; the real backup still checked', async () => {
    const w = await healthWorld({ mode: 'offline', vmName: ['vm2'] })
    const before = await w.backUp()
    execFileSync('mkfifo', [join(w.backupDir, 'evil.xva')])
    symlinkSync('/etc/passwd', join(w.backupDir, 'link.xva'))
    writeFileSync(join(w.backupDir, 'notes.txt'), 'not a backup')
    const result = await w.check()
    expect(result.code).toBe(8)
    expect(result.text).toMatch(/^dpxen: evil\.xva: health check FAILED: /m)
    expect(result.text).toMatch(/^dpxen: link\.xva: health check FAILED: /m)
    expect(result.text).toMatch(/^dpxen: vm2: health check passed: /m)
    expect(result.text).toMatch(/^dpxen: health checks: 1 passed, 2 failed$/m)
    expect(await poolShape(w.xapi)).toEqual(before)
  })

  it('a VM tagged dpxen:no-health-check is skipped, said; --preview lists what would be checked and where', async () => {
    const w = await healthWorld({ mode: 'allOffline' })
    await w.backUp()
    await w.xapi.call('VM.add_tags', await w.xapi.vmByName('legacy-win'), 'dpxen:no-health-check')
    const before = await poolShape(w.xapi)
    const preview = await w.check('--preview')
    expect(preview.code, preview.text).toBe(0)
    expect(preview.text).toMatch(
      /^dpxen: preview: would health-check vm2 from offline backup \S+ of .*: a copy on SR "Shared Storage", started without network, its guest given 300 s$/m,
    )
    expect(preview.text).toMatch(
      /^dpxen: legacy-win: health check skipped: the VM is tagged dpxen:no-health-check$/m,
    )
    expect(await poolShape(w.xapi)).toEqual(before)
  })

  it('a Data Protector restore session with the health-check post-exec: Completed when the backup boots, Completed with errors when it cannot', async () => {
    const w = await healthWorld({ mode: 'online', vmName: ['Debian'], keepRestoredFiles: false })
    mkdirSync(w.backupDir)
    const debian = await w.xapi.vmByName('Debian')
    await guest(w.xapi, debian, { bootSeconds: 0.5, agent: '7.1.0' })
    const store = new Store(join(w.dir, 'store'))
    const hook = (name: string, config: string): string =>
      `"${process.execPath}" "${join(DIST, 'hooks', name)}" "${config}"`
    const backup = await runBackupSession(
      backupSpec(w.backupDir, {
        preExec: hook('pre-exec.js', w.config),
        postExec: hook('post-exec.js', w.config),
      }),
      { store },
    )
    expect(backup.status).toBe('Completed')
    const checkConfig = w.configFor({ restore: { healthCheck: true } })
    const restoreTest = () =>
      runRestoreSession({
        store,
        session: backup.id,
        trees: [],
        conflict: 'overwrite',
        postExec: hook('restore-post-exec.js', checkConfig),
      })
    const before = await poolShape(w.xapi)
    const passed = await restoreTest()
    const text = passed.messages.map((m) => m.text).join('\n')
    expect(passed.status, text).toBe('Completed')
    expect(text).toMatch(
      new RegExp(
        `dpxen: Debian: health check passed: booted in \\d+ s, guest agent 7\\.1 answered \\(online backup \\S+ of .*, Data Protector session ${backup.id.replace(/\//g, '\\/')}\\)`,
      ),
    )
    // The files Data Protector put back are gone again; the pool is as it was.
    expect(readdirSync(w.backupDir).filter((f) => !f.startsWith('.'))).toEqual([])
    expect(await poolShape(w.xapi)).toEqual(before)
    w.sim.faults.add('start-no-host')
    const failed = await restoreTest()
    expect(failed.status).toBe('Completed with errors')
    expect(failed.messages.map((m) => m.text).join('\n')).toMatch(
      /Debian: health check FAILED: NO_HOSTS_AVAILABLE/,
    )
    expect(await poolShape(w.xapi)).toEqual(before)
  })

  it('SIGTERM while it waits for the guest: exit 130 within seconds, the copy and its disks gone', async () => {
    const w = await healthWorld({ mode: 'offline', vmName: ['vm2'] })
    const before = await w.backUp()
    w.sim.faults.add('guest-no-boot')
    const { result, stopMs } = await terminateWhen(
      DPXEN,
      ['health-check', w.config],
      /waiting for its guest agent/,
      100,
    )
    expect(result.exitCode, result.stdout).toBe(130)
    expect(stopMs).toBeLessThan(10_000)
    expect(result.stdout).toMatch(/^dpxen: interrupted: stopped and cleaned up$/m)
    expect(await poolShape(w.xapi)).toEqual(before)
  })
})
