// Restore of an online backup: the disks of an existing VM. The VM is stopped, the snapshot XVA
// imported, each of the VM's disks replaced by the imported disk at the same device position
// (bootable flag and mode kept), the imported template record destroyed (its disks kept), and
// only once every new disk is attached are the old disks destroyed. The VM ends in the power
// state it had. On any failure before the swap the import is destroyed and the VM is as it was.
import { DpxenError, isXapiError, messageOf } from '../errors.js'
import { destroyVmAndDisks } from '../backup/snapshots.js'
import { OC_BACKUP_RUN, OC_CREATED, OC_OWNER, OC_VM_NAME, OC_VM_UUID } from '../backup/tags.js'
import {
  checkAbort,
  destroyUnusedVdis,
  importItem,
  moveToOwnSrs,
  planTargets,
  startVm,
  stopVm,
  verifyImported,
  vmDisks,
  type RestoreContext,
  type VmDisk,
} from './common.js'
import { critical } from '../critical.js'
import type { RestoreItem } from './find.js'
import { JournalRecord } from './journal.js'

export interface RestoreOutcome {
  /** One line for the session: what was done. */
  summary: string
}

/** The VM a backup belongs to: by uuid, else by a unique name. */
export async function findVm(ctx: RestoreContext, item: RestoreItem): Promise<string | undefined> {
  try {
    return await ctx.session.call<string>('VM.get_by_uuid', item.vmUuid)
  } catch (error) {
    if (!isXapiError(error, 'UUID_INVALID', 'HANDLE_INVALID')) throw error
  }
  const refs = await ctx.session.call<string[]>('VM.get_by_name_label', item.vmName)
  const vms: string[] = []
  for (const ref of refs) {
    const rec = await ctx.session.call<Record<string, unknown>>('VM.get_record', ref)
    if (!rec.is_a_template && !rec.is_a_snapshot && !rec.is_control_domain) vms.push(ref)
  }
  if (vms.length > 1)
    throw new DpxenError(
      'VM_FAILED',
      `${vms.length} VMs are named ${item.vmName} and none has the backup's uuid; rename the others first`,
    )
  return vms[0]
}

export async function restoreOnline(ctx: RestoreContext, item: RestoreItem): Promise<RestoreOutcome> {
  const vm = await findVm(ctx, item)
  if (!vm) {
    if (!ctx.config.restoreMissingVm) {
      throw new DpxenError(
        'VM_FAILED',
        `VM ${item.vmName} no longer exists: restore its offline backup, or set restoreMissingVm: true to create it from this online backup`,
      )
    }
    return createFromSnapshot(ctx, item)
  }
  const state = await ctx.session.call<string>('VM.get_power_state', vm)
  if (state !== 'Running' && state !== 'Halted') {
    throw new DpxenError(
      'VM_FAILED',
      `${item.vmName} is ${state.toLowerCase()}; resume it or shut it down before restoring its disks`,
    )
  }
  const targets = planTargets(ctx, item)
  checkAbort(ctx.signal)
  // Written before the VM is stopped: a run killed from here on is settled by the next one.
  const journal = await JournalRecord.open(ctx.config.backupDir, {
    kind: 'online',
    vmName: item.vmName,
    vm,
    wasRunning: state === 'Running',
    phase: 'stopping',
  })
  try {
    if (state === 'Running') await stopVm(ctx, vm, item.vmName)
    try {
      return await swapDisks(ctx, item, vm)
    } finally {
      if (state === 'Running') {
        ctx.onStatus?.('starting again')
        await startVm(ctx, vm, item.vmName)
      }
    }
  } finally {
    await journal.close()
  }

  async function swapDisks(ctx: RestoreContext, item: RestoreItem, vm: string): Promise<RestoreOutcome> {
    const imported = await importItem(ctx, item, false, journal)
    const copies: string[] = []
    let swapped = false
    try {
      const newDisks = await verifyImported(ctx, item, imported)
      const vdiFor = await moveToOwnSrs(ctx, newDisks, targets, copies)
      checkAbort(ctx.signal)
      ctx.onStatus?.('replacing the disks')
      const old = await vmDisks(ctx.session, vm)
      await journal.update({
        phase: 'swapping',
        copies,
        oldDisks: Object.fromEntries(
          old.map((d) => [d.userdevice, { vdi: d.vdi, vbd: vbdRecord(vm, d.vdi, d) }]),
        ),
        newDisks: Object.fromEntries(newDisks.map((d) => [d.userdevice, vdiFor.get(d.userdevice)!])),
      })
      await critical(`the disk swap of ${item.vmName}`, () => replaceVbds(ctx, vm, old, newDisks, vdiFor))
      swapped = true
      await journal.update({ phase: 'finishing' })
      // The imported record goes; its disks stay, now the VM's (copies made the originals spare).
      await ctx.session.call('VM.destroy', imported)
      const replaced = old.filter((d) => vdiFor.has(d.userdevice)).map((d) => d.vdi)
      const spare = newDisks.filter((d) => vdiFor.get(d.userdevice) !== d.vdi).map((d) => d.vdi)
      await destroyUnusedVdis(ctx, [...replaced, ...spare], item.vmName)
      return { summary: `${newDisks.length} disk(s) restored from ${item.file} (SR "${ctx.target.name}")` }
    } finally {
      if (!swapped) {
        await destroyVmAndDisks(ctx.session, imported, ctx.log, ctx.retryDelaysMs).catch((error: unknown) =>
          ctx.log.info(`dpxen: warning: the imported copy could not be removed: ${messageOf(error)}`),
        )
        await destroyUnusedVdis(ctx, copies, item.vmName)
      }
    }
  }
}

