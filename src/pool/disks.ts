// A VM's disks: listing them, pointing a VM's positions at other disks (all or nothing), and
// destroying disks and VMs. xapi says VDI_IN_USE for a while after an export or a VBD.destroy,
// so destroying a disk retries. A disk dpxen cannot remove is kept and said so: keeping a disk
// never loses data.
import { setTimeout as sleep } from 'node:timers/promises'
import { DpxenError, isXapiError, messageOf } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import type { Host } from '../xapi/host.js'
import type { PoolContext } from './context.js'
import type { DiskSlot } from './view.js'

type Rec = Record<string, unknown>

/** A disk of a VM with everything its VBD carries, so the VBD can be made again like it. */
export interface VmDisk extends DiskSlot {
  otherConfig: Record<string, string>
  qosType: string
  qosParams: Record<string, string>
}

/** The disk VBDs of a VM (not CDs, not empty), by device position. */
export async function vmDisks(host: Host, vm: string): Promise<VmDisk[]> {
  const out: VmDisk[] = []
  for (const vbd of await host.call<string[]>('VM.get_VBDs', vm)) {
    const r = await host.call<Rec>('VBD.get_record', vbd)
    if (r.type === 'CD' || r.empty === true || r.VDI === 'OpaqueRef:NULL') continue
    out.push({
      vbd,
      vdi: String(r.VDI),
      userdevice: String(r.userdevice),
      device: String(r.device ?? ''),
      bootable: r.bootable === true,
      mode: String(r.mode),
      otherConfig: (r.other_config ?? {}) as Record<string, string>,
      qosType: String(r.qos_algorithm_type ?? ''),
      qosParams: (r.qos_algorithm_params ?? {}) as Record<string, string>,
    })
  }
  return out.sort((a, b) => Number(a.userdevice) - Number(b.userdevice))
}

/** The VBD.create record that attaches `vdi` to `vm` at the position, and like, of `like`. */
export function vbdRecord(vm: string, vdi: string, like: VmDisk): Rec {
  return {
    VM: vm,
    VDI: vdi,
    userdevice: like.userdevice,
    device: like.device,
    bootable: like.bootable,
    mode: like.mode,
    type: 'Disk',
    empty: false,
    unpluggable: true,
    other_config: like.otherConfig,
    qos_algorithm_type: like.qosType,
    qos_algorithm_params: like.qosParams,
  }
}

/** A swap whose undo failed: the VM may lack a disk until the journal is settled. */
export class RollbackFailed extends DpxenError {
  constructor(message: string, cause: unknown) {
    super('VM_FAILED', message, { cause })
    this.name = 'RollbackFailed'
  }
}

/**
 * Points each position of `vm` named in `vdiFor` at its new disk: the old VBD goes, a new one
 * like it comes. All or nothing: if a step fails, the VBDs made are removed and the old ones
 * made again. If that undo fails too, it says so loudly (each position it could not put back)
 * and throws RollbackFailed; the old disks are never destroyed here.
 */
export async function replaceVbds(
  ctx: PoolContext,
  vm: string,
  name: string,
  old: VmDisk[],
  fresh: VmDisk[],
  vdiFor: Map<string, string>,
): Promise<void> {
  const undo: { position: string; vdi: string; step: () => Promise<unknown> }[] = []
  try {
    for (const disk of fresh) {
      const before = old.find((d) => d.userdevice === disk.userdevice)
      if (before) {
        await ctx.host.call('VBD.destroy', before.vbd)
        undo.push({
          position: before.userdevice,
          vdi: before.vdi,
          step: () => ctx.host.call('VBD.create', vbdRecord(vm, before.vdi, before)),
        })
      }
      const vbd = await ctx.host.call<string>(
        'VBD.create',
        vbdRecord(vm, vdiFor.get(disk.userdevice)!, before ?? disk),
      )
      undo.push({ position: disk.userdevice, vdi: '', step: () => ctx.host.call('VBD.destroy', vbd) })
    }
  } catch (error) {
    const failed: string[] = []
    for (const { position, vdi, step } of undo.reverse()) {
      try {
        await step()
      } catch (undoError) {
        const what = vdi
          ? `put disk ${vdi} back at position ${position}`
          : `remove the new disk at position ${position}`
        failed.push(position)
        ctx.log.info(
          `dpxen: WARNING: ${name}: could not ${what}: ${messageOf(undoError)} (the next dpxen run, or dpxen recover, puts the old disks back; do not start ${name} before)`,
        )
      }
    }
    if (failed.length)
      throw new RollbackFailed(
        `${messageOf(error)}; putting the old disks back failed at position(s) ${failed.join(', ')}: run dpxen recover before starting ${name}`,
        error,
      )
    throw error
  }
}

