// Builders for realistic records: what xapi would hold for a pool, host, SR, VM and its devices.
import { createHash, randomUUID } from 'node:crypto'
import type { SimContext } from './context.js'
import type { Rec } from './db.js'
import { XapiFailure } from './errors.js'
import { NULL_REF } from './schema.js'

export const GiB = 1024 ** 3
export const MiB = 1024 ** 2

const FULL_VDI_OPS = [
  'clone',
  'copy',
  'resize',
  'snapshot',
  'destroy',
  'forget',
  'update',
  'data_destroy',
  'list_changed_blocks',
  'enable_cbt',
  'disable_cbt',
  'mirror',
  'generate_config',
  'force_unlock',
  'blocked',
  'set_on_boot',
]
const FULL_SR_OPS = [
  'vdi_create',
  'vdi_destroy',
  'vdi_snapshot',
  'vdi_clone',
  'vdi_resize',
  'vdi_introduce',
  'vdi_mirror',
  'vdi_enable_cbt',
  'vdi_disable_cbt',
  'vdi_data_destroy',
  'vdi_list_changed_blocks',
  'vdi_set_on_boot',
  'scan',
  'update',
  'forget',
  'plug',
  'unplug',
  'destroy',
]

/** What an SR of each type lets you do, as its SM driver's capabilities do on a real host. */
export function srCapabilities(type: string): { srOps: string[]; vdiOps: string[] } {
  switch (type) {
    case 'udev': // removable devices: no VDI create, snapshot or clone
      return {
        srOps: ['vdi_introduce', 'scan', 'update', 'forget', 'plug', 'unplug', 'destroy'],
        vdiOps: ['forget', 'update'],
      }
    case 'iso':
      return {
        srOps: ['vdi_introduce', 'scan', 'update', 'forget', 'plug', 'unplug', 'destroy'],
        vdiOps: ['forget', 'update', 'clone', 'copy'],
      }
    default: // ext, nfs, lvm, lvmoiscsi, ...: VHD-based, full feature set
      return { srOps: FULL_SR_OPS, vdiOps: FULL_VDI_OPS }
  }
}

export function vdiAllowedOps(sim: SimContext, vdi: Rec): string[] {
  const sr = sim.db.get('SR', vdi.SR)
  const ops = sr ? srCapabilities(String(sr.type)).vdiOps : []
  return ops
}

/**
 * What a VM's devices forbid, whatever its state (xapi_vm_lifecycle.ml check_operation_error):
 * a disk with on_boot=reset in its sm_config forbids a snapshot, a checkpoint and a suspend; a
 * VUSB, plugged or not, forbids those and migrations.
 */
export function deviceRefusal(sim: SimContext, vm: Rec, vmRef: string, op: string): XapiFailure | undefined {
  if (['checkpoint', 'snapshot', 'suspend', 'snapshot_with_quiesce'].includes(op)) {
    for (const vbdRef of vm.VBDs as string[]) {
      const vbd = sim.db.get('VBD', vbdRef)
      const vdi = vbd && !vbd.empty ? sim.db.get('VDI', String(vbd.VDI)) : undefined
      if ((vdi?.sm_config as Record<string, string> | undefined)?.on_boot === 'reset')
        return new XapiFailure('VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION')
    }
  }
  if (
    ['suspend', 'snapshot', 'checkpoint', 'migrate_send', 'pool_migrate'].includes(op) &&
    (vm.VUSBs as string[] | undefined)?.length
  )
    return new XapiFailure('VM_HAS_VUSBS', vmRef)
  return undefined
}

/** Recomputes a VM's allowed_operations from its power state and kind, as xapi does after each change. */
export function refreshVmOps(sim: SimContext, vmRef: string): void {
  const vm = sim.db.get('VM', vmRef)
  if (!vm) return
  let ops: string[]
  if (vm.is_control_domain) ops = []
  else if (vm.is_a_snapshot) ops = ['revert', 'clone', 'copy', 'export', 'destroy', 'hard_shutdown']
  else if (vm.is_a_template) ops = ['clone', 'copy', 'export', 'destroy', 'provision']
  else {
    switch (vm.power_state) {
      case 'Halted':
        ops = [
          'start',
          'start_on',
          'export',
          'clone',
          'copy',
          'snapshot',
          'destroy',
          'changing_memory_limits',
          'changing_VCPUs',
        ]
        break
      case 'Running':
        ops = [
          'clean_shutdown',
          'hard_shutdown',
          'clean_reboot',
          'hard_reboot',
          'suspend',
          'pause',
          'snapshot',
          'checkpoint',
          'shutdown',
        ]
        break
      case 'Suspended':
        ops = ['resume', 'resume_on', 'hard_shutdown', 'export', 'snapshot', 'checkpoint', 'destroy']
        break
      default:
        ops = ['unpause', 'hard_shutdown', 'hard_reboot']
    }
  }
  // What the VM's devices forbid is not offered either (xapi computes both from one check).
  if (!vm.is_a_template) ops = ops.filter((op) => !deviceRefusal(sim, vm, vmRef, op))
  sim.db.update('VM', vmRef, { allowed_operations: ops })
}

