// VM lifecycle with xapi's rules: allowed power states, control domain, templates and
// snapshots, and operations that may not run at the same time (xapi_vm_lifecycle.ml).
import type { SimContext } from './context.js'
import { XapiFailure } from './errors.js'
import { deviceRefusal, macFor, newVmRecord, refreshVmOps } from './factory.js'
import { NULL_REF } from './schema.js'
import { canServe, isLive, masterOf, srsOfVm, srsSeenBy } from './hosts.js'
import { randomUUID } from 'node:crypto'
import {
  copyVdi,
  createVbd,
  createVif,
  destroyVbd,
  destroyVdi,
  removeVbd,
  removeVif,
  snapshotVdi,
} from './storage.js'
import type { Rec } from './db.js'
import { copyVtpms, removeVtpms } from './vtpm.js'
import { bootGuest, copyGuestMetrics, forgetGuest, stopGuest } from './guest.js'

const ALLOWED_STATES: Record<string, string[]> = {
  start: ['Halted'],
  clean_shutdown: ['Running'],
  shutdown: ['Running'],
  clean_reboot: ['Running'],
  hard_reboot: ['Running', 'Paused'],
  suspend: ['Running'],
  hard_shutdown: ['Running', 'Paused', 'Suspended'],
  resume: ['Suspended'],
  destroy: ['Halted', 'Suspended'],
  export: ['Halted', 'Suspended'],
  clone: ['Halted', 'Suspended'],
  copy: ['Halted', 'Suspended'],
  snapshot: ['Halted', 'Running', 'Paused', 'Suspended'],
}

/** What a snapshot (a template and a snapshot at once) still allows. */
const SNAPSHOT_OPS = ['revert', 'clone', 'copy', 'export', 'destroy', 'hard_shutdown', 'metadata_export']
const TEMPLATE_OPS = ['clone', 'copy', 'export', 'destroy', 'provision', 'metadata_export']
/** Groups of operations that may run together; anything else conflicts. */
const CONCURRENT = [
  ['clone', 'copy', 'export'],
  ['snapshot', 'checkpoint'],
]

/** Raises what xapi raises when `op` is not allowed on the VM now. */
export function assertVmOp(sim: SimContext, vmRef: string, op: string): Rec {
  const vm = sim.db.require('VM', vmRef)
  const blocked = (vm.blocked_operations as Record<string, string>)[op]
  if (blocked !== undefined) throw new XapiFailure('OPERATION_BLOCKED', vmRef, blocked)
  if (vm.is_control_domain)
    throw new XapiFailure('OPERATION_NOT_ALLOWED', 'This operation is not allowed on a control domain')
  if (vm.is_a_snapshot && !SNAPSHOT_OPS.includes(op)) throw new XapiFailure('VM_IS_SNAPSHOT', vmRef, op)
  if (!vm.is_a_snapshot && vm.is_a_template && !TEMPLATE_OPS.includes(op))
    throw new XapiFailure('VM_IS_TEMPLATE', vmRef, op)
  if (!vm.is_a_template) {
    const refusal = deviceRefusal(sim, vm, vmRef, op)
    if (refusal) throw refusal
  }
  for (const [task, running] of Object.entries(vm.current_operations as Record<string, string>)) {
    const together = CONCURRENT.some((group) => group.includes(op) && group.includes(running))
    if (!together) throw new XapiFailure('OTHER_OPERATION_IN_PROGRESS', 'VM', vmRef, running, task)
  }
  const states = ALLOWED_STATES[op]
  if (states && !vm.is_a_template && !states.includes(String(vm.power_state))) {
    throw new XapiFailure(
      'VM_BAD_POWER_STATE',
      vmRef,
      states.map((s) => s.toLowerCase()).join(', '),
      String(vm.power_state).toLowerCase(),
    )
  }
  return vm
}

