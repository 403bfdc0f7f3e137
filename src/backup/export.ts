// One download to a file (host.download: under a task, redirects followed): streamed into
// <name>.partial while the intake checks it (an XVA, a VHD); then the host's task must have
// succeeded and the file be whole and flushed; only then the final name. On any failure the
// partial file is removed (the host cancels its task).
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { crashPoint } from '../core/crash-points.js'
import type { Logger } from '../core/log.js'
import type { Host } from '../xapi/host.js'
import { READ_SIZE } from '../xapi/raw-get.js'
import { FileSink } from '../xva/file-sink.js'
import type { Checked, Verifier } from '../xva/check.js'
import { CheckedIntake } from '../xva/intake.js'
import { XvaVerifier, type XvaSummary } from '../xva/verify.js'
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
  onBytes?: (bytes: number) => void
}

export interface ExportResult extends Checked<XvaSummary> {
  /** Whether every chunk's checksum was compared too (the layout always is). */
  checksumsVerified: boolean
  file: string
  seconds: number
}

/** Any streamed download into a verified file: the resource, and the verifier that checks it. */
export interface TransferRequest<S> extends Omit<ExportRequest, 'ref' | 'compression' | 'verify'> {
  path: string
  query: Record<string, string>
  verifier: Verifier<S>
  /** The stream may be gzip or zstd (an XVA export). */
  compressed?: boolean
}

/**
 * 1 MiB writes, up to three under way while a fourth slab fills. Larger slabs measured worse on
 * a disk (4 MiB x 3: about half the throughput, twice the system time) and no better on tmpfs.
 */
const SLAB_SIZE = 1024 * 1024
const SLABS = 4

export async function exportToFile(host: Host, log: Logger, req: ExportRequest): Promise<ExportResult> {
  const query: Record<string, string> = { ref: req.ref }
  if (req.compression !== 'none') query.use_compression = req.compression
  const result = await transferToFile(host, log, {
    ...req,
    path: '/export',
    query,
    verifier: new XvaVerifier({ checksums: req.verify }),
    compressed: true,
  })
  return { ...result, checksumsVerified: req.verify }
}

/**
 * A download into `<fileName>.partial`, which takes its final name only once the intake checked
 * the whole and the host's task succeeded; removed on any failure.
 */
export function transferToFile<S>(
  host: Host,
  log: Logger,
  req: TransferRequest<S>,
): Promise<Checked<S> & { file: string; seconds: number }> {
  return intoFile(log, req, (open) =>
    host.download(req.path, req.query, {
      label: req.label,
      signal: req.signal,
      ...(req.onBytes ? { onBytes: req.onBytes } : {}),
      open: async (wake) =>
        new CheckedIntake(await open(), req.verifier, {
          maxPiece: READ_SIZE,
          wake,
          compressed: req.compressed === true,
        }),
    }),
  )
}

/**
 * The one way a file of a backup is made: `fill` is given `open`, which creates
 * `<fileName>.partial` (exclusive, the owner's only); the file takes its final name only once
 * `fill` resolved (the whole checked), and is removed on any failure.
 */
export async function intoFile<R extends { bytes: number }>(
  log: Logger,
  req: { label: string; dir: string; fileName: string; direct: boolean },
  fill: (open: () => Promise<FileSink>) => Promise<R>,
): Promise<R & { file: string; seconds: number }> {
  const finalPath = join(req.dir, req.fileName)
  const partialPath = finalPath + PARTIAL_SUFFIX
  const started = performance.now()
  let named = false
  try {
    const result = await fill(async () => {
      await fsp.rm(partialPath, { force: true })
      crashPoint(`create ${req.fileName}.partial`)
      return openSink(partialPath, req.direct, log)
    })
    crashPoint(`rename ${req.fileName}`)
    await fsp.rename(partialPath, finalPath)
    named = true
    const seconds = (performance.now() - started) / 1000
    log.debug(`wrote ${req.label} to ${finalPath}: ${result.bytes} bytes in ${seconds.toFixed(2)} s`)
    return { ...result, file: finalPath, seconds }
  } finally {
    if (!named) await fsp.rm(partialPath, { force: true }).catch(() => undefined)
  }
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