/** A MAC derived from the VM's mac_seed and the VIF device, locally administered, as xapi does. */
export function macFor(seed: string, device: string): string {
  const bytes = createHash('sha256').update(`${seed}/${device}`).digest().subarray(0, 6)
  bytes[0] = (bytes[0]! & 0xfe) | 0x02
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(':')
}

export function newVmRecord(fields: Rec): Rec {
  return {
    name_description: '',
    power_state: 'Halted',
    user_version: 1,
    memory_static_max: 2 * GiB,
    memory_dynamic_max: 2 * GiB,
    memory_dynamic_min: 1 * GiB,
    memory_static_min: 512 * MiB,
    memory_target: 2 * GiB,
    memory_overhead: 20 * MiB,
    VCPUs_max: 2,
    VCPUs_at_startup: 2,
    VCPUs_params: {},
    actions_after_shutdown: 'destroy',
    actions_after_reboot: 'restart',
    actions_after_crash: 'restart',
    HVM_boot_policy: 'BIOS order',
    HVM_boot_params: { order: 'cdn' },
    HVM_shadow_multiplier: 1,
    platform: {
      timeoffset: '0',
      'device-model': 'qemu-upstream-compat',
      viridian: 'false',
      nx: 'true',
      acpi: '1',
      apic: 'true',
      pae: 'true',
    },
    domain_type: 'hvm',
    domid: -1,
    domarch: '',
    ha_restart_priority: '',
    hardware_platform_version: 0,
    bios_strings: {},
    generation_id: '',
    other_config: { mac_seed: randomUUID() },
    ...fields,
  }
}

export function newVdiRecord(fields: Rec): Rec {
  return {
    name_description: '',
    type: 'user',
    sharable: false,
    read_only: false,
    managed: true,
    missing: false,
    location: '',
    on_boot: 'persist',
    allow_caching: false,
    ...fields,
  }
}

export function newVbdRecord(fields: Rec): Rec {
  return {
    bootable: false,
    mode: 'RW',
    type: 'Disk',
    unpluggable: true,
    empty: false,
    qos_supported_algorithms: [],
    qos_algorithm_type: '',
    qos_algorithm_params: {},
    runtime_properties: {},
    allowed_operations: ['attach'],
    ...fields,
  }
}

export function newVifRecord(fields: Rec): Rec {
  return {
    MTU: 1500,
    MAC_autogenerated: true,
    locking_mode: 'network_default',
    qos_algorithm_type: '',
    qos_algorithm_params: {},
    qos_supported_algorithms: [],
    runtime_properties: {},
    allowed_operations: ['attach'],
    ...fields,
  }
}

/** Adds a VDI to its SR: links it and grows the SR's allocation. */
export function attachVdiToSr(sim: SimContext, vdiRef: string): void {
  const vdi = sim.db.require('VDI', vdiRef)
  const sr = sim.db.get('SR', vdi.SR)
  if (!sr) return
  sim.db.link('SR', String(vdi.SR), 'VDIs', vdiRef, true)
  recomputeSrUsage(sim, String(vdi.SR))
}

export function recomputeSrUsage(sim: SimContext, srRef: string): void {
  const sr = sim.db.get('SR', srRef)
  if (!sr) return
  let physical = 0
  let virtual = 0
  for (const vdiRef of sr.VDIs as string[]) {
    const vdi = sim.db.get('VDI', vdiRef)
    if (!vdi) continue
    physical += Number(vdi.physical_utilisation)
    virtual += Number(vdi.virtual_size)
  }
  sim.db.update('SR', srRef, { physical_utilisation: physical, virtual_allocation: virtual })
}

export function srFreeSpace(sim: SimContext, srRef: string): number {
  const sr = sim.db.require('SR', srRef)
  return Number(sr.physical_size) - Number(sr.physical_utilisation)
}

export { NULL_REF }