/** Marks `op` as running on the VM until the returned function is called. */
export function lockVm(sim: SimContext, vmRef: string, op: string, task: string): () => void {
  const vm = assertVmOp(sim, vmRef, op)
  sim.db.update('VM', vmRef, { current_operations: { ...(vm.current_operations as Rec), [task]: op } })
  return () => {
    const now = sim.db.get('VM', vmRef)
    if (!now) return
    const ops = { ...(now.current_operations as Rec) }
    delete ops[task]
    sim.db.update('VM', vmRef, { current_operations: ops })
  }
}

function setDevicesAttached(sim: SimContext, vm: Rec, attached: boolean): void {
  for (const vbd of vm.VBDs as string[]) {
    if (sim.db.has('VBD', vbd))
      sim.db.update('VBD', vbd, { currently_attached: attached && !sim.db.get('VBD', vbd)!.empty })
  }
  for (const vif of vm.VIFs as string[]) {
    if (sim.db.has('VIF', vif)) sim.db.update('VIF', vif, { currently_attached: attached })
  }
}

let nextDomid = 1

/**
 * Sets the power state. A VM that starts runs on `host`, or stays on the host it runs on, or
 * goes to the first host that could run it (the master when none could: seeds and resumes).
 */
export function setPowerState(
  sim: SimContext,
  vmRef: string,
  state: 'Halted' | 'Running' | 'Suspended' | 'Paused',
  host?: string,
): void {
  const vm = sim.db.require('VM', vmRef)
  const running = state === 'Running' || state === 'Paused'
  const was = String(vm.resident_on)
  const before = String(vm.power_state)
  const on = running
    ? (host ?? (sim.db.has('host', was) ? was : (possibleHosts(sim, vmRef)[0] ?? masterOf(sim))))
    : NULL_REF
  sim.db.update('VM', vmRef, {
    power_state: state,
    resident_on: on,
    domid: running ? (vm.domid !== -1 && was === on ? vm.domid : nextDomid++) : -1,
  })
  setDevicesAttached(sim, vm, running)
  if (state === 'Halted') stopGuest(sim, vmRef)
  else if (state === 'Running' && before === 'Halted') bootGuest(sim, vmRef)
  if (was !== on) sim.db.link('host', was, 'resident_VMs', vmRef, false)
  if (running) sim.db.link('host', on, 'resident_VMs', vmRef, true)
  refreshVmOps(sim, vmRef)
}

/**
 * The hosts the VM could boot on (xapi_vm_helpers.ml get_possible_hosts_for_vm, with
 * assert_can_boot_here): enabled ones, and the host a running VM is on even when disabled (xapi
 * skips that check for a "local live migration"). Memory is not modelled: the start-fail fault
 * stands for a host short of it. Only live hosts that see all the VM's SRs count.
 */
export function possibleHosts(sim: SimContext, vmRef: string): string[] {
  const vm = sim.db.require('VM', vmRef)
  const srs = srsOfVm(sim, vmRef)
  return sim.db
    .all('host')
    .filter(([ref, host]) => host.enabled || (vm.power_state === 'Running' && vm.resident_on === ref))
    .filter(([ref]) => canServe(sim, ref, srs))
    .map(([ref]) => ref)
}

/**
 * xapi's assert_can_boot_here, in its order: HOST_NOT_LIVE [] when not live, HOST_DISABLED
 * [host] unless enabled (or the running VM's own host), VM_REQUIRES_SR [vm; sr] for a disk on an
 * SR the host does not see. Memory is not modelled.
 */
export function assertCanBootHere(sim: SimContext, vmRef: string, hostRef: string): void {
  const host = sim.db.require('host', hostRef)
  const vm = sim.db.require('VM', vmRef)
  if (!isLive(sim, hostRef)) throw new XapiFailure('HOST_NOT_LIVE')
  if (sim.faults.get('start-no-host')) throw notEnoughMemory()
  if (!host.enabled && !(vm.power_state === 'Running' && vm.resident_on === hostRef))
    throw new XapiFailure('HOST_DISABLED', hostRef)
  const seen = srsSeenBy(sim, hostRef)
  const missing = srsOfVm(sim, vmRef).find((sr) => !seen.has(sr))
  if (missing) throw new XapiFailure('VM_REQUIRES_SR', vmRef, missing)
}

