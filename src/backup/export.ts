// One export to a file: GET /export with a task, streamed into <name>.partial while the XVA is
// verified; then the task must have succeeded and the tar end marker be there; fsync; and only
// then the final name. On any failure the partial file is removed and the task cancelled.
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { crashPoint } from '../core/crash-points.js'
import { DpxenError, XapiError, messageOf } from '../core/errors.js'
import { anySignal } from '../core/signals.js'
import type { Logger } from '../core/log.js'
import { resourceUrl, type StreamAgents } from '../xapi/http.js'
import { rawGet, READ_SIZE } from '../xapi/raw-get.js'
import type { XapiSession } from '../xapi/session.js'
import { cancelTask, destroyTask, waitTask } from '../xapi/tasks.js'
import { FileSink } from '../xva/file-sink.js'
import { XvaIntake } from '../xva/intake.js'
import type { StreamResult } from '../xva/pipe.js'
import { PARTIAL_SUFFIX } from '../staging/names.js'

export interface ExportRequest {
  /** VM (or snapshot) ref to export. */
  ref: string
  /** What to call it in messages. */
  label: string
  dir: string
  fileName: string
  compression: 'none' | 'gzip' | 'zstd'
  signal: AbortSignal
  /** Check the XVA while it streams (layout, every checksum). */
  verify: boolean
  /** Write around the page cache where the system allows it (see FileSink). */
  direct: boolean
  /** Seconds without a byte before the export counts as stalled. */
  stallTimeout: number
  onBytes?: (bytes: number) => void
}

export interface ExportResult extends StreamResult {
  file: string
  seconds: number
}

/** What receives a transfer: takes pieces, says when to pause, and checks the whole at the end. */
export interface Intake<R> {
  readonly bytes: number
  push(piece: Buffer): boolean
  finish(): Promise<R>
  abort(): Promise<void>
}

/** Any streamed download into a verified file: the resource, and the intake that checks it. */
export interface TransferRequest<R> extends Omit<ExportRequest, 'ref' | 'compression' | 'verify'> {
  path: string
  query: Record<string, string>
  intake: (sink: FileSink, wake: () => void) => Intake<R>
}

/**
 * 1 MiB writes, up to three under way while a fourth slab fills. Larger slabs measured worse on
 * a disk (4 MiB x 3: about half the throughput, twice the system time) and no better on tmpfs.
 */
const SLAB_SIZE = 1024 * 1024
const SLABS = 4

/** How long to wait for the task to settle after the body ended. */
const TASK_SETTLE_MS = 30_000

export async function exportToFile(
  session: XapiSession,
  agents: StreamAgents,
  log: Logger,
  req: ExportRequest,
): Promise<ExportResult> {
  const query: Record<string, string> = { ref: req.ref }
  if (req.compression !== 'none') query.use_compression = req.compression
  return transferToFile(session, agents, log, {
    ...req,
    path: '/export',
    query,
    intake: (sink, wake) => new XvaIntake(sink, { verify: req.verify, maxPiece: READ_SIZE, wake }),
  })
}

export async function transferToFile<R extends { bytes: number }>(
  session: XapiSession,
  agents: StreamAgents,
  log: Logger,
  req: TransferRequest<R>,
): Promise<R & { file: string; seconds: number }> {
  const finalPath = join(req.dir, req.fileName)
  const partialPath = finalPath + PARTIAL_SUFFIX
  const started = performance.now()
  const task = await session.call<string>('task.create', `dpxen export ${req.label}`, 'Data Protector backup')
  let intake: Intake<R> | undefined
  let done = false
  try {
    const res = await rawGet(agents.trust, resourceUrl(session, req.path, { ...req.query, task_id: task }), {
      signal: req.signal,
      idleMs: req.stallTimeout * 1000,
    }).catch(async (error: unknown) => {
      throw await noAnswer(session, task, req, error)
    })
    if (res.status !== 200) {
      await res.text().catch(() => '')
      throw await taskErrorOr(session, task, `the host answered HTTP ${res.status} to the export`)
    }
    await fsp.rm(partialPath, { force: true })
    crashPoint(`create ${req.fileName}.partial`)
    const sink = await openSink(partialPath, req.direct, log)
    const taking = req.intake(sink, () => res.resume())
    intake = taking
    let result: R
    try {
      await res.pump((piece) => {
        const more = taking.push(piece)
        req.onBytes?.(taking.bytes)
        return more
      })
      // Written, verified (layout, every checksum, the end marker), flushed to the disk.
      result = await taking.finish()
    } catch (error) {
      res.destroy()
      throw await streamFailure(session, task, req.signal, taking.bytes, error)
    }
    intake = undefined
    await settleAndName(session, task, req, partialPath, finalPath)
    done = true
    const seconds = (performance.now() - started) / 1000
    log.debug(`exported ${req.label} to ${finalPath}: ${result.bytes} bytes in ${seconds.toFixed(2)} s`)
    return { ...result, file: finalPath, seconds }
  } finally {
    await intake?.abort()
    if (!done) {
      await fsp.rm(partialPath, { force: true }).catch(() => undefined)
      await cancelTask(session, task)
    }
    await destroyTask(session, task)
  }
}

