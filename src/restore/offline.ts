// Restore of an offline backup: the whole VM.
//
// No VM of that identity: the XVA is imported with restore=true, so the uuid and the MAC
// addresses are kept.
//
// A VM of that name or uuid exists: it is stopped. xapi's restore=true would replace it by
// destroying its record before the new disks are even written (import.ml, "Replace"), so a
// failed import would lose it. dpxen instead imports beside it (restore=false), checks the copy,
// gives it the backup's MAC addresses and MAC seed, and only then destroys the old VM and its
// disks. Exactly one VM of that name remains and no disk is orphaned; its uuid is new, as it
// always was with the original integration. If anything fails before that, the copy is removed
// and the old VM is as it was (started again if it was running).
//
// The restored VM is left halted, as xapi imports it; with startAfterRestore it is started
// when it was running at backup time.
import { DpxenError, messageOf } from '../errors.js'
import { destroyVmAndDisks } from '../backup/snapshots.js'
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
} from './common.js'
import type { RestoreItem } from './find.js'
import { JournalRecord } from './journal.js'
import { findVm, type RestoreOutcome } from './online.js'

type Rec = Record<string, unknown>

export async function restoreOffline(ctx: RestoreContext, item: RestoreItem): Promise<RestoreOutcome> {
  const targets = planTargets(ctx, item)
  const old = await findVm(ctx, item)
  let oldState = 'absent'
  if (old) {
    oldState = await ctx.session.call<string>('VM.get_power_state', old)
    if (oldState !== 'Running' && oldState !== 'Halted') {
      throw new DpxenError(
        'VM_FAILED',
        `${item.vmName} is ${oldState.toLowerCase()}; resume it or shut it down before restoring it`,
      )
    }
  }
  checkAbort(ctx.signal)
  const wasRunning = item.manifest?.vm.powerStateAtBackup === 'Running'
  const start = ctx.config.startAfterRestore && wasRunning
  // Written before the VM is stopped: a run killed from here on is settled by the next one.
  const journal = await JournalRecord.open(ctx.config.backupDir, {
    kind: 'offline',
    vmName: item.vmName,
    vm: old ?? '',
    wasRunning: oldState === 'Running',
    phase: 'stopping',
    startNew: start,
  })
  try {
    return await replace()
  } finally {
    await journal.close()
  }

  async function replace(): Promise<RestoreOutcome> {
    if (old && oldState === 'Running') await stopVm(ctx, old, item.vmName)
    let replaced = false
    try {
      const vm = await importItem(ctx, item, old === undefined, journal)
      const copies: string[] = []
      let kept = false
      try {
        const disks = await verifyImported(ctx, item, vm)
        const vdiFor = await moveToOwnSrs(ctx, disks, targets, copies)
        if (copies.length) await useCopies(ctx, vm, disks, vdiFor, item.vmName)
        if (old) await takeIdentity(ctx, item, vm)
        checkAbort(ctx.signal)
        kept = true
      } finally {
        if (!kept) {
          await destroyVmAndDisks(ctx.session, vm, ctx.log, ctx.retryDelaysMs).catch((error: unknown) =>
            ctx.log.info(`dpxen: warning: the imported copy could not be removed: ${messageOf(error)}`),
          )
          await destroyUnusedVdis(ctx, copies, item.vmName)
        }
      }
      if (old) {
        ctx.onStatus?.('removing the old VM')
        const oldDisks = (await vmDisks(ctx.session, old)).map((d) => d.vdi)
        await journal.update({
          phase: 'replacing',
          oldDisks: Object.fromEntries(oldDisks.map((vdi, i) => [String(i), { vdi, vbd: {} }])),
        })
        await ctx.session.call('VM.destroy', old)
        replaced = true
        await destroyUnusedVdis(ctx, oldDisks, `the old ${item.vmName}`)
      }
      await journal.update({ phase: 'finishing' })
      if (start) await startVm(ctx, vm, item.vmName)
      const how = old
        ? 'replacing the VM of that name (new uuid, MACs kept)'
        : 'as a new VM (uuid and MACs kept)'
      return {
        summary: `restored from ${item.file} ${how} on SR "${ctx.target.name}"${start ? ', started' : ', halted'}`,
      }
    } finally {
      if (old && !replaced && oldState === 'Running') {
        ctx.onStatus?.('starting the old VM again')
        await startVm(ctx, old, item.vmName)
      }
    }
  }
}

/** Points the VM's VBDs at the copies made on the disks' own SRs and drops the originals. */
async function useCopies(
  ctx: RestoreContext,
  vm: string,
  disks: Awaited<ReturnType<typeof vmDisks>>,
  vdiFor: Map<string, string>,
  name: string,
): Promise<void> {
  for (const disk of disks) {
    const copy = vdiFor.get(disk.userdevice)
    if (!copy || copy === disk.vdi) continue
    await ctx.session.call('VBD.destroy', disk.vbd)
    await ctx.session.call('VBD.create', {
      VM: vm,
      VDI: copy,
      userdevice: disk.userdevice,
      device: disk.device,
      bootable: disk.bootable,
      mode: disk.mode,
      type: 'Disk',
      empty: false,
      unpluggable: true,
      other_config: disk.otherConfig,
      qos_algorithm_type: disk.qosType,
      qos_algorithm_params: disk.qosParams,
    })
    await destroyUnusedVdis(ctx, [disk.vdi], name)
  }
}

/** Gives the imported copy the backup's MAC addresses and MAC seed (restore=false changed them). */
async function takeIdentity(ctx: RestoreContext, item: RestoreItem, vm: string): Promise<void> {
  ctx.onStatus?.('restoring the MAC addresses')
  const wanted = new Map(item.verified.summary.vifs.map((v) => [v.device, v.mac]))
  for (const vif of await ctx.session.call<string[]>('VM.get_VIFs', vm)) {
    const rec = await ctx.session.call<Rec>('VIF.get_record', vif)
    const mac = wanted.get(String(rec.device))
    if (!mac || mac === rec.MAC) continue
    await ctx.session.call('VIF.destroy', vif)
    await ctx.session.call('VIF.create', {
      device: rec.device,
      network: rec.network,
      VM: vm,
      MAC: mac,
      MTU: rec.MTU,
      other_config: rec.other_config ?? {},
      qos_algorithm_type: rec.qos_algorithm_type ?? '',
      qos_algorithm_params: rec.qos_algorithm_params ?? {},
      locking_mode: rec.locking_mode ?? 'network_default',
      ipv4_allowed: rec.ipv4_allowed ?? [],
      ipv6_allowed: rec.ipv6_allowed ?? [],
    })
  }
  const seed = item.verified.summary.vm.otherConfig.mac_seed
  if (seed) {
    await ctx.session.call('VM.remove_from_other_config', vm, 'mac_seed')
    await ctx.session.call('VM.add_to_other_config', vm, 'mac_seed', seed)
  }
}