/** HOST_NOT_ENOUGH_FREE_MEMORY [needed; free], as a host short of memory for the VM says it. */
function notEnoughMemory(): XapiFailure {
  return new XapiFailure(
    'HOST_NOT_ENOUGH_FREE_MEMORY',
    String(2 * 1024 ** 3 + 20 * 1024 ** 2),
    String(512 * 1024 ** 2),
  )
}

export function startVm(sim: SimContext, vmRef: string): void {
  assertVmOp(sim, vmRef, 'start')
  // choose_host_for_vm: no host that can run it (all disabled) is NO_HOSTS_AVAILABLE [].
  if (possibleHosts(sim, vmRef).length === 0 || sim.faults.get('start-no-host'))
    throw new XapiFailure('NO_HOSTS_AVAILABLE')
  if (sim.faults.get('start-fail')) throw notEnoughMemory()
  setPowerState(sim, vmRef, 'Running', possibleHosts(sim, vmRef)[0])
}

/** The network cards of a VM copied onto `copy`, MACs kept (as VM.clone and VM.copy keep them). */
function copyVifs(sim: SimContext, vifs: string[], copy: string): void {
  for (const vifRef of vifs) {
    const vif = sim.db.get('VIF', vifRef)
    if (!vif) continue
    createVif(sim, {
      VM: copy,
      device: vif.device,
      network: vif.network,
      MAC: vif.MAC,
      MTU: vif.MTU,
      MAC_autogenerated: vif.MAC_autogenerated,
      other_config: { ...(vif.other_config as Rec) },
    })
  }
}

/** Copies a VM record with new devices; disks are copied by `copyDisk`. */
async function copyVmRecord(
  sim: SimContext,
  vmRef: string,
  fields: Rec,
  copyDisk: (vdiRef: string) => Promise<string>,
  ignoreVdis: string[] = [],
): Promise<string> {
  const vm = sim.db.require('VM', vmRef)
  const { uuid: _uuid, VBDs: _vbds, VIFs: _vifs, snapshots: _snaps, current_operations: _ops, ...rest } = vm
  const copy = sim.db.create('VM', {
    ...rest,
    other_config: { ...(vm.other_config as Rec) },
    current_operations: {},
    snapshots: [],
    resident_on: NULL_REF,
    domid: -1,
    VTPMs: [],
    guest_metrics: copyGuestMetrics(sim, vm),
    ...fields,
  })
  try {
    copyVtpms(sim, vm, copy)
    for (const vbdRef of vm.VBDs as string[]) {
      const vbd = sim.db.get('VBD', vbdRef)
      if (!vbd) continue
      let vdi = String(vbd.VDI)
      if (vbd.type !== 'CD' && !vbd.empty && !ignoreVdis.includes(vdi)) vdi = await copyDisk(vdi)
      else if (vbd.type !== 'CD' && ignoreVdis.includes(vdi)) continue
      createVbd(sim, {
        VM: copy,
        VDI: vdi,
        device: vbd.device,
        userdevice: vbd.userdevice,
        bootable: vbd.bootable,
        mode: vbd.mode,
        type: vbd.type,
        empty: vbd.empty,
        unpluggable: vbd.unpluggable,
        other_config: { ...(vbd.other_config as Rec) },
        qos_algorithm_type: vbd.qos_algorithm_type,
        qos_algorithm_params: vbd.qos_algorithm_params,
      })
    }
    copyVifs(sim, vm.VIFs as string[], copy)
  } catch (error) {
    await destroyVmWithDevices(sim, copy, true)
    throw error
  }
  refreshVmOps(sim, copy)
  return copy
}

