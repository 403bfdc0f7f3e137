// Storage operations shared by the XenAPI methods, VM snapshots and imports: VDIs, VBDs, VIFs.
import type { SimContext } from './context.js'
import { XapiFailure } from './errors.js'
import { assertCbtState } from './cbt-checks.js'
import {
  attachVdiToSr,
  macFor,
  newVbdRecord,
  newVdiRecord,
  newVifRecord,
  recomputeSrUsage,
  srCapabilities,
  srFreeSpace,
  vdiAllowedOps,
} from './factory.js'
import type { Rec } from './db.js'
import { NULL_REF } from './schema.js'

/** Checks that an SR can hold a new VDI of `size` bytes; raises what xapi raises. */
export function assertSrCanCreate(sim: SimContext, srRef: string, size: number): void {
  const sr = sim.db.require('SR', srRef)
  if (sr.content_type === 'iso' || !srCapabilities(String(sr.type)).srOps.includes('vdi_create')) {
    throw new XapiFailure('SR_OPERATION_NOT_SUPPORTED', srRef)
  }
  // Fault sr-full: the storage itself has no room, whatever the SR's records say (a thin SR
  // overcommitted, its records behind what its volumes use).
  const free = sim.faults.get('sr-full') ? 0 : srFreeSpace(sim, srRef)
  if (size > free) throw new XapiFailure('SR_FULL', String(size), String(free))
}

/**
 * VDI.create: a new, all-zero disk. `introduce` stands for a disk that appears by itself (a
 * removable device on a udev SR), which needs no vdi_create capability.
 */
export async function createVdi(sim: SimContext, fields: Rec, introduce = false): Promise<string> {
  const size = Number(fields.virtual_size)
  if (!Number.isSafeInteger(size) || size < 0) throw new XapiFailure('FIELD_TYPE_ERROR', 'virtual_size')
  if (!introduce) assertSrCanCreate(sim, String(fields.SR), size)
  const ref = sim.db.create(
    'VDI',
    newVdiRecord({ ...fields, virtual_size: size, physical_utilisation: size }),
  )
  const vdi = sim.db.require('VDI', ref)
  sim.db.update('VDI', ref, { location: String(vdi.uuid), allowed_operations: vdiAllowedOps(sim, vdi) })
  await sim.disks.create(String(vdi.uuid), size)
  attachVdiToSr(sim, ref)
  return ref
}

/** VDI.destroy: fails VDI_IN_USE while attached; removes the VBDs that point at it. */
export async function destroyVdi(sim: SimContext, ref: string): Promise<void> {
  const vdi = sim.db.require('VDI', ref)
  const attached = (vdi.VBDs as string[]).some((vbd) => sim.db.get('VBD', vbd)?.currently_attached)
  if (attached || sim.faults.take('vdi-in-use-once')) throw new XapiFailure('VDI_IN_USE', ref, 'destroy')
  const sr = sim.db.get('SR', vdi.SR)
  if (sr && !srCapabilities(String(sr.type)).srOps.includes('vdi_destroy')) {
    throw new XapiFailure('SR_OPERATION_NOT_SUPPORTED', String(vdi.SR))
  }
  for (const vbd of vdi.VBDs as string[]) removeVbd(sim, vbd)
  if (sim.db.has('VDI', vdi.snapshot_of)) sim.db.link('VDI', String(vdi.snapshot_of), 'snapshots', ref, false)
  for (const snap of vdi.snapshots as string[]) {
    if (sim.db.has('VDI', snap)) sim.db.update('VDI', snap, { snapshot_of: NULL_REF })
  }
  for (const [vmRef, vm] of sim.db.all('VM')) {
    if (vm.suspend_VDI === ref) sim.db.update('VM', vmRef, { suspend_VDI: NULL_REF })
  }
  sim.db.destroy('VDI', ref)
  sim.db.link('SR', String(vdi.SR), 'VDIs', ref, false)
  recomputeSrUsage(sim, String(vdi.SR))
  await sim.disks.remove(String(vdi.uuid))
}

/** A VHD block: VHD-based SRs round a new size up to it (sm vhdutil.validate_and_round_vhd_size). */
const VHD_BLOCK = 2 * 1024 * 1024

