// GET /export: the VM as an XVA stream (export.ml handler). HTTP/1.0, no Content-Length, the
// body ends when the connection closes; the task (task-id header) holds the real outcome.
import { once } from 'node:events'
import { Readable, type Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGzip } from 'node:zlib'
import { XapiFailure } from '../model/errors.js'
import { parseSize } from '../faults.js'
import {
  abortOnClose,
  asFailure,
  authenticate,
  failBeforeBody,
  finish,
  lookup,
  param,
  redirected,
  serverHeader,
  writeRawHead,
  type Authed,
  type HttpCall,
} from './common.js'
import { setProgress, watchCancel } from '../model/tasks.js'
import { lockVm } from '../model/vmops.js'
import { srsOfVm } from '../model/hosts.js'
import { CHUNK } from '../model/disks.js'
import { writeXva } from '../xva/write.js'
import { zstdCompressor } from '../xva/zstd.js'

function compressor(mode: string | undefined): Transform | undefined {
  if (mode === 'true' || mode === 'gzip') return createGzip()
  if (mode === 'zstd') return zstdCompressor()
  return undefined
}

/**
 * The export's faults on the way to the client: `export-truncate` fails the task once its bytes
 * are sent, `export-lose-tail` makes the whole and sends only its head; `sent()` says how much went.
 */
function clientSink(call: HttpCall, signal: AbortSignal) {
  const { sim, req } = call
  const socket = req.socket
  const truncate = sim.faults.get('export-truncate')
  const loseTail = sim.faults.get('export-lose-tail')
  const limit = truncate || loseTail ? parseSize((truncate ?? loseTail)!.arg ?? '0') : Infinity
  let sent = 0
  const sink = async (stream: AsyncIterable<Buffer>): Promise<void> => {
    for await (const chunk of stream) {
      const room = limit - sent
      // The rest is made (the task succeeds) and never reaches the client.
      if (loseTail && room <= 0) continue
      const piece = chunk.length > room ? chunk.subarray(0, room) : chunk
      sent += piece.length
      if (piece.length && !socket.write(piece)) await once(socket, 'drain', { signal })
      if (truncate && sent >= limit) throw new XapiFailure('VDI_IO_ERROR', 'Device I/O errors')
    }
  }
  return { sink, cutShort: () => sent >= limit }
}

/**
 * What export.ml's handler does before the body: no host for the VM's SRs (the fault
 * export-no-host), a redirect to the host that sees them, the VM locked for the export. The VM
 * and its unlock, or undefined when the answer is already given.
 */
function startExport(call: HttpCall, auth: Authed): { vmRef: string; unlock: () => void } | undefined {
  const { sim, req } = call
  if (sim.faults.get('export-no-host')) {
    // choose_host raises NO_HOSTS_AVAILABLE []; the handler fails the caller's task and returns
    // without writing a byte, and the connection closes.
    finish(call, auth, { error: new XapiFailure('NO_HOSTS_AVAILABLE') })
    req.socket.end()
    return undefined
  }
  try {
    const vmRef = lookup(sim, 'VM', param(call, 'ref') ?? param(call, 'uuid'))
    if (redirected(call, auth, srsOfVm(sim, vmRef), 'fail-task-and-close')) return undefined
    return { vmRef, unlock: lockVm(sim, vmRef, 'export', auth.task) }
  } catch (error) {
    failBeforeBody(call, auth, 500, asFailure(error))
    return undefined
  }
}

export async function handleExport(call: HttpCall): Promise<void> {
  const { sim, req } = call
  const auth = authenticate(call, 'Export of VM')
  if (!auth) return
  const started = startExport(call, auth)
  if (!started) return
  const { vmRef, unlock } = started
  const socket = req.socket
  const aborter = new AbortController()
  const onClose = (): void => aborter.abort(new XapiFailure('VDI_IO_ERROR', 'Client closed the connection'))
  socket.once('close', onClose)
  const stopWatching = watchCancel(sim, auth.task, () =>
    aborter.abort(new XapiFailure('TASK_CANCELLED', auth.task)),
  )
  const stall = sim.faults.get('export-stall')
  writeRawHead(socket, 'HTTP/1.0 200 OK', {
    Connection: 'close',
    'Cache-Control': 'no-cache, no-store',
    'content-type': 'application/octet-stream',
    'Content-Disposition': 'attachment; filename="export.xva"',
    'task-id': auth.task,
    Server: serverHeader(sim),
  })
  const { sink, cutShort } = clientSink(call, aborter.signal)
  const stopFollowing = abortOnClose(sim, aborter)
  try {
    const zip = compressor(param(call, 'use_compression'))
    const xva = writeXva(sim, vmRef, {
      checksum: sim.settings.checksum,
      keepalive: sim.faults.get('export-keepalive') !== undefined,
      stallMs: stall ? Number(stall.arg) * 1000 : 0,
      signal: aborter.signal,
      onProgress: (done, total) => setProgress(sim, auth.task, total ? Math.min(0.99, done / total) : 0),
      // The sink has written each chunk, and waited for the drain, before it pulls the next: a
      // 1 MiB write always fills the socket past its high-water mark.
      reuseBuffers: !zip && socket.writableHighWaterMark < CHUNK,
    })
    if (zip) await pipeline(Readable.from(xva, { objectMode: false }), zip, sink, { signal: aborter.signal })
    else await sink(xva)
    unlock()
    stopWatching()
    stopFollowing()
    finish(call, auth, { result: '' })
    socket.end()
  } catch (error) {
    unlock()
    stopWatching()
    stopFollowing()
    const reason = aborter.signal.aborted ? aborter.signal.reason : error
    finish(call, auth, { error: reason })
    socket.off('close', onClose)
    // A failure mid-stream just closes the connection: the client must read the task.
    if (cutShort()) socket.end()
    else socket.destroy()
  }
}
