// What the restore flows share: the context, disk listings, checks of an imported VM, moving
// disks to their own SR, stopping and starting the VM.
import type { Config } from '../config/schema.js'
import { performance } from 'node:perf_hooks'
import { DpxenError, messageOf } from '../errors.js'
import { formatBytes, formatRate } from '../format.js'
import type { Logger } from '../log.js'
import type { DiskSlot, PoolView } from '../backup/select.js'
import { destroyVdi } from '../backup/snapshots.js'
import type { StreamAgents } from '../xapi/http.js'
import { importFile } from '../xapi/import.js'
import type { XapiSession } from '../xapi/session.js'
import { callAsync, cancelTask, destroyTask, waitTask } from '../xapi/tasks.js'
import type { RestoreItem } from './find.js'
import { checkSr, originalSr, type TargetSr } from './target.js'

type Rec = Record<string, unknown>

export interface RestoreContext {
  session: XapiSession
  agents: StreamAgents
  log: Logger
  config: Config
  view: PoolView
  /** The SR from `sr` (or the pool's default). */
  target: TargetSr
  signal: AbortSignal
  retryDelaysMs?: number[]
  onStatus?: (status: string) => void
}

export interface VmDisk extends DiskSlot {
  otherConfig: Record<string, string>
  qosType: string
  qosParams: Record<string, string>
}

export function checkAbort(signal: AbortSignal): void {
  if (signal.aborted) throw new DpxenError('ABORTED', 'interrupted')
}

/** The disk VBDs of a VM (not CDs, not empty), by device position. */
export async function vmDisks(session: XapiSession, vm: string): Promise<VmDisk[]> {
  const out: VmDisk[] = []
  for (const vbd of await session.call<string[]>('VM.get_VBDs', vm)) {
    const r = await session.call<Rec>('VBD.get_record', vbd)
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
  checkAbort(ctx.signal)
  ctx.onStatus?.('importing')
  const started = performance.now()
  const refs = await importFile(ctx.session, ctx.agents, {
    file: item.path,
    srRef: ctx.target.ref,
    restore,
    signal: ctx.signal,
    stallTimeout: ctx.config.stallTimeout,
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
  const disks = await vmDisks(ctx.session, vm)
  for (const want of item.verified.summary.disks) {
    const got = disks.find((d) => d.userdevice === want.userdevice)
    const size = got ? Number(await ctx.session.call('VDI.get_virtual_size', got.vdi)) : -1
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
    checkAbort(ctx.signal)
    ctx.onStatus?.(`copying disk ${disk.userdevice} to "${sr.name}"`)
    const [copy] = [
      ...(await callAsync(ctx.session, 'VDI.copy', [disk.vdi, sr.ref])).matchAll(/OpaqueRef:[0-9a-f-]+/gi),
    ].map((m) => m[0])
    if (!copy)
      throw new DpxenError('VM_FAILED', `copying disk ${disk.userdevice} to SR "${sr.name}" returned no disk`)
    made.push(copy)
    vdiFor.set(disk.userdevice, copy)
  }
  return vdiFor
}

/** Clean shutdown within shutdownTimeout; throws a one-line reason otherwise. */
export async function stopVm(ctx: RestoreContext, vm: string, name: string): Promise<void> {
  ctx.onStatus?.('shutting down')
  const task = await ctx.session.call<string>('Async.VM.clean_shutdown', vm)
  try {
    const outcome = await waitTask(
      ctx.session,
      task,
      AbortSignal.timeout(ctx.config.shutdownTimeout * 1000),
    ).catch(async (error: unknown) => {
      await cancelTask(ctx.session, task)
      throw new DpxenError(
        'VM_FAILED',
        `${name} did not shut down within ${ctx.config.shutdownTimeout} s (raise shutdownTimeout)`,
        { cause: error },
      )
    })
    if (outcome.status !== 'success')
      throw new DpxenError('VM_FAILED', `${name} could not be shut down: ${outcome.errorInfo.join(' ')}`)
  } finally {
    await destroyTask(ctx.session, task)
  }
}

export async function startVm(ctx: RestoreContext, vm: string, name: string): Promise<void> {
  try {
    await callAsync(ctx.session, 'VM.start', [vm, false, false], AbortSignal.timeout(120_000))
  } catch (error) {
    throw new DpxenError(
      'VM_FAILED',
      `${name} could not be started: ${messageOf(error)} (start it by hand)`,
      { cause: error },
    )
  }
}

/** Destroys disks nobody uses any more; a failure is reported, not fatal (no data is lost by keeping a disk). */
export async function destroyUnusedVdis(ctx: RestoreContext, vdis: string[], what: string): Promise<void> {
  for (const vdi of vdis) {
    try {
      const vbds = await ctx.session.call<string[]>('VDI.get_VBDs', vdi)
      if (vbds.length) {
        ctx.log.info(`dpxen: warning: ${what}: disk ${vdi} is still used by another VM and was kept`)
        continue
      }
      await destroyVdi(ctx.session, vdi, ctx.log, ctx.retryDelaysMs)
    } catch (error) {
      ctx.log.info(`dpxen: warning: ${what}: disk ${vdi} could not be removed: ${messageOf(error)}`)
    }
  }
}