/**
 * Swaps each old VBD for one on the new disk at the same position. All or nothing: if a step
 * fails, the VBDs made are removed and the old ones put back.
 */
async function replaceVbds(
  ctx: RestoreContext,
  vm: string,
  old: VmDisk[],
  fresh: VmDisk[],
  vdiFor: Map<string, string>,
): Promise<void> {
  const undo: (() => Promise<void>)[] = []
  try {
    for (const disk of fresh) {
      const before = old.find((d) => d.userdevice === disk.userdevice)
      if (before) {
        await ctx.session.call('VBD.destroy', before.vbd)
        undo.push(async () => {
          await ctx.session.call('VBD.create', vbdRecord(vm, before.vdi, before))
        })
      }
      const vbd = await ctx.session.call<string>(
        'VBD.create',
        vbdRecord(vm, vdiFor.get(disk.userdevice)!, before ?? disk),
      )
      undo.push(async () => {
        await ctx.session.call('VBD.destroy', vbd)
      })
    }
  } catch (error) {
    for (const step of undo.reverse()) await step().catch(() => undefined)
    throw error
  }
}

function vbdRecord(vm: string, vdi: string, like: VmDisk): Record<string, unknown> {
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

/** Disaster recovery from an online backup: the snapshot imported as the VM (uuid and MACs kept). */
async function createFromSnapshot(ctx: RestoreContext, item: RestoreItem): Promise<RestoreOutcome> {
  const targets = planTargets(ctx, item)
  const journal = await JournalRecord.open(ctx.config.backupDir, {
    kind: 'offline',
    vmName: item.vmName,
    vm: '',
    wasRunning: false,
    phase: 'stopping',
  })
  try {
    return await create()
  } finally {
    await journal.close()
  }

  async function create(): Promise<RestoreOutcome> {
    const vm = await importItem(ctx, item, true, journal)
    const copies: string[] = []
    let done = false
    try {
      const disks = await verifyImported(ctx, item, vm)
      const vdiFor = await moveToOwnSrs(ctx, disks, targets, copies)
      if (copies.length) {
        const old = disks.filter((d) => vdiFor.get(d.userdevice) !== d.vdi)
        await replaceVbds(ctx, vm, old, old, vdiFor)
        await destroyUnusedVdis(
          ctx,
          old.map((d) => d.vdi),
          item.vmName,
        )
      }
      await ctx.session.call('VM.set_is_a_template', vm, false)
      await ctx.session.call('VM.set_name_label', vm, item.vmName)
      const oc = await ctx.session.call<Record<string, string>>('VM.get_other_config', vm)
      for (const key of [OC_BACKUP_RUN, OC_CREATED, OC_OWNER, OC_VM_NAME, OC_VM_UUID]) {
        if (key in oc) await ctx.session.call('VM.remove_from_other_config', vm, key)
      }
      done = true
      await journal.update({ phase: 'finishing' })
    } finally {
      if (!done) {
        await destroyVmAndDisks(ctx.session, vm, ctx.log, ctx.retryDelaysMs).catch(() => undefined)
        await destroyUnusedVdis(ctx, copies, item.vmName)
      }
    }
    const wasRunning = item.manifest?.vm.powerStateAtBackup === 'Running'
    if (ctx.config.startAfterRestore && wasRunning) await startVm(ctx, vm, item.vmName)
    return {
      summary: `created again from ${item.file} (it no longer existed; restoreMissingVm)${ctx.config.startAfterRestore && wasRunning ? ', started' : ''}`,
    }
  }
}
