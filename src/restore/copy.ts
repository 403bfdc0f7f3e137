// Restore as a copy (restoreAs: copy): the backup becomes a new VM beside the original, with a
// new uuid and new MAC addresses, named by copyName, on the chosen SR, from an online or an
// offline backup. The original is not looked at, let alone stopped. The copy is left halted: it
// would otherwise boot with the original's addresses inside the guest.
import { diskVdis } from '../pool/disks.js'
import { JournalRecord } from '../pool/journal.js'
import {
  asOrdinaryVm,
  importWholeVm,
  planTargets,
  type RestoreContext,
  type RestoreOutcome,
} from './common.js'
import type { RestoreItem } from './find.js'

/** The copy's name from the template: {name}, {date} (the backup's, UTC, to the minute), {uuid}. */
export function copyName(
  template: string,
  item: { vmName: string; vmUuid: string; started?: string | undefined },
  now = new Date(),
): string {
  const when = item.started ? new Date(item.started) : now
  const date = Number.isNaN(when.getTime()) ? now : when
  return template
    .replaceAll('{name}', item.vmName)
    .replaceAll('{date}', date.toISOString().slice(0, 16).replace('T', ' '))
    .replaceAll('{uuid}', item.vmUuid.slice(0, 8))
}

/**
 * A new VM from the file, named `name`, where no VM of the backup's is touched: journalled so an
 * interrupted run only leaves the import to remove. restore: keep the backup's uuid and MACs.
 */
export async function importAsNewVm(
  ctx: RestoreContext,
  item: RestoreItem,
  options: {
    restore: boolean
    name: string
    /** other_config set on the VM and its disks before the journal lets it go (a health check's copy). */
    tags?: Record<string, string>
  },
): Promise<string> {
  const targets = planTargets(ctx, item)
  const journal = await JournalRecord.open(ctx.config.backupDir, {
    kind: 'offline',
    vmName: options.name,
    vm: '',
    wasRunning: false,
    phase: 'stopping',
  })
  try {
    const vm = await importWholeVm(ctx, item, {
      restore: options.restore,
      targets,
      journal,
      finish: async (vm) => {
        await asOrdinaryVm(ctx, vm, options.name)
        await tagVm(ctx, vm, options.tags)
      },
    })
    await journal.update({ phase: 'finishing' })
    return vm
  } finally {
    await journal.close()
  }
}

/**
 * Sets other_config keys on a VM dpxen made and on each of its disks: a run killed between
 * destroying the VM and its disks leaves disks that still say whose they are.
 */
export async function tagVm(
  ctx: RestoreContext,
  vm: string,
  tags: Record<string, string> = {},
): Promise<void> {
  if (!Object.keys(tags).length) return
  const objects: [string, string][] = [
    ['VM', vm],
    ...(await diskVdis(ctx.host, vm)).map((v) => ['VDI', v] as [string, string]),
  ]
  for (const [cls, ref] of objects)
    for (const [key, value] of Object.entries(tags)) {
      await ctx.host.call(`${cls}.remove_from_other_config`, ref, key)
      await ctx.host.call(`${cls}.add_to_other_config`, ref, key, value)
    }
}

export async function restoreCopy(ctx: RestoreContext, item: RestoreItem): Promise<RestoreOutcome> {
  const name = copyName(ctx.config.copyName, { ...item, started: item.manifest?.started })
  const vm = await importAsNewVm(ctx, item, { restore: false, name })
  const uuid = await ctx.host.call<string>('VM.get_uuid', vm)
  return {
    summary: `restored from ${item.file} as a copy, "${name}" (uuid ${uuid}, new MAC addresses, halted) on SR "${ctx.target.name}"; ${item.vmName} was not touched`,
  }
}
