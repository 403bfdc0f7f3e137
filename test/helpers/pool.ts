import type { XapiSim } from '../../simulator/xapi/server.js'
// Pool assertions shared by the backup and restore tests.
import type { TestClient } from './rpc.js'
import { expect } from 'vitest'
import { OC_BASE_OF, OC_BASE_RUN } from '../../src/pool/tags.js'
import { rawDisk, sha256, upload } from './xva.js'

type Rec = Record<string, unknown>

export async function records(xapi: TestClient, cls: string): Promise<Record<string, Rec>> {
  return xapi.call<Record<string, Rec>>(`${cls}.get_all_records`)
}

/** Snapshots in the pool (any VM with is_a_snapshot). */
export async function snapshots(xapi: TestClient): Promise<Rec[]> {
  return Object.values(await records(xapi, 'VM')).filter((vm) => vm.is_a_snapshot)
}

/**
 * The runs dpxen keeps as incremental bases, oldest first as the pool lists them: snapshot VMs,
 * and (cbt) disks kept alone, tagged with their run.
 */
export async function baseRuns(xapi: TestClient): Promise<string[]> {
  const vdis = Object.values(await records(xapi, 'VDI')).filter(
    (r) => (r.other_config as Record<string, string>)[OC_BASE_OF] && !(r.VBDs as string[]).length,
  )
  const runs = [...(await snapshots(xapi)), ...vdis].map((r) =>
    String((r.other_config as Record<string, string>)[OC_BASE_RUN]),
  )
  return [...new Set(runs)]
}

/** Gives the pool's first network the nbd purpose (TLS NBD), as cbt runs need. */
export async function serveNbd(xapi: TestClient, purpose: 'nbd' | 'insecure_nbd' = 'nbd'): Promise<void> {
  await xapi.call('network.add_purpose', (await xapi.call<string[]>('network.get_all'))[0], purpose)
}

/** name -> power state of every VM that is not a template or the control domain. */
export async function powerStates(xapi: TestClient): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const vm of Object.values(await records(xapi, 'VM'))) {
    if (!vm.is_a_template && !vm.is_control_domain) out[String(vm.name_label)] = String(vm.power_state)
  }
  return out
}

/** SHA-256 of each disk of a VM, in device order. */
export async function diskHashes(url: string, xapi: TestClient, vm: string): Promise<string[]> {
  const out: [number, string][] = []
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
    const rec = await xapi.call<Rec>('VBD.get_record', vbd)
    if (rec.type === 'Disk')
      out.push([Number(rec.userdevice), sha256(await rawDisk(url, xapi.session, String(rec.VDI)))])
  }
  return out.sort((a, b) => a[0] - b[0]).map(([, h]) => h)
}

export async function vdiCount(xapi: TestClient): Promise<number> {
  return (await xapi.call<string[]>('VDI.get_all')).length
}

/** Overwrites every disk of a VM with a pattern: the damage a restore must undo. */
export async function damage(url: string, xapi: TestClient, vm: string): Promise<void> {
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
    const rec = await xapi.call<Rec>('VBD.get_record', vbd)
    if (rec.type !== 'Disk') continue
    const size = Number(await xapi.call('VDI.get_virtual_size', rec.VDI))
    await xapi.call('VBD.unplug', vbd).catch(() => undefined)
    expect(
      await upload(
        `${url}/import_raw_vdi?session_id=${xapi.session}&vdi=${String(rec.VDI)}&format=raw`,
        Buffer.alloc(size, 0x5a),
      ),
    ).toBe(200)
  }
}

/** What a guest does between two backups: the share `share` of each of the VM's disks rewritten. */
export async function guestWrites(
  sim: XapiSim,
  xapi: TestClient,
  vm: string,
  seed: string,
  share: number,
): Promise<void> {
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
    if ((await xapi.call('VBD.get_type', vbd)) !== 'Disk') continue
    const vdi = await xapi.call<string>('VBD.get_VDI', vbd)
    const size = Number(await xapi.call('VDI.get_virtual_size', vdi))
    await sim.context.disks.change(await xapi.call<string>('VDI.get_uuid', vdi), size, share, seed)
  }
}

/** A VBD for `vdi` at `userdevice` of the VM, as an administrator attaches a disk (VBD.create). */
export async function attachDisk(
  xapi: TestClient,
  vm: string,
  vdi: string,
  userdevice: string,
  bootable = false,
): Promise<string> {
  return xapi.call<string>('VBD.create', {
    VM: vm,
    VDI: vdi,
    userdevice,
    bootable,
    mode: 'RW',
    type: 'Disk',
    empty: false,
    other_config: {},
    qos_algorithm_type: '',
    qos_algorithm_params: {},
  })
}

/** The VM's MAC addresses, sorted. */
export async function macs(xapi: TestClient, vm: string): Promise<string[]> {
  const vifs = await xapi.call<string[]>('VM.get_VIFs', vm)
  return (await Promise.all(vifs.map((v) => xapi.call<string>('VIF.get_MAC', v)))).sort()
}

/** The VM lost, as a deleted VM is: stopped, its disks destroyed, then its record. */
export async function loseVm(xapi: TestClient, vm: string): Promise<void> {
  if ((await xapi.call('VM.get_power_state', vm)) !== 'Halted') await xapi.call('VM.hard_shutdown', vm)
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
    const rec = await xapi.call<Rec>('VBD.get_record', vbd)
    if (rec.type !== 'Disk') continue
    await xapi.call('VBD.destroy', vbd)
    await xapi.call('VDI.destroy', rec.VDI)
  }
  await xapi.call('VM.destroy', vm)
}

/** A vTPM with `contents` (base64) on the VM, as an administrator adds one: with the VM halted. */
export async function addVtpm(xapi: TestClient, vm: string, contents: string): Promise<string> {
  const running = (await xapi.call('VM.get_power_state', vm)) === 'Running'
  if (running) await xapi.call('VM.clean_shutdown', vm)
  const vtpm = await xapi.call<string>('VTPM.create', vm, false)
  await xapi.call('VTPM.set_contents', vtpm, contents)
  if (running) await xapi.call('VM.start', vm, false, false)
  return vtpm
}

/** An empty disk of `bytes` on the SR, as an administrator makes one (VDI.create). */
export async function newDisk(
  xapi: TestClient,
  sr: string,
  bytes: number,
  name = 'new disk',
): Promise<string> {
  return xapi.call<string>('VDI.create', {
    name_label: name,
    name_description: '',
    SR: sr,
    virtual_size: String(bytes),
    type: 'user',
    sharable: false,
    read_only: false,
    other_config: {},
    xenstore_data: {},
    sm_config: {},
    tags: [],
  })
}
