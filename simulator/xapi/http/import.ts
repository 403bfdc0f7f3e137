// PUT /import: an XVA into the pool (import.ml handler). Chunked bodies are refused (403),
// the 200 head goes out before the body is read, the task result lists the new VMs.
import { XapiFailure } from '../model/errors.js'
import { watchCancel } from '../model/tasks.js'
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
import { NULL_REF } from '../model/schema.js'
import { printValue } from '../model/xmlrpc.js'
import { importXva } from '../xva/read.js'

/** sr_id, sr_uuid, or the pool's default SR (DEFAULT_SR_NOT_FOUND when there is none). */
export function targetSr(call: HttpCall): string {
  const { sim } = call
  const srId = param(call, 'sr_id')
  if (srId) return lookup(sim, 'SR', srId)
  const srUuid = param(call, 'sr_uuid')
  if (srUuid) return lookup(sim, 'SR', srUuid)
  const defaultSr = String(sim.db.require('pool', sim.poolRef).default_SR)
  if (!sim.db.has('SR', defaultSr)) throw new XapiFailure('DEFAULT_SR_NOT_FOUND', defaultSr || NULL_REF)
  return defaultSr
}

/**
 * What import.ml's handler checks before it answers 200: the SR (or the pool's default), a
 * redirect to the host that sees it, a body of known length, an SR that takes VMs. The SR, or
 * undefined when the answer is already given.
 */
function importTarget(call: HttpCall, auth: Authed): string | undefined {
  const { sim, req } = call
  let srRef: string
  try {
    srRef = targetSr(call)
  } catch (error) {
    failBeforeBody(call, auth, 500, asFailure(error))
    return undefined
  }
  if (redirected(call, auth, [srRef], 'answer-500')) return undefined
  if (req.headers['transfer-encoding']) {
    failBeforeBody(call, auth, 403, new XapiFailure('IMPORT_ERROR_CANNOT_HANDLE_CHUNKED'))
    return undefined
  }
  // Stricter than xapi, which would read to EOF: a body must say how long it is.
  const length = Number(req.headers['content-length'])
  if (req.headers['content-length'] === undefined || !Number.isSafeInteger(length)) {
    failBeforeBody(call, auth, 411, new XapiFailure('IMPORT_ERROR', 'Content-Length required'))
    return undefined
  }
  try {
    const sr = sim.db.require('SR', srRef)
    if (sr.content_type === 'iso') throw new XapiFailure('SR_OPERATION_NOT_SUPPORTED', srRef)
  } catch (error) {
    const failure = error instanceof XapiFailure ? error : new XapiFailure('INTERNAL_ERROR', String(error))
    failBeforeBody(call, auth, failure.code === 'SR_OPERATION_NOT_SUPPORTED' ? 400 : 500, failure)
    return undefined
  }
  return srRef
}

export async function handleImport(call: HttpCall): Promise<void> {
  const { sim, req } = call
  const auth = authenticate(call, 'VM import')
  if (!auth) return
  const srRef = importTarget(call, auth)
  if (srRef === undefined) return
  const socket = req.socket
  writeRawHead(socket, 'HTTP/1.1 200 OK', {
    Connection: 'close',
    'content-type': 'application/octet-stream',
    'task-id': auth.task,
    Server: serverHeader(sim),
  })
  const aborter = new AbortController()
  // A client that goes away mid-body ends the import (and its objects are removed).
  let finished = false
  const onGone = (): void => {
    if (finished) return
    aborter.abort()
    req.destroy(new Error('the client closed the connection'))
  }
  req.once('aborted', onGone)
  socket.once('close', onGone)
  let cancelled = false
  const stopWatching = watchCancel(sim, auth.task, () => {
    cancelled = true
    onGone()
  })
  const stopFollowing = abortOnClose(sim, aborter)
  try {
    const vms = await importXva(sim, req, {
      srRef,
      restore: param(call, 'restore') === 'true',
      force: param(call, 'force') === 'true',
      task: auth.task,
      signal: aborter.signal,
    })
    finished = true
    finish(call, auth, { result: printValue(vms) })
  } catch (error) {
    finished = true
    finish(call, auth, {
      error: cancelled
        ? new XapiFailure('TASK_CANCELLED', auth.task)
        : aborter.signal.aborted
          ? new XapiFailure('IMPORT_ERROR_PREMATURE_EOF')
          : error,
    })
    req.resume()
  }
  stopWatching()
  stopFollowing()
  socket.end()
}
