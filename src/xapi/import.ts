// PUT /import of an XVA file: an exact Content-Length (xapi refuses chunked bodies), the file
// streamed with backpressure, the outcome read from the task. Returns the refs xapi made.
import { openRegularFile } from '../core/small-file.js'
import { promises as fsp } from 'node:fs'
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { DpxenError, XapiError } from '../core/errors.js'
import { connectionError, stalledError } from './connection.js'
import { drain, resourceUrl, type StreamAgents } from './http.js'
import type { XapiSession } from './session.js'
import { cancelTask, destroyTask, waitTask } from './tasks.js'
import { refsInResult } from './xmlrpc.js'

export interface ImportRequest extends PutRequest {
  srRef: string
  /** restore=true: keep the VM uuid and MACs (xapi's full restore). */
  restore: boolean
}

interface PutRequest {
  file: string
  signal: AbortSignal
  /** Seconds without progress before the transfer counts as stalled. */
  stallTimeout: number
  /** Told the import's task before anything is sent (the restore journal records it). */
  onTask?: (task: string) => Promise<void>
  /** Told what was imported before the task goes (after that, only this record names it). */
  onImported?: (refs: string[]) => Promise<void>
}

function put(agents: StreamAgents, url: string, length: number, idleMs: number, signal: AbortSignal) {
  const target = new URL(url)
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest
  const req = send(target, {
    method: 'PUT',
    agent: target.protocol === 'https:' ? agents.https : agents.http,
    headers: { 'content-length': String(length), 'content-type': 'application/octet-stream' },
    signal,
  })
  req.setTimeout(idleMs, () => req.destroy(stalledError(target.origin, idleMs, 'took')))
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.once('response', resolve)
    req.once('error', reject)
  })
  response.catch(() => undefined)
  return { req, response }
}

/** Bytes per file read; two buffers take turns, so an upload allocates nothing per read. */
const READ_BUFFER = 1024 * 1024

/**
 * Sends the file as the request body: read into one buffer while the other is being sent, and
 * a buffer is read into again only once the socket has taken it. (An fs read stream makes a new
 * Buffer for every read, and at hundreds of MB/s that garbage keeps V8 busy.)
 */
async function upload(file: string, req: ClientRequest): Promise<void> {
  // Verified before, but opened again: still only a regular file, never waited on.
  const handle = await openRegularFile(file)
  const failed = new Promise<never>((_resolve, reject) => req.once('error', reject))
  failed.catch(() => undefined)
  try {
    const buffers = [Buffer.allocUnsafeSlow(READ_BUFFER), Buffer.allocUnsafeSlow(READ_BUFFER)]
    const sent: (Promise<void> | undefined)[] = [undefined, undefined]
    for (let turn = 0, position = 0; ; turn ^= 1) {
      await Promise.race([sent[turn], failed])
      const { bytesRead } = await handle.read(buffers[turn]!, 0, READ_BUFFER, position)
      if (bytesRead === 0) break
      position += bytesRead
      sent[turn] = new Promise<void>((resolve, reject) =>
        req.write(buffers[turn]!.subarray(0, bytesRead), (error) => (error ? reject(error) : resolve())),
      )
      sent[turn]!.catch(() => undefined)
    }
    await Promise.race([Promise.all(sent), failed])
    await new Promise<void>((resolve, reject) => {
      req.end(() => resolve())
      failed.catch(reject)
    })
  } finally {
    await handle.close()
  }
}

/** Imports the file into the SR; throws XapiError with the host's reason when the task fails. */
export async function importFile(
  session: XapiSession,
  agents: StreamAgents,
  request: ImportRequest,
): Promise<string[]> {
  return putFile(
    session,
    agents,
    '/import',
    { sr_id: request.srRef, restore: String(request.restore) },
    request,
  )
}

/**
 * Writes a VHD (a full or a delta) onto an existing VDI: PUT /import_raw_vdi?format=vhd, which
 * writes the sectors the VHD holds and leaves the others as they are.
 */
export async function importVhd(
  session: XapiSession,
  agents: StreamAgents,
  request: PutRequest & { vdi: string },
): Promise<void> {
  await putFile(session, agents, '/import_raw_vdi', { vdi: request.vdi, format: 'vhd' }, request)
}

async function putFile(
  session: XapiSession,
  agents: StreamAgents,
  path: string,
  query: Record<string, string>,
  request: PutRequest,
): Promise<string[]> {
  const { size } = await fsp.stat(request.file)
  const task = await session.call<string>('task.create', 'dpxen import', 'Data Protector restore')
  let settled = false
  try {
    await request.onTask?.(task)
    const url = resourceUrl(session, path, { task_id: task, ...query })
    const { req, response } = put(agents, url, size, request.stallTimeout * 1000, request.signal)
    try {
      await upload(request.file, req)
    } catch (error) {
      if (request.signal.aborted) throw new DpxenError('ABORTED', 'interrupted', { cause: error })
      // The host may have refused early (403, 500): its task says why.
      const outcome = await waitTask(session, task, AbortSignal.timeout(5000)).catch(() => undefined)
      if (outcome && outcome.status !== 'success') throw new XapiError(outcome.errorInfo, 'import')
      throw connectionError(new URL(url).origin, error)
    }
    const res = await response.catch((error: unknown) => {
      throw connectionError(new URL(url).origin, error)
    })
    await drain(res)
    const outcome = await waitTask(session, task, request.signal)
    settled = true
    if (outcome.status !== 'success')
      throw new XapiError(outcome.errorInfo.length ? outcome.errorInfo : [outcome.status], 'import')
    const refs = refsInResult(outcome.result)
    if (refs.length === 0) throw new DpxenError('VM_FAILED', 'the import reported no VM')
    await request.onImported?.(refs)
    return refs
  } finally {
    if (!settled) {
      // Cancelling makes the host stop and remove what it imported; wait a little for that.
      await cancelTask(session, task)
      await waitTask(session, task, AbortSignal.timeout(10_000)).catch(() => undefined)
    }
    await destroyTask(session, task)
  }
}