/** VM.snapshot: a Halted template-and-snapshot with a snapshot of each disk. */
export async function snapshotVm(
  sim: SimContext,
  vmRef: string,
  name: string,
  ignoreVdis: string[],
): Promise<string> {
  const vm = assertVmOp(sim, vmRef, 'snapshot')
  if (sim.faults.get('snapshot-fail')) {
    throw new XapiFailure('SR_BACKEND_FAILURE_109', '', 'The snapshot chain is too long', '')
  }
  // Every disk must allow a snapshot before anything is created.
  for (const vbdRef of vm.VBDs as string[]) {
    const vbd = sim.db.get('VBD', vbdRef)
    if (!vbd || vbd.type === 'CD' || vbd.empty || ignoreVdis.includes(String(vbd.VDI))) continue
    const vdi = sim.db.require('VDI', vbd.VDI)
    if (!(vdi.allowed_operations as string[]).includes('snapshot'))
      throw new XapiFailure('SR_OPERATION_NOT_SUPPORTED', String(vdi.SR))
  }
  const time = new Date()
  const made: string[] = []
  const snap = await copyVmRecord(
    sim,
    vmRef,
    {
      name_label: name,
      is_a_snapshot: true,
      is_a_template: true,
      snapshot_of: vmRef,
      snapshot_time: time,
      // xapi keeps the VM's record as it was (Helpers.vm_string_of_record); the simulator its uuid
      // and name, in that form.
      snapshot_metadata: `(('uuid' '${String(vm.uuid)}') ('name_label' '${String(vm.name_label).replace(/'/g, '')}'))`,
      power_state: 'Halted',
      snapshot_info: {
        'disk-snapshot-type': 'crash_consistent',
        'power-state-at-snapshot': String(vm.power_state),
      },
    },
    async (vdi) => {
      const copy = await snapshotVdi(sim, vdi, time)
      made.push(copy)
      return copy
    },
    ignoreVdis,
  )
  sim.db.link('VM', vmRef, 'snapshots', snap, true)
  // xapi_vm_clone.ml: the snapshot takes the VM's place in its tree; the VM is its child.
  sim.db.update('VM', snap, { parent: sim.db.require('VM', vmRef).parent })
  sim.db.update('VM', vmRef, { parent: snap })
  await churn(sim, vmRef, snap)
  return snap
}

/**
 * VM.revert (xapi_vm_snapshot.ml revert): the VM halted (a disk-only snapshot), each of its disks
 * that the snapshot has a snapshot of destroyed and replaced by a clone of that snapshot (the
 * SMAPIv1 path: VDI.revert is not supported there), every snapshot of an old disk now a snapshot
 * of its clone, the VM's parent the snapshot.
 */
export async function revertVm(sim: SimContext, snapRef: string): Promise<void> {
  const snap = assertVmOp(sim, snapRef, 'revert')
  const vmRef = String(snap.snapshot_of)
  const vm = sim.db.require('VM', vmRef)
  if (vm.power_state !== 'Halted') setPowerState(sim, vmRef, 'Halted')
  for (const vbdRef of snap.VBDs as string[]) {
    const vbd = sim.db.get('VBD', vbdRef)
    const from = vbd && vbd.type === 'Disk' ? sim.db.get('VDI', vbd.VDI) : undefined
    if (!vbd || !from) continue
    const old = String(from.snapshot_of)
    const clone = await copyVdi(sim, String(vbd.VDI), String(from.SR), {})
    for (const [ref, other] of sim.db.all('VDI')) {
      if (other.snapshot_of !== old || ref === clone) continue
      sim.db.update('VDI', ref, { snapshot_of: clone })
      sim.db.link('VDI', old, 'snapshots', ref, false)
      sim.db.link('VDI', clone, 'snapshots', ref, true)
    }
    const mine = (vm.VBDs as string[]).find((r) => sim.db.get('VBD', r)?.userdevice === vbd.userdevice)
    if (mine) destroyVbd(sim, mine)
    if (sim.db.has('VDI', old)) await destroyVdi(sim, old)
    createVbd(sim, {
      VM: vmRef,
      VDI: clone,
      device: vbd.device,
      userdevice: vbd.userdevice,
      bootable: vbd.bootable,
      mode: vbd.mode,
      type: 'Disk',
      empty: false,
      unpluggable: vbd.unpluggable,
      other_config: { ...(vbd.other_config as Rec) },
      qos_algorithm_type: vbd.qos_algorithm_type,
      qos_algorithm_params: vbd.qos_algorithm_params,
    })
  }
  sim.db.update('VM', vmRef, { parent: snapRef })
  refreshVmOps(sim, vmRef)
}

