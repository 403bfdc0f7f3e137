// What the restore flows share: the context, where each disk goes, the import, checks of an
// imported VM, and moving disks to their own SR. Stopping, starting and VBDs are in pool/.
import type { Config } from '../config/schema.js'
import { performance } from 'node:perf_hooks'
import { DpxenError, messageOf } from '../core/errors.js'
import { formatBytes, formatRate } from '../core/format.js'
import { throwIfAborted } from '../core/signals.js'
import type { PoolContext } from '../pool/context.js'
import { destroyUnusedVdis, removeOurVm, replaceVbds, vmDisks, type VmDisk } from '../pool/disks.js'
import { OC_BACKUP_RUN, OC_CREATED, OC_OWNER, OC_VM_NAME, OC_VM_UUID } from '../pool/tags.js'
import type { PoolView } from '../pool/view.js'
import { importFile } from '../xapi/import.js'
import { refsInResult } from '../xapi/xmlrpc.js'
import type { RestoreItem } from './find.js'
import { checkSr, originalSr, type TargetSr } from './target.js'

export interface RestoreOutcome {
  /** One line for the session: what was done. */
  summary: string
}

export interface RestoreContext extends PoolContext {
  config: Config
  view: PoolView
  /** The SR from `sr` (or the pool's default). */
  target: TargetSr
}

/** Where each of the backup's disks goes, and a check that every SR takes its share. */
export function planTargets(ctx: RestoreContext, item: RestoreItem): Map<string, TargetSr> {
  const byDevice = new Map<string, TargetSr>()
  const need = new Map<string, { sr: TargetSr; bytes: number }>()
  for (const disk of item.verified.summary.disks) {
    const fromManifest = item.manifest?.disks.find((d) => d.userdevice === disk.userdevice)?.srUuid
    const own = ctx.config.originalSr ? originalSr(ctx.view, fromManifest ?? disk.srUuid) : undefined
    const sr = own ?? ctx.target
    byDevice.set(disk.userdevice, sr)
    const entry = need.get(sr.ref) ?? { sr, bytes: 0 }
    entry.bytes += disk.virtualSize
    need.set(sr.ref, entry)
  }
  // The import lands everything in the target SR first, so it must hold it all.
  const total = item.verified.summary.disks.reduce((sum, d) => sum + d.virtualSize, 0)
  checkSr(ctx.view, ctx.target, total)
  for (const { sr, bytes } of need.values()) if (sr.ref !== ctx.target.ref) checkSr(ctx.view, sr, bytes)
  return byDevice
}

/** Imports the file; the caller destroys what it returns when anything later fails. */
export async function importItem(
  ctx: RestoreContext,
  item: RestoreItem,
  restore: boolean,
  journal?: {
    update(change: { phase?: 'importing'; importTask?: string; imported?: string }): Promise<void>
  },
): Promise<string> {
  throwIfAborted(ctx.signal)
  ctx.onStatus?.('importing')
  const started = performance.now()
  const refs = await importFile(ctx.host, {
    file: item.path,
    srRef: ctx.target.ref,
    restore,
    signal: ctx.signal,
    ...(journal
      ? {
          onTask: (task: string) => journal.update({ phase: 'importing', importTask: task }),
          onImported: (refs: string[]) => journal.update({ imported: refs[0]! }),
        }
      : {}),
  })
  const seconds = (performance.now() - started) / 1000
  ctx.log.info(
    `dpxen: ${item.vmName}: imported ${formatBytes(item.verified.bytes)} in ${seconds.toFixed(1)} s (${formatRate(item.verified.bytes, seconds)})`,
  )
  // One VM per file; anything else xapi made (there should be nothing) is the first ref's.
  return refs[0]!
}

/** Checks that the imported VM carries every disk of the backup, at its position, at its size. */
export async function verifyImported(ctx: RestoreContext, item: RestoreItem, vm: string): Promise<VmDisk[]> {
  const disks = await vmDisks(ctx.host, vm)
  for (const want of item.verified.summary.disks) {
    const got = disks.find((d) => d.userdevice === want.userdevice)
    const size = got ? Number(await ctx.host.call('VDI.get_virtual_size', got.vdi)) : -1
    if (size !== want.virtualSize) {
      throw new DpxenError(
        'VM_FAILED',
        `the imported copy lacks disk ${want.userdevice} of ${want.virtualSize} bytes (the import is incomplete)`,
      )
    }
  }
  return disks
}

