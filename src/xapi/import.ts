// PUT /import of an XVA file: an exact Content-Length (xapi refuses chunked bodies), the file
// streamed with backpressure, the outcome read from the task. Returns the refs xapi made.
import { openRegularFile } from '../core/small-file.js'
import { promises as fsp } from 'node:fs'
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { DpxenError, XapiError } from '../core/errors.js'
import { connectionError, stalledError } from './connection.js'
import { drain, followRedirects, resourceUrl, type StreamAgents } from './http.js'
import type { XapiSession } from './session.js'
import { cancelTask, destroyTask, waitTask, type TaskOutcome } from './tasks.js'
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

/** How long an upload waits for the host to answer its head before it sends the body anyway. */
export const CONTINUE_WAIT_MS = 1000

type Opened = { req: ClientRequest; response: Promise<IncomingMessage>; early?: IncomingMessage }

/**
 * Sends the request head with `Expect: 100-continue` and waits for the host's first word. xapi
 * never sends 100 Continue; it answers a request it will not serve at once (302 to the pool
 * member that holds the storage, or an error page) from the head alone, and answers 200 before
 * reading the body of one it serves. So: a 302 or an error is learnt before any byte of the body
 * is sent; silence for CONTINUE_WAIT_MS (as curl waits) or a 200 means send.
 */
function open(agents: StreamAgents, url: string, length: number, idleMs: number, signal: AbortSignal) {
  const target = new URL(url)
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest
  const req = send(target, {
    method: 'PUT',
    agent: target.protocol === 'https:' ? agents.https : agents.http,
    headers: {
      'content-length': String(length),
      'content-type': 'application/octet-stream',
      expect: '100-continue',
    },
    signal,
  })
  req.setTimeout(idleMs, () => req.destroy(stalledError(target.origin, idleMs, 'took')))
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.once('response', resolve)
    req.once('error', reject)
  })
  response.catch(() => undefined)
  req.flushHeaders()
  return new Promise<Opened>((resolve, reject) => {
    const timer = setTimeout(() => resolve({ req, response }), CONTINUE_WAIT_MS)
    req.once('continue', () => resolve({ req, response }))
    response.then(
      (res) => resolve(res.statusCode === 200 ? { req, response } : { req, response, early: res }),
      reject,
    )
    void response.finally(() => clearTimeout(timer)).catch(() => undefined)
    req.once('continue', () => clearTimeout(timer))
  })
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
    const res = await sendFile(
      agents,
      resourceUrl(session, path, { task_id: task, ...query }),
      size,
      request,
      () => waitTask(session, task, AbortSignal.timeout(5000)).catch(() => undefined),
    )
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

/**
 * Sends the file to the host that takes it: a 302 answered to the head (xapi's, to the member
 * that holds the storage) is followed with the same task before any byte of the body went out.
 * Returns the answer to the request whose body was sent; `outcome` reads the task when a host
 * refused, for its reason.
 */
async function sendFile(
  agents: StreamAgents,
  url: string,
  size: number,
  request: PutRequest,
  outcome: () => Promise<TaskOutcome | undefined>,
): Promise<IncomingMessage> {
  const idleMs = request.stallTimeout * 1000
  let target = url
  const refused = async (error: unknown): Promise<never> => {
    if (request.signal.aborted) throw new DpxenError('ABORTED', 'interrupted', { cause: error })
    const failed = await outcome()
    if (failed && failed.status !== 'success') throw new XapiError(failed.errorInfo, 'import')
    throw error instanceof DpxenError ? error : connectionError(new URL(target).origin, error)
  }
  const res = await followRedirects(
    agents.trust,
    url,
    async (current) => {
      target = current
      const opened = await open(agents, current, size, idleMs, request.signal).catch(refused)
      if (opened.early) {
        opened.req.destroy()
        return opened.early
      }
      await upload(request.file, opened.req).catch(refused)
      return opened.response.catch(refused)
    },
    (answer) => {
      if (answer.statusCode !== 302 || !answer.headers.location) return undefined
      answer.resume()
      return answer.headers.location
    },
  )
  if (res.statusCode !== 200) {
    res.resume()
    return refused(
      new DpxenError('VM_FAILED', `${new URL(target).origin} answered HTTP ${res.statusCode} to the upload`),
    )
  }
  return res
}
