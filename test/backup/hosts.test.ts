// Hosts that cannot serve a VM. A host disabled (maintenance mode): a running VM on it is never
// stopped, by an offline backup or a restore, since it could not start again. A VM whose storage no host can reach (its host is down, the VM on that host's local SR):
// xapi's /export handler fails the caller's task with NO_HOSTS_AVAILABLE and closes without a
// byte (export.ml, when choose_host finds no host that sees the VM's SRs). The line must give
// that reason, read from the task, not "closed the connection without an answer".
import { describe, expect, it } from 'vitest'
import { runPostExec } from '../../src/backup/post.js'
import { runPreExec } from '../../src/backup/run.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import { run } from '../helpers/hooks.js'
import { diskHashes, records } from '../helpers/pool.js'
import { world } from '../helpers/world.js'

describe('no host can reach the VM storage', () => {
  for (const mode of ['online', 'offline'] as const) {
    it(`${mode}: the line gives xapi's reason from the task, the pool is left as it was`, async () => {
      const w = await world({ mode, vmName: ['Debian'] })
      w.sim.faults.add('export-no-host')
      const pre = await run(runPreExec, [w.config])
      const line = pre.lines.find((l) => l.startsWith('dpxen: Debian: FAILED: '))
      expect(line, pre.text).toMatch(
        /no host of the pool can reach the storage of Debian \(NO_HOSTS_AVAILABLE\): the host holding its local SR may be down or disabled/,
      )
      expect(pre.text).not.toMatch(/without an answer/)
      expect((await run(runPostExec, [w.config])).code).toBe(5)
      const vms = Object.values(await records(w.xapi, 'VM'))
      expect(vms.filter((v) => v.is_a_snapshot)).toEqual([])
      expect(vms.find((v) => v.name_label === 'Debian')?.power_state).toBe('Running')
      expect(w.sim.context.db.all('task').filter(([, t]) => t.status === 'pending')).toEqual([])
    })
  }
})

describe('a VM whose host is disabled (maintenance mode)', () => {
  it('an offline backup leaves it running and says why; the others go on', async () => {
    const w = await world({ mode: 'offline', vmName: ['Debian', 'vm2'] })
    const debian = await w.xapi.vmByName('Debian')
    // Debian runs on the third host, which holds its first disk: no other host can run it.
    const host = await w.xapi.call<string>('VM.get_resident_on', debian)
    expect(await w.xapi.call('host.get_name_label', host)).toBe('xenserver-sim-3')
    await w.xapi.call('host.disable', host)
    const pre = await run(runPreExec, [w.config])
    expect(pre.lines).toContain(
      'dpxen: Debian: FAILED: Debian was left running, untouched: once stopped it could not start again (its host xenserver-sim-3 is disabled (maintenance mode), and no other host can run it); enable the host, then run this again',
    )
    expect(pre.text).not.toMatch(/Debian: shut down/)
    // vm2 is halted: exported as it is.
    expect(pre.text).toMatch(/vm2: done/)
    expect(await w.xapi.call('VM.get_power_state', debian)).toBe('Running')
    await w.xapi.call('host.enable', host)
    const again = await run(runPreExec, [w.config])
    expect(again.text).toMatch(/Debian: shut down in .*\n.*Debian: running again/)
  })

  it('xapi-sim as xapi: a halted VM cannot start on a disabled host (NO_HOSTS_AVAILABLE), a running one keeps its host in get_possible_hosts', async () => {
    const w = await world({ mode: 'offline', vmName: ['Debian'] })
    const hosts = await w.xapi.call<string[]>('host.get_all')
    const debian = await w.xapi.vmByName('Debian')
    const host = await w.xapi.call<string>('VM.get_resident_on', debian)
    await w.xapi.call('host.disable', host)
    expect(await w.xapi.call('VM.get_possible_hosts', debian)).toEqual([host])
    // vm2's disk is on shared storage: any enabled host.
    const vm2 = await w.xapi.vmByName('vm2')
    expect(await w.xapi.call('VM.get_possible_hosts', vm2)).toEqual(hosts.filter((h) => h !== host))
    expect(await w.xapi.failure('VM.assert_can_boot_here', vm2, host)).toEqual(['HOST_DISABLED', host])
    for (const other of hosts) await w.xapi.call('host.disable', other)
    expect(await w.xapi.call('VM.get_possible_hosts', vm2)).toEqual([])
    expect(await w.xapi.failure('VM.start', vm2, false, false)).toEqual(['NO_HOSTS_AVAILABLE'])
  })

  it('a restore that would stop it leaves it running, untouched', async () => {
    const w = await world({ mode: 'online', vmName: ['Debian'] })
    expect((await run(runPreExec, [w.config])).code).toBe(0)
    const debian = await w.xapi.vmByName('Debian')
    const before = await diskHashes(w.sim.url, w.xapi, debian)
    const vdis = (await w.xapi.call<string[]>('VDI.get_all')).length
    await w.xapi.call('host.disable', await w.xapi.call<string>('VM.get_resident_on', debian))
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code).toBe(5)
    expect(restore.text).toMatch(/Debian was left running, untouched: once stopped it could not start again/)
    expect(await w.xapi.call('VM.get_power_state', debian)).toBe('Running')
    expect(await diskHashes(w.sim.url, w.xapi, debian)).toEqual(before)
    expect((await w.xapi.call<string[]>('VDI.get_all')).length).toBe(vdis)
  })
})
