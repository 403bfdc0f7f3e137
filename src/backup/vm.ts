// Backing up one VM. Online: every disk must allow a snapshot; snapshot, export the snapshot,
// destroy it and its disks. Offline: stop a running VM cleanly, export, start it again. The
// undo of each step is registered as soon as the step is done and runs on failure and abort.
import type { Config, Method } from '../config/schema.js'
import { DpxenError, messageOf } from '../core/errors.js'
import { throwIfAborted } from '../core/signals.js'
import { formatBytes } from '../core/format.js'
import type { PoolContext } from '../pool/context.js'
import { destroyVmAndDisks } from '../pool/disks.js'
import { powerState, stopOptions, whileHalted } from '../pool/lifecycle.js'
import { makeSnapshot } from '../pool/snapshots.js'
import { exportToFile, type ExportResult } from './export.js'
import { freeSpace } from '../staging/files.js'
import { writeManifest } from '../staging/manifest.js'
import { buildManifest } from './describe.js'
import { snapshotRefusal, type VmPlan } from './select.js'

export interface VmBackupContext extends PoolContext {
  config: Config
  runId: string
  /** Data Protector's SESSIONID, recorded in the manifest. */
  dataProtectorSession?: string
  /** Data Protector's backup level for the session (MODE), when a session runs the hook. */
  dataProtectorLevel?: string
  /** Bytes other running exports have claimed in backupDir. */
  space: { reserved: number }
  /** Called with the bytes received so far, for progress lines. */
  onBytes?: (bytes: number) => void
  /** Told the files about to be written, before they exist (so a killed run's are known). */
  intend?: (files: string[]) => Promise<void>
  /** Called before a running VM is stopped (true) and once it runs again or never stopped (false). */
  onStopping?: (plan: VmPlan, stopping: boolean) => Promise<void>
}

export interface VmBackupResult {
  files: string[]
  /** What the done line names: the XVA, or an incremental run's manifest and its disk files. */
  written: string
  export: Pick<ExportResult, 'bytes' | 'seconds'>
}

export async function reserveSpace(ctx: VmBackupContext, plan: VmPlan): Promise<() => void> {
  const free = await freeSpace(ctx.config.backupDir)
  const available = free - ctx.space.reserved
  if (plan.estimate > available) {
    throw new DpxenError(
      'NO_SPACE',
      `not enough space in ${ctx.config.backupDir}: the export needs up to ${formatBytes(plan.estimate)}, ${formatBytes(Math.max(0, available))} free (free space or set backupDir to a larger disk)`,
    )
  }
  ctx.space.reserved += plan.estimate
  return () => {
    ctx.space.reserved -= plan.estimate
  }
}

async function exportAndDescribe(
  ctx: VmBackupContext,
  plan: VmPlan,
  ref: string,
  fileName: string,
): Promise<VmBackupResult> {
  const started = new Date()
  const result = await exportToFile(ctx.host, ctx.log, {
    ref,
    label: plan.name,
    dir: ctx.config.backupDir,
    fileName,
    compression: ctx.config.compression,
    verify: ctx.config.verifyExport,
    direct: ctx.config.directIo,
    signal: ctx.signal,
    ...(ctx.onBytes ? { onBytes: ctx.onBytes } : {}),
  })
  const manifest = buildManifest({
    runId: ctx.runId,
    ...(ctx.dataProtectorSession ? { dataProtectorSession: ctx.dataProtectorSession } : {}),
    mode: ctx.config.mode,
    server: ctx.config.server,
    plan,
    result,
    fileName,
    started,
  })
  const manifestFile = await writeManifest(ctx.config.backupDir, manifest)
  return { files: [fileName, manifestFile], written: fileName, export: result }
}

/** Online backup of one VM through a snapshot that is always destroyed. */
export async function backupOnline(
  ctx: VmBackupContext,
  plan: VmPlan,
  fileName: string,
): Promise<VmBackupResult> {
  const refusal = snapshotRefusal(plan)
  if (refusal) throw new DpxenError('SNAPSHOT_UNSUPPORTED', refusal)
  const release = await reserveSpace(ctx, plan)
  try {
    throwIfAborted(ctx.signal)
    ctx.onStatus?.('snapshotting')
    const snap = await makeSnapshot(ctx.host, plan.ref, plan.name, ctx.runId, ctx.log)
    try {
      throwIfAborted(ctx.signal)
      ctx.onStatus?.('exporting')
      return await exportAndDescribe(ctx, plan, snap, fileName)
    } finally {
      await removeSnapshot(ctx, plan, snap)
    }
  } finally {
    release()
  }
}

/**
 * Removes a run's snapshot and its disks. After a SIGTERM a disk the host still holds (an export
 * or NBD read on storage that hangs) is retried for seconds, not half a minute, then left to the
 * next run's sweep, said in a line: the hook must end while Data Protector waits.
 */
export async function removeSnapshot(ctx: VmBackupContext, plan: VmPlan, snap: string): Promise<void> {
  ctx.onStatus?.('removing the snapshot')
  try {
    await destroyVmAndDisks(ctx.host, snap, ctx.log, ctx.signal)
  } catch (error) {
    const why = messageOf(error)
    if (!ctx.signal.aborted)
      throw new DpxenError(
        'VM_FAILED',
        `the snapshot of ${plan.name} could not be removed: ${why} (the next run, or dpxen recover, removes it)`,
        { cause: error },
      )
    ctx.log.info(
      `dpxen: ${plan.name}: warning: the snapshot of ${plan.name} could not be removed: ${why} (the next run, or dpxen recover, removes it)`,
    )
  }
}

/** Offline backup of one VM: a running VM is stopped and always started again. */
export async function backupOffline(
  ctx: VmBackupContext,
  plan: VmPlan,
  fileName: string,
): Promise<VmBackupResult> {
  if (plan.powerState === 'Paused') {
    throw new DpxenError(
      'VM_FAILED',
      `${plan.name} is paused; unpause it or shut it down before an offline backup`,
    )
  }
  const release = await reserveSpace(ctx, plan)
  try {
    throwIfAborted(ctx.signal)
    const running = plan.powerState === 'Running'
    // Recorded before the shutdown, so a run killed outright still lets the next one start it.
    if (running) await ctx.onStopping?.(plan, true)
    try {
      return await whileHalted(
        ctx,
        { ref: plan.ref, name: plan.name, running },
        {
          ...stopOptions(ctx.config),
          why: 'was stopped for the backup and could not be started again',
        },
        async () => {
          throwIfAborted(ctx.signal)
          ctx.onStatus?.('exporting')
          return exportAndDescribe(ctx, plan, plan.ref, fileName)
        },
      )
    } finally {
      // A VM not known to run again (not started, or the host unreachable) stays recorded: the
      // post-exec, or the next run, starts it.
      if (running && ['Running', 'Paused', 'Suspended'].includes(await powerState(ctx.host, plan.ref)))
        await ctx.onStopping?.(plan, false)
    }
  } finally {
    release()
  }
}

/** The backup engine of each way of making a VM still (the mode's method). */
export const BACKUP_ENGINES: Record<Method, typeof backupOnline> = {
  snapshot: backupOnline,
  shutdown: backupOffline,
}
