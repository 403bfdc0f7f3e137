// xapi-sim's guests, as xapi shows a guest to a client (xapi_guest_agent.ml, xapi_xenops.ml,
// xapi_vm_lifecycle.ml): the guest agent's report becomes a VM_guest_metrics record some
// seconds after VM.start, and goes when the VM halts; a guest's health-check script answers its
// xenstore key into VM.xenstore_data; a guest boots only from a disk with data; and the faults
// guest-no-boot and start-no-host.
import { describe, expect, it } from 'vitest'
import { GUEST_KEY, HEALTH_KEY } from '../../simulator/xapi/model/guest.js'
import type { TestClient } from '../helpers/rpc.js'
import { demoSim } from '../helpers/sim.js'

const NULL = 'OpaqueRef:NULL'
type Rec = Record<string, unknown>

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
  it('the agent reports some seconds after VM.start (guest metrics with its version); a halt removes them', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    await guest(xapi, vm, { bootSeconds: 0.4, agent: '7.1.2' })
    expect(await xapi.call('VM.get_guest_metrics', vm)).toBe(NULL)
    const started = Date.now()
    await xapi.call('VM.start', vm, false, false)
    expect(await xapi.call('VM.get_guest_metrics', vm)).toBe(NULL)
    const metrics = await until(async () => {
      const ref = await xapi.call<string>('VM.get_guest_metrics', vm)
      return ref === NULL ? undefined : ref
    }, 5000)
    expect(Date.now() - started).toBeGreaterThanOrEqual(350)
    const rec = await xapi.call<Rec>('VM_guest_metrics.get_record', metrics!)
    expect(rec.PV_drivers_version).toEqual({ major: '7', minor: '1', micro: '2', build: '0' })
    expect(rec.PV_drivers_detected).toBe(true)
    await xapi.call('VM.hard_shutdown', vm)
    expect(await xapi.call('VM.get_guest_metrics', vm)).toBe(NULL)
    expect(await xapi.failure('VM_guest_metrics.get_record', metrics!)).toEqual([
      'HANDLE_INVALID',
      'VM_guest_metrics',
      metrics,
    ])
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
    const check = async (): Promise<string> => {
      await xapi.call('VM.start', vm, false, false)
      await new Promise((r) => setTimeout(r, 600))
      const metrics = await xapi.call<string>('VM.get_guest_metrics', vm)
      await xapi.call('VM.hard_shutdown', vm)
      return metrics
    }
    await guest(xapi, vm, { bootSeconds: 0.1, agent: false })
    expect(await check()).toBe(NULL)
    await guest(xapi, vm, { bootSeconds: 0.1 })
    sim.faults.add('guest-no-boot')
    expect(await check()).toBe(NULL)
    sim.faults.clear()
    expect(await check()).not.toBe(NULL)
    // Its disk overwritten with zeros: nothing to boot.
    const vdi = await xapi.call<string>('VBD.get_VDI', (await xapi.call<string[]>('VM.get_VBDs', vm))[0]!)
    const size = Number(await xapi.call('VDI.get_virtual_size', vdi))
    const uuid = await xapi.call<string>('VDI.get_uuid', vdi)
    await sim.context.disks.writable(uuid)
    const { promises: fsp } = await import('node:fs')
    await fsp.writeFile(sim.context.disks.path(uuid), Buffer.alloc(size))
    expect(await check()).toBe(NULL)
  })

  it('start-no-host: VM.start fails NO_HOSTS_AVAILABLE and every host says it lacks the memory', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    sim.faults.add('start-no-host')
    expect(await xapi.failure('VM.start', vm, false, false)).toEqual(['NO_HOSTS_AVAILABLE'])
    for (const host of await xapi.call<string[]>('host.get_all'))
      expect((await xapi.failure('VM.assert_can_boot_here', vm, host))[0]).toBe('HOST_NOT_ENOUGH_FREE_MEMORY')
  })
})
