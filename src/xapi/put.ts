// PUT of a file to a host (node:http, whose Expect: 100-continue lets a 302 be learnt before
// the body goes): an exact Content-Length (xapi refuses chunked bodies), the file streamed with
// backpressure from two buffers, and a 302 to the pool member that holds the storage followed
// with the same task. The task itself is the caller's (host.ts).
import { promises as fsp } from 'node:fs'
import {
  request as httpRequest,
  type Agent as HttpAgent,
  type ClientRequest,
  type IncomingMessage,
} from 'node:http'
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https'
import type { Ms } from '../core/format.js'
import { DpxenError, XapiError } from '../core/errors.js'
import { openRegularFile } from '../core/small-file.js'
import { connectionError, stalledError, type Trust } from './connection.js'
import { followRedirects } from './http.js'
import type { TaskOutcome } from './tasks.js'

/** node:http(s) agents whose connections the trust makes (connection.ts). */
export interface UploadAgents {
  http: HttpAgent
  https: HttpsAgent
}

export interface PutOptions {
  file: string
  signal: AbortSignal
  /** Milliseconds without the host taking a byte before the upload counts as stalled. */
  idleMs: Ms
  /** Reads the task when a host refused, for its reason. */
  outcome: () => Promise<TaskOutcome | undefined>
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
function open(agents: UploadAgents, url: string, length: number, idleMs: Ms, signal: AbortSignal) {
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
async function sendBody(file: string, req: ClientRequest): Promise<void> {
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

/**
 * Sends the file to the host that takes it: a 302 answered to the head (xapi's, to the member
 * that holds the storage) is followed with the same task before any byte of the body went out.
 * Resolves once the host that took the body answered 200 and its answer was read.
 */
export async function putFile(
  trust: Trust,
  agents: UploadAgents,
  url: string,
  request: PutOptions,
): Promise<void> {
  const { idleMs, outcome } = request
  const { size } = await fsp.stat(request.file)
  let target = url
  const refused = async (error: unknown): Promise<never> => {
    if (request.signal.aborted) throw new DpxenError('ABORTED', 'interrupted', { cause: error })
    const failed = await outcome()
    if (failed && failed.status !== 'success') throw new XapiError(failed.errorInfo, 'import')
    throw error instanceof DpxenError ? error : connectionError(new URL(target).origin, error)
  }
  const res = await followRedirects(
    trust,
    url,
    async (current) => {
      target = current
      const opened = await open(agents, current, size, idleMs, request.signal).catch(refused)
      if (opened.early) {
        opened.req.destroy()
        return opened.early
      }
      await sendBody(request.file, opened.req).catch(refused)
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
  await drain(res)
}

/** Reads and drops a body. */
function drain(res: IncomingMessage): Promise<void> {
  res.resume()
  return new Promise<void>((resolve) => {
    res.once('end', resolve)
    res.once('error', () => resolve())
    res.once('close', resolve)
  })
}