/**
 * VDI.resize, as xapi and a VHD-based SR (sm FileSR.resize) do it: not while a VBD is attached
 * (VDI_IN_USE [vdi; resize], xapi_vdi.ml check_operation_error), never smaller
 * (SR_BACKEND_FAILURE_79, VDISize: "shrinking not allowed"), the same size a no-op, a larger one
 * rounded up to a whole VHD block. The new space reads as zeros and holds no block.
 */
export async function resizeVdi(sim: SimContext, ref: string, size: number): Promise<void> {
  const vdi = sim.db.require('VDI', ref)
  const attached = (vdi.VBDs as string[]).some((vbd) => sim.db.get('VBD', vbd)?.currently_attached)
  if (attached) throw new XapiFailure('VDI_IN_USE', ref, 'resize')
  assertCbtState(sim, ref, 'resize')
  const sr = sim.db.get('SR', vdi.SR)
  if (!sr || !srCapabilities(String(sr.type)).vdiOps.includes('resize'))
    throw new XapiFailure('SR_OPERATION_NOT_SUPPORTED', String(vdi.SR))
  const current = Number(vdi.virtual_size)
  if (!Number.isSafeInteger(size) || size < current)
    throw new XapiFailure('SR_BACKEND_FAILURE_79', '', 'VDI Invalid size [opterr=shrinking not allowed]', '')
  if (size === current) return
  const rounded = Math.ceil(size / VHD_BLOCK) * VHD_BLOCK
  await sim.disks.resize(String(vdi.uuid), rounded)
  sim.db.update('VDI', ref, { virtual_size: rounded })
  recomputeSrUsage(sim, String(vdi.SR))
}

/** A copy of a VDI's content in `srRef` (same SR for snapshots and clones). */
export async function copyVdi(sim: SimContext, ref: string, srRef: string, extra: Rec): Promise<string> {
  const vdi = sim.db.require('VDI', ref)
  const size = Number(vdi.virtual_size)
  assertSrCanCreate(sim, srRef, size)
  const copy = sim.db.create(
    'VDI',
    newVdiRecord({
      name_label: vdi.name_label,
      name_description: vdi.name_description,
      SR: srRef,
      virtual_size: size,
      physical_utilisation: size,
      type: vdi.type,
      sharable: vdi.sharable,
      read_only: vdi.read_only,
      other_config: { ...(vdi.other_config as Rec) },
      sm_config: {},
      xenstore_data: { ...(vdi.xenstore_data as Rec) },
      ...extra,
    }),
  )
  const copyRec = sim.db.require('VDI', copy)
  sim.db.update('VDI', copy, {
    location: String(copyRec.uuid),
    allowed_operations: vdiAllowedOps(sim, copyRec),
  })
  await sim.disks.copy(String(vdi.uuid), String(copyRec.uuid), size)
  attachVdiToSr(sim, copy)
  return copy
}

/** VDI.snapshot: needs the SR to support snapshots (SR_OPERATION_NOT_SUPPORTED otherwise). */
export async function snapshotVdi(sim: SimContext, ref: string, time: Date): Promise<string> {
  let vdi = sim.db.require('VDI', ref)
  if (!(vdi.allowed_operations as string[]).includes('snapshot')) {
    throw new XapiFailure('SR_OPERATION_NOT_SUPPORTED', String(vdi.SR))
  }
  assertCbtState(sim, ref, 'snapshot')
  if (vdi.cbt_enabled && sim.faults.take('cbt-reset')) {
    sim.disks.cbt.disable(String(vdi.uuid))
    vdi = sim.db.update('VDI', ref, { cbt_enabled: false })
  }
  const snap = await copyVdi(sim, ref, String(vdi.SR), {
    is_a_snapshot: true,
    snapshot_of: ref,
    snapshot_time: time,
  })
  sim.db.link('VDI', ref, 'snapshots', snap, true)
  // SM's _cbt_snapshot: the snapshot takes the disk's log; both keep cbt_enabled.
  if (vdi.cbt_enabled) {
    sim.disks.cbt.snapshot(String(vdi.uuid), String(sim.db.require('VDI', snap).uuid))
    sim.db.update('VDI', snap, { cbt_enabled: true })
  }
  return snap
}

