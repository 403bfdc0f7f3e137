// Selection: the VMs the mode selects from the pool's records (pool/view.ts), with their disks,
// VIFs and the export's size estimate.
import type { DiskSlot, PoolView } from '../pool/view.js'

type Rec = Record<string, unknown>

export interface DiskInfo extends DiskSlot {
  virtualSize: number
  physicalUtilisation: number
  srRef: string
  srName: string
  srUuid: string
  canSnapshot: boolean
  /** The disk is reset at each boot (on_boot=reset): xapi refuses to snapshot its VM. */
  resetOnBoot: boolean
  /** The SR's type (ext, nfs, lvmoiscsi, gfs2…). */
  srType: string
  /** A disk image that is not a VHD: qcow2 (XCP-ng 8.3), raw (an LVM volume); '' for VHD. */
  imageFormat: string
}

export interface VmPlan {
  ref: string
  uuid: string
  name: string
  powerState: string
  disks: DiskInfo[]
  vifs: { device: string; mac: string; network: string }[]
  /** Upper bound of the export's size: allocated data plus per-chunk overhead. */
  estimate: number
  /** USB devices passed through (VUSBs, plugged or not): xapi refuses to snapshot the VM. */
  usbDevices: number
}

/** The image format a VDI's sm-config names when it is not a VHD. */
function imageFormat(sm: Record<string, string> | undefined): string {
  if (sm?.['image-format'] && sm['image-format'] !== 'vhd') return sm['image-format']
  return sm?.type === 'raw' ? 'raw' : ''
}

/** The largest disk xapi exports as a VHD (format=vhd answers VDI_TOO_LARGE above it). */
export const VHD_MAX_BYTES = 2040 * 1024 ** 3

/**
 * Why xapi cannot export the VM's disks as VHD deltas, in words, or undefined. vhd-tool makes a
 * delta only between VHD images (xapi's vhd_tool_wrapper: "Cannot compute differences on
 * non-VHD images"): not on GFS2 (XenServer 8's thin shared storage keeps QCOW2 images), not a
 * QCOW2 or raw image; and format=vhd stops at 2040 GiB (VDI_TOO_LARGE).
 */
export function deltaRefusal(plan: VmPlan): string | undefined {
  for (const d of plan.disks) {
    const where = `disk ${d.userdevice} of ${plan.name}`
    if (d.srType === 'gfs2')
      return `${where} is on SR "${d.srName}" (gfs2, whose disks are QCOW2 images), where xapi cannot compute VHD deltas`
    if (d.imageFormat)
      return `${where} is a ${d.imageFormat} image, not a VHD, of which xapi cannot compute VHD deltas`
    if (d.virtualSize > VHD_MAX_BYTES)
      return `${where} is ${(d.virtualSize / 1024 ** 3).toFixed(0)} GiB, over the 2040 GiB xapi exports as a VHD (VDI_TOO_LARGE)`
  }
  return undefined
}

/**
 * Why xapi would refuse to snapshot the VM, in words with what to do, or undefined: checked
 * before an online backup so that the line says it, not xapi's code after a failed call
 * (xapi_vm_lifecycle.ml check_operation_error: VM_HAS_VUSBS,
 * VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION; the SR's capabilities).
 */
export function snapshotRefusal(plan: VmPlan): string | undefined {
  if (plan.usbDevices > 0)
    return `${plan.name} has a USB device passed through: xapi cannot snapshot it, even with the device unplugged (VM_HAS_VUSBS); back it up with mode offline`
  const reset = plan.disks.find((d) => d.resetOnBoot)
  if (reset)
    return `disk ${reset.userdevice} of ${plan.name} is reset at each boot (on_boot=reset): xapi cannot snapshot it (VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION); back it up with mode offline`
  if (plan.disks.some((d) => !d.canSnapshot))
    return `At least one sr used by ${plan.name} does not support snapshot`
  return undefined
}

/** A VM a backup may take: not a template, not a snapshot, not the control domain. */
export function isBackupCandidate(vm: Rec): boolean {
  return !vm.is_a_template && !vm.is_a_snapshot && !vm.is_control_domain
}

const CHUNK = 1024 * 1024

