// Backing up one VM. Online: every disk must allow a snapshot; snapshot, export the snapshot,
// destroy it and its disks. Offline: stop a running VM cleanly, export, start it again. The
// undo of each step is registered as soon as the step is done and runs on failure and abort.
import type { Config } from '../config/schema.js'
import { DpxenError, messageOf } from '../errors.js'
import { anySignal } from '../signals.js'
import { formatBytes } from '../format.js'
import type { Logger } from '../log.js'
import type { StreamAgents } from '../xapi/http.js'
import type { XapiSession } from '../xapi/session.js'
import { callAsync, cancelTask, destroyTask, waitTask } from '../xapi/tasks.js'
import { exportToFile, type ExportResult } from './export.js'
import { freeSpace } from './files.js'
import { buildManifest, writeManifest } from './manifest.js'
import type { VmPlan } from './select.js'
import { destroyVmAndDisks, makeSnapshot } from './snapshots.js'

export interface VmBackupContext {
  session: XapiSession
  agents: StreamAgents
  log: Logger
  config: Config
  runId: string
  /** Aborted on SIGTERM/SIGINT: no new side effect starts after it fires. */
  signal: AbortSignal
  /** Bytes other running exports have claimed in backupDir. */
  space: { reserved: number }
  retryDelaysMs?: number[]
  /** Called with the bytes received so far, for progress lines. */
  onBytes?: (bytes: number) => void
  onStatus?: (status: string) => void
  /** Called before a running VM is stopped (true) and once it runs again or never stopped (false). */
  onStopping?: (plan: VmPlan, stopping: boolean) => Promise<void>
}

export interface VmBackupResult {
  files: string[]
  export: ExportResult
}

/** Seconds cleanup may take after an abort (destroying a snapshot, starting a VM). */
const CLEANUP_TIMEOUT_MS = 120_000

function checkAbort(signal: AbortSignal): void {
  if (signal.aborted) throw new DpxenError('ABORTED', 'interrupted')
}

async function reserveSpace(ctx: VmBackupContext, plan: VmPlan): Promise<() => void> {
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
  const result = await exportToFile(ctx.session, ctx.agents, ctx.log, {
    ref,
    label: plan.name,
    dir: ctx.config.backupDir,
    fileName,
    compression: ctx.config.compression,
    stallTimeout: ctx.config.stallTimeout,
    verify: ctx.config.verifyExport,
    direct: ctx.config.directIo,
    signal: ctx.signal,
    ...(ctx.onBytes ? { onBytes: ctx.onBytes } : {}),
  })
  const manifest = buildManifest({
    runId: ctx.runId,
    mode: ctx.config.mode,
    server: ctx.config.server,
    plan,
    result,
    fileName,
    started,
  })
  const manifestFile = await writeManifest(ctx.config.backupDir, manifest)
  return { files: [fileName, manifestFile], export: result }
}

/** Online backup of one VM through a snapshot that is always destroyed. */
export async function backupOnline(
  ctx: VmBackupContext,
  plan: VmPlan,
  fileName: string,
): Promise<VmBackupResult> {
  if (plan.disks.some((d) => !d.canSnapshot)) {
    throw new DpxenError(
      'SNAPSHOT_UNSUPPORTED',
      `At least one sr used by ${plan.name} does not support snapshot`,
    )
  }
  const release = await reserveSpace(ctx, plan)
  try {
    checkAbort(ctx.signal)
    ctx.onStatus?.('snapshotting')
    const snap = await makeSnapshot(ctx.session, plan.ref, plan.name, ctx.runId, ctx.log)
    try {
      checkAbort(ctx.signal)
      ctx.onStatus?.('exporting')
      return await exportAndDescribe(ctx, plan, snap, fileName)
    } finally {
      ctx.onStatus?.('removing the snapshot')
      await destroyVmAndDisks(ctx.session, snap, ctx.log, ctx.retryDelaysMs).catch((error: unknown) => {
        throw new DpxenError(
          'VM_FAILED',
          `the snapshot of ${plan.name} could not be removed: ${messageOf(error)} (dpxen removes it on its next run)`,
          {
            cause: error,
          },
        )
      })
    }
  } finally {
    release()
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
    checkAbort(ctx.signal)
    if (plan.powerState !== 'Running') {
      ctx.onStatus?.('exporting')
      return await exportAndDescribe(ctx, plan, plan.ref, fileName)
    }
    ctx.onStatus?.('shutting down')
    let stopped = false
    // Recorded before the shutdown, so a run killed outright still lets the next one start it.
    await ctx.onStopping?.(plan, true)
    try {
      await shutdown(ctx, plan)
      stopped = true
      checkAbort(ctx.signal)
      ctx.onStatus?.('exporting')
      return await exportAndDescribe(ctx, plan, plan.ref, fileName)
    } finally {
      if (stopped || (await powerState(ctx, plan)) === 'Halted') {
        ctx.onStatus?.('starting again')
        await startAgain(ctx, plan)
      }
      await ctx.onStopping?.(plan, false)
    }
  } finally {
    release()
  }
}

async function powerState(ctx: VmBackupContext, plan: VmPlan): Promise<string> {
  return ctx.session.call<string>('VM.get_power_state', plan.ref).catch(() => 'unknown')
}

/** Clean shutdown within shutdownTimeout; on timeout the task is cancelled and the VM left running. */
async function shutdown(ctx: VmBackupContext, plan: VmPlan): Promise<void> {
  const task = await ctx.session.call<string>('Async.VM.clean_shutdown', plan.ref)
  try {
    const limit = AbortSignal.timeout(ctx.config.shutdownTimeout * 1000)
    let outcome
    try {
      const either = anySignal(limit, ctx.signal)
      outcome = await waitTask(ctx.session, task, either.signal).finally(either.dispose)
    } catch (error) {
      await cancelTask(ctx.session, task)
      // Whatever the host did by now decides whether the VM must be started again.
      if (limit.aborted) {
        throw new DpxenError(
          'VM_FAILED',
          `${plan.name} did not shut down within ${ctx.config.shutdownTimeout} s (is the guest responding? raise shutdownTimeout)`,
          { cause: error },
        )
      }
      throw error
    }
    if (outcome.status !== 'success') {
      throw new DpxenError('VM_FAILED', `${plan.name} could not be shut down: ${outcome.errorInfo.join(' ')}`)
    }
  } finally {
    await destroyTask(ctx.session, task)
  }
}

/** Starts the VM again; failure here is the VM's failure, named clearly. */
async function startAgain(ctx: VmBackupContext, plan: VmPlan): Promise<void> {
  try {
    await callAsync(
      ctx.session,
      'VM.start',
      [plan.ref, false, false],
      AbortSignal.timeout(CLEANUP_TIMEOUT_MS),
    )
  } catch (error) {
    throw new DpxenError(
      'VM_FAILED',
      `${plan.name} was stopped for the backup and could not be started again: ${messageOf(error)} (start it by hand)`,
      {
        cause: error,
      },
    )
  }
}