/** Seed `churn`: after a snapshot, the guest rewrites a share of its disks (a new one each time). */
async function churn(sim: SimContext, vmRef: string, snap: string): Promise<void> {
  const snapshots = (sim.db.require('VM', vmRef).snapshots as string[]).length
  for (const vbdRef of sim.db.require('VM', vmRef).VBDs as string[]) {
    const vdi = sim.db.get('VDI', sim.db.get('VBD', vbdRef)?.VDI)
    const share = vdi ? sim.disks.churn.get(String(vdi.uuid)) : undefined
    if (!vdi || !share) continue
    await sim.disks.change(String(vdi.uuid), Number(vdi.virtual_size), share, `churn/${snap}`, snapshots * 7)
  }
}

/** VM.clone / VM.copy: a Halted VM with copies of the disks (copy: into `srRef`). */
export async function cloneVm(
  sim: SimContext,
  vmRef: string,
  name: string,
  op: 'clone' | 'copy',
  srRef?: string,
): Promise<string> {
  const vm = assertVmOp(sim, vmRef, op)
  const otherConfig = { ...(vm.other_config as Rec), mac_seed: randomUUID() }
  const copy = await copyVmRecord(
    sim,
    vmRef,
    {
      name_label: name,
      is_a_snapshot: false,
      snapshot_of: NULL_REF,
      snapshot_info: {},
      power_state: 'Halted',
      other_config: otherConfig,
      version: 0,
    },
    (vdi) => copyVdi(sim, vdi, srRef ?? String(sim.db.require('VDI', vdi).SR), {}),
  )
  const copyRec = sim.db.require('VM', copy)
  for (const vif of copyRec.VIFs as string[]) {
    const rec = sim.db.require('VIF', vif)
    sim.db.update('VIF', vif, { MAC: macFor(String(otherConfig.mac_seed), String(rec.device)) })
  }
  return copy
}

/** xapi_vm.ml destroy: the VMs whose parent this one was take its parent. */
function reparentChildren(sim: SimContext, vmRef: string, vm: Rec): void {
  for (const [ref, other] of sim.db.all('VM'))
    if (other.parent === vmRef) sim.db.update('VM', ref, { parent: vm.parent })
}

/** VM.destroy: removes the VM, its VBDs and VIFs, never its VDIs. */
export async function destroyVm(sim: SimContext, vmRef: string): Promise<void> {
  const vm = assertVmOp(sim, vmRef, 'destroy')
  forgetGuest(sim, vmRef)
  for (const vbd of vm.VBDs as string[]) if (sim.db.has('VBD', vbd)) destroyVbd(sim, vbd)
  for (const vif of vm.VIFs as string[]) removeVif(sim, vif)
  removeVtpms(sim, vm)
  reparentChildren(sim, vmRef, vm)
  if (sim.db.has('VM', vm.snapshot_of)) sim.db.link('VM', String(vm.snapshot_of), 'snapshots', vmRef, false)
  sim.db.link('host', String(vm.resident_on), 'resident_VMs', vmRef, false)
  sim.db.destroy('VM', vmRef)
}

/** Removes a VM record with its devices (and with `disks`, its VDIs), without checks: for cleanup. */
export async function destroyVmWithDevices(sim: SimContext, vmRef: string, disks: boolean): Promise<void> {
  const vm = sim.db.get('VM', vmRef)
  if (!vm) return
  forgetGuest(sim, vmRef)
  for (const vbdRef of vm.VBDs as string[]) {
    const vbd = sim.db.get('VBD', vbdRef)
    removeVbd(sim, vbdRef)
    if (disks && vbd && vbd.type !== 'CD' && sim.db.has('VDI', vbd.VDI))
      await destroyVdi(sim, String(vbd.VDI))
  }
  for (const vif of vm.VIFs as string[]) removeVif(sim, vif)
  removeVtpms(sim, vm)
  reparentChildren(sim, vmRef, vm)
  sim.db.link('host', String(vm.resident_on), 'resident_VMs', vmRef, false)
  sim.db.destroy('VM', vmRef)
}

export { newVmRecord }