const VBD_DEVICES = Array.from({ length: 16 }, (_, i) => String(i))

/** VBD.create with xapi's checks: device free, VDI not already in this VM, type consistent. */
export function createVbd(sim: SimContext, fields: Rec): string {
  const vmRef = String(fields.VM)
  const vm = sim.db.require('VM', vmRef)
  const empty = Boolean(fields.empty)
  if (!empty) sim.db.require('VDI', fields.VDI)
  const used = (vm.VBDs as string[]).map((v) => sim.db.get('VBD', v)?.userdevice)
  let userdevice = String(fields.userdevice)
  if (userdevice === 'autodetect') {
    userdevice = VBD_DEVICES.find((d) => !used.includes(d)) ?? ''
  }
  if (!VBD_DEVICES.includes(userdevice)) throw new XapiFailure('INVALID_DEVICE', userdevice)
  if (used.includes(userdevice)) throw new XapiFailure('DEVICE_ALREADY_EXISTS', userdevice)
  const mode = String(fields.mode)
  const type = String(fields.type)
  if (!['RO', 'RW'].includes(mode)) throw new XapiFailure('FIELD_TYPE_ERROR', 'mode')
  if (!['CD', 'Disk', 'Floppy'].includes(type)) throw new XapiFailure('FIELD_TYPE_ERROR', 'type')
  const ref = sim.db.create(
    'VBD',
    newVbdRecord({
      ...fields,
      userdevice,
      device: String(fields.device ?? ''),
      VDI: empty ? NULL_REF : fields.VDI,
      currently_attached: false,
    }),
  )
  sim.db.link('VM', vmRef, 'VBDs', ref, true)
  if (!empty) sim.db.link('VDI', String(fields.VDI), 'VBDs', ref, true)
  return ref
}

/** Removes a VBD record and its links (no checks). */
export function removeVbd(sim: SimContext, ref: string): void {
  const vbd = sim.db.get('VBD', ref)
  if (!vbd) return
  sim.db.link('VM', String(vbd.VM), 'VBDs', ref, false)
  sim.db.link('VDI', String(vbd.VDI), 'VBDs', ref, false)
  sim.db.destroy('VBD', ref)
}

/** VBD.destroy: refused while the VBD is plugged. */
export function destroyVbd(sim: SimContext, ref: string): void {
  const vbd = sim.db.require('VBD', ref)
  if (vbd.currently_attached) throw new XapiFailure('DEVICE_ALREADY_ATTACHED', ref)
  removeVbd(sim, ref)
}

export function createVif(sim: SimContext, fields: Rec): string {
  const vmRef = String(fields.VM)
  const vm = sim.db.require('VM', vmRef)
  sim.db.require('network', fields.network)
  const device = String(fields.device)
  const used = (vm.VIFs as string[]).map((v) => sim.db.get('VIF', v)?.device)
  if (used.includes(device)) throw new XapiFailure('DEVICE_ALREADY_EXISTS', device)
  // An empty MAC is made from the VM's MAC seed, as xapi does.
  const mac = String(fields.MAC ?? '') || macFor(String((vm.other_config as Rec).mac_seed ?? vmRef), device)
  const ref = sim.db.create('VIF', newVifRecord({ ...fields, MAC: mac, currently_attached: false }))
  sim.db.link('VM', vmRef, 'VIFs', ref, true)
  sim.db.link('network', String(fields.network), 'VIFs', ref, true)
  return ref
}

export function removeVif(sim: SimContext, ref: string): void {
  const vif = sim.db.get('VIF', ref)
  if (!vif) return
  sim.db.link('VM', String(vif.VM), 'VIFs', ref, false)
  sim.db.link('network', String(vif.network), 'VIFs', ref, false)
  sim.db.destroy('VIF', ref)
}

export function destroyVif(sim: SimContext, ref: string): void {
  const vif = sim.db.require('VIF', ref)
  if (vif.currently_attached) throw new XapiFailure('DEVICE_ALREADY_ATTACHED', ref)
  removeVif(sim, ref)
}
