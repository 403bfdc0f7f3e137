// Object model and lifecycle rules: snapshots, power states, what destroy leaves, persistence.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { startXapiSim } from '../../simulator/xapi/server.js'
import { TestClient } from '../helpers/rpc.js'
import { demoSim, singleHost } from '../helpers/sim.js'

// One host's handlers and model, spoken to directly.
singleHost()

type Rec = Record<string, unknown>

describe('object model', () => {
  it('has the demo pool: SRs, VMs, templates, the control domain, a default SR', async () => {
    const { xapi } = await demoSim()
    const srs = Object.values(await xapi.call<Record<string, Rec>>('SR.get_all_records'))
    expect(srs.map((sr) => [sr.name_label, sr.type, sr.content_type])).toEqual([
      ['Local storage', 'ext', 'user'],
      ['Shared Storage', 'nfs', 'user'],
      ['Removable storage', 'udev', 'disk'],
      ['DVD drives', 'udev', 'iso'],
    ])
    const pool = Object.values(await xapi.call<Record<string, Rec>>('pool.get_all_records'))[0]!
    expect(await xapi.call('SR.get_name_label', pool.default_SR)).toBe('Local storage')
    const host = await xapi.call<Rec>('host.get_record', pool.master)
    expect(host.API_version_major).toBe('2')
    const vms = Object.values(await xapi.call<Record<string, Rec>>('VM.get_all_records'))
    const byName = Object.fromEntries(vms.map((vm) => [vm.name_label, vm]))
    expect(byName.Debian).toMatchObject({ power_state: 'Running', is_a_template: false })
    expect(byName.vm2).toMatchObject({ power_state: 'Halted' })
    expect(byName['legacy-win']).toMatchObject({ power_state: 'Running' })
    expect(vms.filter((vm) => vm.is_control_domain)).toHaveLength(1)
    expect(vms.filter((vm) => vm.is_a_template).length).toBeGreaterThanOrEqual(3)
  })

  it('gives Debian two disks on two SRs and one VIF with a MAC', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.call<Rec>('VM.get_record', await xapi.vmByName('Debian'))
    const disks: string[] = []
    for (const vbd of vm.VBDs as string[]) {
      const rec = await xapi.call<Rec>('VBD.get_record', vbd)
      if (rec.type !== 'Disk') continue
      const vdi = await xapi.call<Rec>('VDI.get_record', rec.VDI)
      disks.push(`${rec.userdevice}:${await xapi.call('SR.get_name_label', vdi.SR)}`)
      expect(rec.currently_attached).toBe(true)
      expect(vdi.allowed_operations).toContain('snapshot')
    }
    expect(disks).toEqual(['0:Local storage', '1:Shared Storage'])
    const vif = await xapi.call<Rec>('VIF.get_record', (vm.VIFs as string[])[0])
    expect(vif.MAC).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/)
  })

  it('makes snapshots that are templates and snapshots at once, with snapshot disks', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('Debian')
    const snap = await xapi.call<string>('VM.snapshot', vm, 'before-backup')
    const rec = await xapi.call<Rec>('VM.get_record', snap)
    expect(rec).toMatchObject({
      is_a_snapshot: true,
      is_a_template: true,
      snapshot_of: vm,
      power_state: 'Halted',
    })
    expect(rec.snapshot_info).toEqual({
      'disk-snapshot-type': 'crash_consistent',
      'power-state-at-snapshot': 'Running',
    })
    expect(await xapi.call('VM.get_snapshots', vm)).toEqual([snap])
    for (const vbd of rec.VBDs as string[]) {
      const vbdRec = await xapi.call<Rec>('VBD.get_record', vbd)
      if (vbdRec.type !== 'Disk') continue
      const vdi = await xapi.call<Rec>('VDI.get_record', vbdRec.VDI)
      expect(vdi.is_a_snapshot).toBe(true)
      expect(await xapi.call('VDI.get_snapshots', vdi.snapshot_of)).toContain(vbdRec.VDI)
    }
  })

  it('follows xapi power-state rules: start Halted, clean_shutdown Running, suspend and resume', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    await xapi.call('VM.start', vm, false, false)
    expect(await xapi.call('VM.get_power_state', vm)).toBe('Running')
    await xapi.call('VM.suspend', vm)
    expect(await xapi.call('VM.get_power_state', vm)).toBe('Suspended')
    expect(await xapi.failure('VM.start', vm, false, false)).toEqual([
      'VM_BAD_POWER_STATE',
      vm,
      'halted',
      'suspended',
    ])
    await xapi.call('VM.resume', vm, false, false)
    await xapi.call('VM.clean_shutdown', vm)
    expect(await xapi.call('VM.get_power_state', vm)).toBe('Halted')
  })

  it('leaves the VDIs when a VM is destroyed, and VDI.destroy removes the VBDs', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    const vbd = (await xapi.call<string[]>('VM.get_VBDs', vm))[0]!
    const vdi = await xapi.call<string>('VBD.get_VDI', vbd)
    const snap = await xapi.call<string>('VM.snapshot', vm, 'snap')
    const snapVdis: string[] = []
    for (const v of await xapi.call<string[]>('VM.get_VBDs', snap)) {
      const rec = await xapi.call<Rec>('VBD.get_record', v)
      if (rec.type === 'Disk') snapVdis.push(String(rec.VDI))
    }
    await xapi.call('VM.destroy', snap)
    for (const v of snapVdis)
      expect(await xapi.call<Rec>('VDI.get_record', v)).toMatchObject({ is_a_snapshot: true, VBDs: [] })
    await xapi.call('VDI.destroy', vdi)
    expect(await xapi.failure('VBD.get_record', vbd)).toEqual(['HANDLE_INVALID', 'VBD', vbd])
    expect(await xapi.call<string[]>('VM.get_VBDs', vm)).not.toContain(vbd)
  })

  it('keeps objects and disks across a restart with the same state folder; sessions do not survive', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xapi-sim-state-'))
    try {
      const first = await startXapiSim({ demo: true, stateDir: dir })
      const client = await TestClient.login(first.url)
      const vm = await client.vmByName('vm2')
      await client.call('VM.set_name_description', vm, 'kept')
      await first.close()
      const second = await startXapiSim({ stateDir: dir, port: 0 })
      try {
        expect(await new TestClient(second.url, client.session).failure('VM.get_all')).toEqual([
          'SESSION_INVALID',
          client.session,
        ])
        const again = await TestClient.login(second.url)
        expect(await again.call('VM.get_name_description', vm)).toBe('kept')
        expect(await again.call('VM.get_power_state', await again.vmByName('Debian'))).toBe('Running')
      } finally {
        await second.close()
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('counts open sessions so clients can be checked for leaks', async () => {
    const { sim, xapi } = await demoSim()
    expect(sim.openSessions()).toBe(1)
    await xapi.call('session.logout')
    expect(sim.openSessions()).toBe(0)
  })

  it('builds pools from a seed with sizes and fill', async () => {
    const { xapi } = await demoSim({
      demo: false,
      seed: {
        srs: [{ name: 'Local storage', type: 'ext', default: true }],
        vms: [{ name: 'many', count: 3, disks: [{ sr: 'Local storage', size: '3MiB', fill: 1 }], vifs: 2 }],
      },
    })
    const refs = await xapi.call<string[]>('VM.get_by_name_label', 'many-2')
    expect(refs).toHaveLength(1)
    expect(await xapi.call<string[]>('VM.get_VIFs', refs[0])).toHaveLength(2)
  })
})