/** The task must have succeeded; then the file gets its final name. */
async function settleAndName(
  session: XapiSession,
  task: string,
  req: { signal: AbortSignal; fileName: string },
  partialPath: string,
  finalPath: string,
): Promise<void> {
  const settle = anySignal(req.signal, AbortSignal.timeout(TASK_SETTLE_MS))
  const outcome = await waitTask(session, task, settle.signal).finally(settle.dispose)
  if (outcome.status !== 'success') {
    throw new DpxenError(
      'EXPORT_FAILED',
      `the host reports the export failed: ${outcome.errorInfo.join(' ') || outcome.status}`,
    )
  }
  crashPoint(`rename ${req.fileName}`)
  await fsp.rename(partialPath, finalPath)
}

/** The partial file, created exclusively, readable by its owner only. */
async function openSink(path: string, direct: boolean, log: Logger): Promise<FileSink> {
  const sink = await FileSink.open(path, {
    flags: 'wx',
    mode: 0o600,
    slabSize: SLAB_SIZE,
    slabs: SLABS,
    direct,
  })
  if (direct && !sink.direct) log.debug(`${path}: O_DIRECT refused, writing through the page cache`)
  return sink
}

/** Why a stream ended early, as one error: the abort, the host's task, or the local failure. */
async function streamFailure(
  session: XapiSession,
  task: string,
  signal: AbortSignal,
  received: number,
  error: unknown,
): Promise<DpxenError> {
  if (signal.aborted) return new DpxenError('ABORTED', 'interrupted', { cause: error })
  if (error instanceof DpxenError && error.code === 'XVA_INVALID') {
    // A cut-off stream usually means the host failed; its task says why.
    const hostError = await taskError(session, task, 2000)
    return new DpxenError(
      'EXPORT_FAILED',
      hostError
        ? `the export stopped after ${received} bytes: ${hostError}`
        : `the export${error.message.startsWith('not a valid VHD') ? '' : 'ed XVA'} is invalid: ${error.message}`,
      { cause: error },
    )
  }
  // A local failure (the disk) is the cause, whatever the host then says about the closed
  // connection; otherwise the host's task says why the stream ended.
  const code = error instanceof DpxenError ? error.code : undefined
  const hostError = code === 'LOCAL_IO' ? undefined : await taskError(session, task, 2000)
  return new DpxenError(
    code === 'LOCAL_IO' || code === 'TRANSFER_STALLED' ? code : 'EXPORT_FAILED',
    `the export stopped after ${received} bytes: ${hostError ?? messageOf(error)}`,
    { cause: error },
  )
}

/** The task's error_info, if it failed within `ms`. */
async function taskFailure(session: XapiSession, task: string, ms: number): Promise<string[] | undefined> {
  try {
    const outcome = await waitTask(session, task, AbortSignal.timeout(ms))
    return outcome.status === 'success'
      ? undefined
      : outcome.errorInfo.length
        ? outcome.errorInfo
        : [outcome.status]
  } catch {
    return undefined
  }
}

async function taskError(session: XapiSession, task: string, ms: number): Promise<string | undefined> {
  return (await taskFailure(session, task, ms))?.join(' ')
}

/**
 * A transfer that got no answer: xapi fails the task and closes without a word when no host
 * can see the VM's storage (export.ml), so the task, not the connection, says why.
 */
async function noAnswer(
  session: XapiSession,
  task: string,
  req: { signal: AbortSignal; label: string },
  error: unknown,
): Promise<unknown> {
  if (req.signal.aborted) return error
  const failure = await taskFailure(session, task, 5000).catch(() => undefined)
  if (!failure) return error
  if (failure[0] === 'NO_HOSTS_AVAILABLE')
    return new DpxenError(
      'EXPORT_FAILED',
      `no host of the pool can reach the storage of ${req.label} (NO_HOSTS_AVAILABLE): the host holding its local SR may be down or disabled; bring it back and run the backup again`,
    )
  return new XapiError(failure, 'export')
}

async function taskErrorOr(session: XapiSession, task: string, fallback: string): Promise<DpxenError> {
  const failure = await taskFailure(session, task, 5000)
  if (failure) return new XapiError(failure, 'export')
  return new DpxenError('EXPORT_FAILED', fallback)
}