export function planVm(view: PoolView, ref: string): VmPlan {
  const vm = view.vms.get(ref)!
  const disks: DiskInfo[] = []
  for (const vbdRef of vm.VBDs as string[]) {
    const vbd = view.vbds.get(vbdRef)
    if (!vbd || vbd.type === 'CD' || vbd.empty) continue
    const vdi = view.vdis.get(String(vbd.VDI))
    if (!vdi) continue
    const sr = view.srs.get(String(vdi.SR)) ?? {}
    if (sr.content_type === 'iso') continue
    disks.push({
      vbd: vbdRef,
      vdi: String(vbd.VDI),
      userdevice: String(vbd.userdevice),
      device: String(vbd.device ?? ''),
      bootable: vbd.bootable === true,
      mode: String(vbd.mode),
      virtualSize: Number(vdi.virtual_size),
      physicalUtilisation: Number(vdi.physical_utilisation),
      srRef: String(vdi.SR),
      srName: String(sr.name_label ?? ''),
      srUuid: String(sr.uuid ?? ''),
      canSnapshot: ((vdi.allowed_operations as string[]) ?? []).includes('snapshot'),
      resetOnBoot: vdi.on_boot === 'reset' || (vdi.sm_config as Rec | undefined)?.on_boot === 'reset',
      srType: String(sr.type ?? ''),
      imageFormat: imageFormat(vdi.sm_config as Record<string, string> | undefined),
    })
  }
  disks.sort((a, b) => Number(a.userdevice) - Number(b.userdevice))
  const vifs = (vm.VIFs as string[])
    .map((r) => view.vifs.get(r))
    .filter((v): v is Rec => v !== undefined)
    .map((v) => ({
      device: String(v.device),
      mac: String(v.MAC),
      network: String(view.networks.get(String(v.network))?.name_label ?? ''),
    }))
  const estimate =
    disks.reduce((sum, d) => {
      const data = Math.min(d.virtualSize, d.physicalUtilisation || d.virtualSize)
      return sum + data + Math.ceil(d.virtualSize / CHUNK) * 1024 + 2 * CHUNK
    }, 0) +
    1024 * 1024
  return {
    ref,
    uuid: String(vm.uuid),
    name: String(vm.name_label),
    powerState: String(vm.power_state),
    disks,
    vifs,
    estimate,
    usbDevices: ((vm.VUSBs as string[] | undefined) ?? []).length,
  }
}

export interface Selection {
  plans: VmPlan[]
  /** Names from vmName that match no VM or several: one line each. */
  problems: { name: string; reason: string }[]
  /** VMs an all* backup leaves out on purpose (exclude, tags): one line each, not errors. */
  skipped: string[]
}

/** What selects the VMs: the mode's `allVms`, its names, and the all* modes' narrowing. */
export interface Choice {
  allVms: boolean
  vmName: string[]
  exclude?: string[] | undefined
  includeTags?: string[] | undefined
  excludeTags?: string[] | undefined
}

/** Why `vm` is left out of an all* backup, if it is (exclude, includeTags, excludeTags). */
function leftOut(vm: Rec, choice: Choice): string | undefined {
  const tags = (vm.tags as string[] | undefined) ?? []
  if (choice.exclude?.some((n) => n === vm.uuid || n === vm.name_label)) return 'it is in exclude'
  const banned = tags.find((t) => choice.excludeTags?.includes(t))
  if (banned !== undefined) return `it carries the tag "${banned}" (excludeTags)`
  if (choice.includeTags?.length && !tags.some((t) => choice.includeTags!.includes(t)))
    return `it carries none of the tags ${choice.includeTags.map((t) => `"${t}"`).join(', ')} (includeTags)`
  return undefined
}

/**
 * The VMs the mode selects: every candidate (allOnline, allOffline) but those exclude and the
 * tags leave out, each of which gets a line; else each vmName by name or uuid.
 */
export function selectVms(view: PoolView, choice: Choice): Selection {
  const candidates = [...view.vms.entries()].filter(([, vm]) => isBackupCandidate(vm))
  if (choice.allVms) {
    const skipped: string[] = []
    const taken = candidates.filter(([, vm]) => {
      const why = leftOut(vm, choice)
      if (why) skipped.push(`${String(vm.name_label)}: not backed up: ${why}`)
      return !why
    })
    return {
      plans: taken.map(([ref]) => planVm(view, ref)).sort((a, b) => a.name.localeCompare(b.name)),
      problems: [],
      skipped: skipped.sort(),
    }
  }
  const names = choice.vmName
  const plans: VmPlan[] = []
  const problems: Selection['problems'] = []
  const seen = new Set<string>()
  for (const name of names) {
    const byUuid = candidates.filter(([, vm]) => vm.uuid === name)
    const matches = byUuid.length ? byUuid : candidates.filter(([, vm]) => vm.name_label === name)
    if (matches.length === 0) {
      const other = [...view.vms.values()].find((vm) => vm.name_label === name || vm.uuid === name)
      const what = other?.is_control_domain
        ? 'is the control domain'
        : other?.is_a_snapshot
          ? 'is a snapshot'
          : other?.is_a_template
            ? 'is a template'
            : undefined
      problems.push({
        name,
        reason: what
          ? `${name} ${what}, not a VM dpxen backs up`
          : `no VM is named ${name} (check vmName; names are case-sensitive)`,
      })
    } else if (matches.length > 1) {
      const uuids = matches.map(([, vm]) => String(vm.uuid)).join(', ')
      problems.push({
        name,
        reason: `${matches.length} VMs are named ${name}; name one by its uuid in vmName (${uuids})`,
      })
    } else if (!seen.has(matches[0]![0])) {
      seen.add(matches[0]![0])
      plans.push(planVm(view, matches[0]![0]))
    }
  }
  return { plans, problems, skipped: [] }
}
