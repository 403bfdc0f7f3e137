// Restore of an online backup: the disks of an existing VM. The VM is stopped, the snapshot XVA
// imported, each of the VM's disks replaced by the imported disk at the same device position
// (bootable flag and mode kept), the imported template record destroyed (its disks kept), and
// only once every new disk is attached are the old disks destroyed. The VM ends in the power
// state it had. On any failure before the swap the import is destroyed and the VM is as it was;
// if putting the old disks back fails, the journal stays for the next run to settle and the VM
// stays halted (it may lack a disk).
import { DpxenError } from '../core/errors.js'
import { throwIfAborted } from '../core/signals.js'
import { destroyUnusedVdis, removeOurVm, RollbackFailed, vmDisks } from '../pool/disks.js'
import { findVm } from '../pool/find.js'
import { JournalRecord } from '../pool/journal.js'
import { runningOrHalted, startVm, stopOptions, whileHalted } from '../pool/lifecycle.js'
import { swapDisks } from '../pool/swap.js'
import {
  importItem,
  moveToOwnSrs,
  planTargets,
  putBackVtpm,
  verifyImported,
  type RestoreContext,
  type RestoreOutcome,
} from './common.js'
import { importAsNewVm } from './copy.js'
import type { RestoreItem } from './find.js'

export async function restoreOnline(ctx: RestoreContext, item: RestoreItem): Promise<RestoreOutcome> {
  const vm = await findVm(
    ctx.host,
    { uuid: item.vmUuid, name: item.vmName },
    { matchByName: ctx.config.matchByName },
  )
  if (!vm) {
    if (!ctx.config.restoreMissingVm) {
      throw new DpxenError(
        'VM_FAILED',
        `VM ${item.vmName} no longer exists: restore its offline backup, or set restoreMissingVm: true to create it from this online backup`,
      )
    }
    return createFromSnapshot(ctx, item)
  }
  const state = await runningOrHalted(ctx.host, vm, item.vmName, 'restoring its disks')
  const targets = planTargets(ctx, item)
  throwIfAborted(ctx.signal)
  // Written before the VM is stopped: a run killed from here on is settled by the next one.
  const journal = await JournalRecord.open(ctx.config.backupDir, {
    kind: 'online',
    vmName: item.vmName,
    vm,
    wasRunning: state === 'Running',
    phase: 'stopping',
  })
  let settled = true
  try {
    return await whileHalted(
      ctx,
      { ref: vm, name: item.vmName, running: state === 'Running' },
      // A swap that could not be undone leaves the VM halted: it may lack a disk.
      {
        ...stopOptions(ctx.config),
        why: 'could not be started again',
        startAgain: () => settled,
      },
      async () => {
        try {
          return await importAndSwap(ctx, item, vm, targets, journal)
        } catch (error) {
          if (error instanceof RollbackFailed) settled = false
          throw error
        }
      },
    )
  } finally {
    // An unsettled swap keeps its journal entry: the next run puts the old disks back.
    if (settled) await journal.close()
  }
}

async function importAndSwap(
  ctx: RestoreContext,
  item: RestoreItem,
  vm: string,
  targets: ReturnType<typeof planTargets>,
  journal: JournalRecord,
): Promise<RestoreOutcome> {
  const imported = await importItem(ctx, item, false, journal)
  const copies: string[] = []
  let keep = false
  try {
    const newDisks = await verifyImported(ctx, item, imported)
    const vdiFor = await moveToOwnSrs(ctx, newDisks, targets, copies)
    throwIfAborted(ctx.signal)
    const old = await vmDisks(ctx.host, vm)
    try {
      await swapDisks(ctx, {
        vm,
        name: item.vmName,
        old,
        fresh: newDisks,
        vdiFor,
        journal,
        extra: { copies },
      })
    } catch (error) {
      // The journal needs the import and the copies to settle a swap it could not undo.
      if (error instanceof RollbackFailed) keep = true
      throw error
    }
    keep = true
    const [vtpm] = item.verified.summary.vtpms
    if (vtpm) await putBackVtpm(ctx, vm, item.vmName, vtpm.contents)
    // The imported record goes; its disks stay, now the VM's (copies made the originals spare).
    await ctx.host.call('VM.destroy', imported)
    const replaced = old.filter((d) => vdiFor.has(d.userdevice)).map((d) => d.vdi)
    const spare = newDisks.filter((d) => vdiFor.get(d.userdevice) !== d.vdi).map((d) => d.vdi)
    await destroyUnusedVdis(ctx, [...replaced, ...spare], item.vmName)
    return { summary: `${newDisks.length} disk(s) restored from ${item.file} (SR "${ctx.target.name}")` }
  } finally {
    if (!keep) {
      await removeOurVm(ctx, imported, 'the imported copy')
      await destroyUnusedVdis(ctx, copies, item.vmName)
    }
  }
}

/** Disaster recovery from an online backup: the snapshot imported as the VM (uuid and MACs kept). */
async function createFromSnapshot(ctx: RestoreContext, item: RestoreItem): Promise<RestoreOutcome> {
  const vm = await importAsNewVm(ctx, item, { restore: true, name: item.vmName })
  const start = ctx.config.startAfterRestore && item.manifest?.vm.powerStateAtBackup === 'Running'
  if (start) await startVm(ctx, vm, item.vmName)
  return {
    summary: `created again from ${item.file} (it no longer existed; restoreMissingVm)${start ? ', started' : ''}`,
  }
}