/** Copies imported disks whose backup came from another SR back there (originalSr). */
export async function moveToOwnSrs(
  ctx: RestoreContext,
  disks: VmDisk[],
  targets: Map<string, TargetSr>,
  made: string[],
): Promise<Map<string, string>> {
  const vdiFor = new Map<string, string>()
  for (const disk of disks) {
    const sr = targets.get(disk.userdevice)
    if (!sr || sr.ref === ctx.target.ref) {
      vdiFor.set(disk.userdevice, disk.vdi)
      continue
    }
    throwIfAborted(ctx.signal)
    ctx.onStatus?.(`copying disk ${disk.userdevice} to "${sr.name}"`)
    const [copy] = refsInResult(await ctx.host.callAsync('VDI.copy', [disk.vdi, sr.ref]))
    if (!copy)
      throw new DpxenError('VM_FAILED', `copying disk ${disk.userdevice} to SR "${sr.name}" returned no disk`)
    made.push(copy)
    vdiFor.set(disk.userdevice, copy)
  }
  return vdiFor
}

/** Points the VM's positions at the copies made on the disks' own SRs, then drops the originals. */
export async function useCopies(
  ctx: RestoreContext,
  vm: string,
  name: string,
  disks: VmDisk[],
  vdiFor: Map<string, string>,
): Promise<void> {
  const moved = disks.filter((d) => vdiFor.get(d.userdevice) !== d.vdi)
  if (moved.length === 0) return
  await replaceVbds(ctx, vm, name, moved, moved, vdiFor)
  await destroyUnusedVdis(
    ctx,
    moved.map((d) => d.vdi),
    name,
  )
}

/**
 * Imports the file as a whole VM (restore: keeping its uuid and MACs), checks it, puts each disk
 * on its own SR, and runs `finish` on it; if any of that fails, what was imported goes.
 */
export async function importWholeVm(
  ctx: RestoreContext,
  item: RestoreItem,
  options: {
    restore: boolean
    targets: Map<string, TargetSr>
    journal: Parameters<typeof importItem>[3]
    finish: (vm: string) => Promise<void>
  },
): Promise<string> {
  const vm = await importItem(ctx, item, options.restore, options.journal)
  const copies: string[] = []
  let kept = false
  try {
    const disks = await verifyImported(ctx, item, vm)
    await useCopies(ctx, vm, item.vmName, disks, await moveToOwnSrs(ctx, disks, options.targets, copies))
    await options.finish(vm)
    throwIfAborted(ctx.signal)
    kept = true
    return vm
  } finally {
    if (!kept) {
      await removeOurVm(ctx, vm, 'the imported copy')
      await destroyUnusedVdis(ctx, copies, item.vmName)
    }
  }
}

/** Makes an imported VM an ordinary VM named `name`: not a template, without dpxen's snapshot tags. */
export async function asOrdinaryVm(ctx: RestoreContext, vm: string, name: string): Promise<void> {
  await ctx.host.call('VM.set_is_a_template', vm, false)
  await ctx.host.call('VM.set_name_label', vm, name)
  const oc = await ctx.host.call<Record<string, string>>('VM.get_other_config', vm)
  for (const key of [OC_BACKUP_RUN, OC_CREATED, OC_OWNER, OC_VM_NAME, OC_VM_UUID]) {
    if (key in oc) await ctx.host.call('VM.remove_from_other_config', vm, key)
  }
}

/**
 * Puts a backup's vTPM contents back on the VM (halted, its disks just swapped for the backup's):
 * into its vTPM, or a new one if it has none now. A vTPM sealed the keys of the disks it was
 * saved with (BitLocker), so disks and vTPM come back together. A failure is a warning: the
 * disks are restored, and the VM keeps the vTPM it had.
 */
export async function putBackVtpm(
  ctx: RestoreContext,
  vm: string,
  name: string,
  contents: string,
): Promise<void> {
  try {
    const [own] = await ctx.host.call<string[]>('VM.get_VTPMs', vm)
    const vtpm = own ?? (await ctx.host.call<string>('VTPM.create', vm, false))
    await ctx.host.call('VTPM.set_contents', vtpm, contents)
    ctx.log.info(`dpxen: ${name}: its vTPM holds what it held at the backup`)
  } catch (error) {
    ctx.log.info(
      `dpxen: warning: ${name}: its vTPM could not be put back as at the backup (${messageOf(error)}); it keeps the vTPM it had`,
    )
  }
}
