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
import { throwIfAborted } from '../core/signals.js'
import { destroyUnusedVdis, vmDisks } from '../pool/disks.js'
import { findVm } from '../pool/find.js'
import { JournalRecord } from '../pool/journal.js'
import { OC_RESTORED_FROM } from '../pool/tags.js'
import { runningOrHalted, startVm, stopOptions, whileHalted } from '../pool/lifecycle.js'
import { importWholeVm, planTargets, type RestoreContext, type RestoreOutcome } from './common.js'
import type { RestoreItem } from './find.js'

type Rec = Record<string, unknown>

export async function restoreOffline(ctx: RestoreContext, item: RestoreItem): Promise<RestoreOutcome> {
  const targets = planTargets(ctx, item)
  const old = await findVm(
    ctx.host,
    { uuid: item.vmUuid, name: item.vmName },
    { matchByName: ctx.config.matchByName },
  )
  const oldState = old ? await runningOrHalted(ctx.host, old, item.vmName, 'restoring it') : 'absent'
  throwIfAborted(ctx.signal)
  const start = ctx.config.startAfterRestore && item.manifest?.vm.powerStateAtBackup === 'Running'
  // Written before the VM is stopped: a run killed from here on is settled by the next one.
  const journal = await JournalRecord.open(ctx.config.backupDir, {
    kind: 'offline',
    vmName: item.vmName,
    vm: old ?? '',
    wasRunning: oldState === 'Running',
    phase: 'stopping',
    startNew: start,
  })
  let replaced = false
  try {
    const vm = await whileHalted(
      ctx,
      { ref: old ?? '', name: item.vmName, running: oldState === 'Running' },
      {
        ...stopOptions(ctx.config),
        why: 'could not be started again',
        startAgain: () => !replaced,
      },
      async () => {
        const vm = await importWholeVm(ctx, item, {
          restore: old === undefined,
          targets,
          journal,
          finish: async (vm) => {
            if (old) await takeIdentity(ctx, item, vm)
          },
        })
        if (old) {
          await replaceOld(ctx, item, old, journal, () => (replaced = true))
        }
        return vm
      },
    )
    await journal.update({ phase: 'finishing' })
    if (start) await startVm(ctx, vm, item.vmName)
    const how = old
      ? 'replacing the VM of that name (new uuid, MACs kept)'
      : 'as a new VM (uuid and MACs kept)'
    return {
      summary: `restored from ${item.file} ${how} on SR "${ctx.target.name}"${start ? ', started' : ', halted'}`,
    }
  } finally {
    await journal.close()
  }
}

/** Destroys the old VM, then its disks, once the copy is verified (journalled first). */
async function replaceOld(
  ctx: RestoreContext,
  item: RestoreItem,
  old: string,
  journal: JournalRecord,
  destroyed: () => void,
): Promise<void> {
  ctx.onStatus?.('removing the old VM')
  const oldDisks = (await vmDisks(ctx.host, old)).map((d) => d.vdi)
  await journal.update({
    phase: 'replacing',
    oldDisks: Object.fromEntries(oldDisks.map((vdi, i) => [String(i), { vdi, vbd: {} }])),
  })
  await ctx.host.call('VM.destroy', old)
  destroyed()
  await destroyUnusedVdis(ctx, oldDisks, `the old ${item.vmName}`)
}

/** Gives the imported copy the backup's MAC addresses and MAC seed (restore=false changed them). */
async function takeIdentity(ctx: RestoreContext, item: RestoreItem, vm: string): Promise<void> {
  ctx.onStatus?.('restoring the MAC addresses')
  const wanted = new Map(item.verified.summary.vifs.map((v) => [v.device, v.mac]))
  for (const vif of await ctx.host.call<string[]>('VM.get_VIFs', vm)) {
    const rec = await ctx.host.call<Rec>('VIF.get_record', vif)
    const mac = wanted.get(String(rec.device))
    if (!mac || mac === rec.MAC) continue
    await ctx.host.call('VIF.destroy', vif)
    await ctx.host.call('VIF.create', {
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
  // The new VM stands for the backup's: the next restore of that backup finds it by this.
  await ctx.host.call('VM.remove_from_other_config', vm, OC_RESTORED_FROM)
  await ctx.host.call('VM.add_to_other_config', vm, OC_RESTORED_FROM, item.vmUuid)
  const seed = item.verified.summary.vm.otherConfig.mac_seed
  if (seed) {
    await ctx.host.call('VM.remove_from_other_config', vm, 'mac_seed')
    await ctx.host.call('VM.add_to_other_config', vm, 'mac_seed', seed)
  }
}