/** The disks of a VM or snapshot (not CDs). */
export async function diskVdis(host: Host, vmRef: string): Promise<string[]> {
  const vdis: string[] = []
  for (const vbd of await host.call<string[]>('VM.get_VBDs', vmRef)) {
    const rec = await host.call<Rec>('VBD.get_record', vbd)
    if (rec.type !== 'CD' && rec.VDI !== 'OpaqueRef:NULL') vdis.push(String(rec.VDI))
  }
  return vdis
}

/**
 * How long a destroy retries a busy disk once the run is aborted (SIGTERM): a host whose storage
 * hangs holds the disk for as long as the hang lasts, and Data Protector is waiting for the hook
 * to end. What is still busy then is left, tagged, for the next run's sweep.
 */
export const ABORTED_RETRY_MS = 5000

/** Retries of a busy destroy: host.retryDelays, only the first ABORTED_RETRY_MS of them after an abort. */
function retryDelays(host: Host, signal: AbortSignal | undefined): readonly number[] {
  if (!signal?.aborted) return host.retryDelays
  let total = 0
  return host.retryDelays.filter((d) => (total += d) <= ABORTED_RETRY_MS)
}

/**
 * Destroys a VDI, retrying while xapi says it is in use (host.retryDelays; bounded once `signal`
 * has fired). A VDI already gone is fine.
 */
export async function destroyVdi(host: Host, vdi: string, log: Logger, signal?: AbortSignal): Promise<void> {
  const delays = retryDelays(host, signal)
  for (let attempt = 0; ; attempt++) {
    try {
      await host.call('VDI.destroy', vdi)
      return
    } catch (error) {
      if (isXapiError(error, 'HANDLE_INVALID')) return
      if (!isXapiError(error, 'VDI_IN_USE') || attempt >= delays.length) throw error
      log.debug(`VDI.destroy ${vdi}: in use, retrying in ${delays[attempt]} ms`)
      await sleep(delays[attempt]!)
    }
  }
}

/** Destroys a VM (or snapshot) and its disks (not CDs). A VM already gone is fine. */
export async function destroyVmAndDisks(
  host: Host,
  vm: string,
  log: Logger,
  signal?: AbortSignal,
): Promise<void> {
  let vdis: string[]
  try {
    vdis = await diskVdis(host, vm)
  } catch (error) {
    if (isXapiError(error, 'HANDLE_INVALID')) return
    throw error
  }
  await host.call('VM.destroy', vm).catch((error: unknown) => {
    if (!isXapiError(error, 'HANDLE_INVALID')) throw error
  })
  for (const vdi of vdis) await destroyVdi(host, vdi, log, signal)
}

/** Removes a VM dpxen made and no longer needs; a failure is a warning naming it, not fatal. */
export async function removeOurVm(ctx: PoolContext, vm: string, what: string): Promise<void> {
  try {
    await destroyVmAndDisks(ctx.host, vm, ctx.log)
  } catch (error) {
    ctx.log.info(
      `dpxen: warning: ${what} (${vm}) could not be removed: ${messageOf(error)} (remove it and its disks by hand)`,
    )
  }
}

/** Destroys disks nobody uses any more; a failure is a warning, not fatal (no data is lost by keeping a disk). */
export async function destroyUnusedVdis(ctx: PoolContext, vdis: string[], what: string): Promise<void> {
  for (const vdi of vdis) {
    try {
      if (!(await exists(ctx.host, 'VDI', vdi))) continue
      const vbds = await ctx.host.call<string[]>('VDI.get_VBDs', vdi)
      if (vbds.length) {
        ctx.log.info(`dpxen: warning: ${what}: disk ${vdi} is still used by another VM and was kept`)
        continue
      }
      await destroyVdi(ctx.host, vdi, ctx.log)
    } catch (error) {
      ctx.log.info(`dpxen: warning: ${what}: disk ${vdi} could not be removed: ${messageOf(error)}`)
    }
  }
}

/** Whether an object still exists. */
export async function exists(host: Host, cls: string, ref: string): Promise<boolean> {
  if (!ref) return false
  try {
    await host.call(`${cls}.get_uuid`, ref)
    return true
  } catch (error) {
    if (isXapiError(error, 'HANDLE_INVALID')) return false
    throw error
  }
}
