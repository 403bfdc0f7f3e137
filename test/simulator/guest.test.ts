// xapi-sim's guests, as xapi shows a guest to a client (xapi_guest_agent.ml, xapi_xenops.ml,
// xapi_vm.ml): VM.start drops the stale guest metrics for an empty record, which the agent's
// report fills some seconds later; a halt keeps them, a snapshot copies them; a guest's
// health-check script answers its xenstore key into VM.xenstore_data; a guest boots only from a
// disk with data; and the faults guest-no-boot and start-no-host.
import { describe, expect, it } from 'vitest'
import { GUEST_KEY, HEALTH_KEY } from '../../simulator/xapi/model/guest.js'
import type { TestClient } from '../helpers/rpc.js'
import { demoSim } from '../helpers/sim.js'

const NULL = 'OpaqueRef:NULL'

/** Gives the VM's guest this behaviour (as a seed would). */
async function guest(xapi: TestClient, vm: string, behaviour: Record<string, unknown>): Promise<void> {
  await xapi.call('VM.remove_from_other_config', vm, GUEST_KEY)
  await xapi.call('VM.add_to_other_config', vm, GUEST_KEY, JSON.stringify(behaviour))
}

/** Polls `read` every 50 ms until it is truthy or `ms` pass; its last value. */
async function until<T>(read: () => Promise<T>, ms: number): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const value = await read()
    if (value || Date.now() > end) return value
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('xapi-sim: guests', () => {
  it('VM.start replaces the stale guest metrics with an empty record, which the agent fills some seconds later; a halt keeps them, a snapshot and an export carry a copy', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    await guest(xapi, vm, { bootSeconds: 0.4, agent: '7.1.2' })
    expect(await xapi.call('VM.get_guest_metrics', vm)).toBe(NULL)
    const started = Date.now()
    await xapi.call('VM.start', vm, false, false)
    const first = await xapi.call<string>('VM.get_guest_metrics', vm)
    expect(await xapi.call('VM_guest_metrics.get_PV_drivers_version', first)).toEqual({})
    const version = async (): Promise<Record<string, string> | undefined> => {
      const v = await xapi.call<Record<string, string>>(
        'VM_guest_metrics.get_PV_drivers_version',
        await xapi.call<string>('VM.get_guest_metrics', vm),
      )
      return v.major ? v : undefined
    }
    expect(await until(version, 5000)).toEqual({ major: '7', minor: '1', micro: '2', build: '0' })
    expect(Date.now() - started).toBeGreaterThanOrEqual(350)
    // Halted, it keeps what its guest last said; its snapshot gets a copy of that.
    await xapi.call('VM.hard_shutdown', vm)
    expect(await xapi.call('VM.get_guest_metrics', vm)).toBe(first)
    const snap = await xapi.call<string>('VM.snapshot', vm, 'snap')
    const copied = await xapi.call<string>('VM.get_guest_metrics', snap)
    expect(copied).not.toBe(first)
    expect(await xapi.call('VM_guest_metrics.get_PV_drivers_version', copied)).toMatchObject({ major: '7' })
    // The next start drops the stale record before the guest says anything.
    await guest(xapi, vm, { bootSeconds: 30 })
    await xapi.call('VM.start', vm, false, false)
    const fresh = await xapi.call<string>('VM.get_guest_metrics', vm)
    expect(fresh).not.toBe(first)
    expect(await xapi.failure('VM_guest_metrics.get_record', first)).toEqual([
      'HANDLE_INVALID',
      'VM_guest_metrics',
      first,
    ])
    expect(await xapi.call('VM_guest_metrics.get_PV_drivers_version', fresh)).toEqual({})
  })

  it("a guest's health-check script answers its xenstore key: planned, running, then its verdict", async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    await guest(xapi, vm, { bootSeconds: 0.2, agent: '8.4.0', script: 'failure' })
    await xapi.call('VM.add_to_xenstore_data', vm, HEALTH_KEY, 'planned')
    await xapi.call('VM.start', vm, false, false)
    const answer = await until(async () => {
      const data = await xapi.call<Record<string, string>>('VM.get_xenstore_data', vm)
      return ['success', 'failure'].includes(data[HEALTH_KEY]!) ? data : undefined
    }, 5000)
    expect(answer?.[HEALTH_KEY]).toBe('failure')
    expect(answer?.['vm-data/dpxen-health-check-error']).toMatch(/failed/)
  })

  it('no guest without data on its boot disk, none with guest-no-boot, none without an agent', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    /** The agent's version some time after a start ('' when none reported). */
    const check = async (): Promise<string> => {
      await xapi.call('VM.start', vm, false, false)
      await new Promise((r) => setTimeout(r, 600))
      const metrics = await xapi.call<string>('VM.get_guest_metrics', vm)
      const version = await xapi.call<Record<string, string>>(
        'VM_guest_metrics.get_PV_drivers_version',
        metrics,
      )
      await xapi.call('VM.hard_shutdown', vm)
      return version.major ?? ''
    }
    await guest(xapi, vm, { bootSeconds: 0.1, agent: false })
    expect(await check()).toBe('')
    await guest(xapi, vm, { bootSeconds: 0.1 })
    sim.faults.add('guest-no-boot')
    expect(await check()).toBe('')
    sim.faults.clear()
    expect(await check()).toBe('8')
    // Its disk overwritten with zeros: nothing to boot.
    const vdi = await xapi.call<string>('VBD.get_VDI', (await xapi.call<string[]>('VM.get_VBDs', vm))[0]!)
    const size = Number(await xapi.call('VDI.get_virtual_size', vdi))
    const uuid = await xapi.call<string>('VDI.get_uuid', vdi)
    await sim.context.disks.writable(uuid)
    const { promises: fsp } = await import('node:fs')
    await fsp.writeFile(sim.context.disks.path(uuid), Buffer.alloc(size))
    expect(await check()).toBe('')
  })

  it('start-no-host: VM.start fails NO_HOSTS_AVAILABLE and every host says it lacks the memory', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    sim.faults.add('start-no-host')
    expect(await xapi.failure('VM.start', vm, false, false)).toEqual(['NO_HOSTS_AVAILABLE'])
    for (const host of await xapi.call<string[]>('host.get_all'))
      expect((await xapi.failure('VM.assert_can_boot_here', vm, host))[0]).toBe('HOST_NOT_ENOUGH_FREE_MEMORY')
  })

  it('VM.set_ha_restart_priority takes restart, best-effort or nothing, and refuses anything else as xapi does', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    for (const value of ['restart', 'best-effort', '']) {
      await xapi.call('VM.set_ha_restart_priority', vm, value)
      expect(await xapi.call('VM.get_ha_restart_priority', vm)).toBe(value)
    }
    expect(await xapi.failure('VM.set_ha_restart_priority', vm, 'always')).toEqual([
      'INVALID_VALUE',
      'ha_restart_priority',
      'always',
    ])
  })
})
