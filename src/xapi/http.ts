// Streamed HTTP transfers with a host (node:http, see connection.ts): GET following 302 to
// another pool member, with an inactivity timeout, and bodies always consumed or destroyed.
import { request as httpRequest, type IncomingMessage, type Agent as HttpAgent } from 'node:http'
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https'
import { DpxenError } from '../core/errors.js'
import { connectionError, stalledError, type Trust } from './connection.js'
import type { XapiSession } from './session.js'

const MAX_REDIRECTS = 3
const READ_BUFFER = 4 * 1024 * 1024

export interface StreamAgents {
  http: HttpAgent
  https: HttpsAgent
  /** Makes every connection (raw-get.ts uses it directly). */
  trust: Trust
}

export function resourceUrl(session: XapiSession, path: string, query: Record<string, string>): string {
  const url = new URL(path, session.url)
  for (const [key, value] of Object.entries({ session_id: session.ref, ...query }))
    url.searchParams.set(key, value)
  return url.toString()
}

export interface GetOptions {
  signal?: AbortSignal
  /** Milliseconds without a byte before the transfer counts as stalled. */
  idleMs: number
}

function once(agents: StreamAgents, url: string, options: GetOptions): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const target = new URL(url)
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest
    const req = send(target, {
      method: 'GET',
      agent: target.protocol === 'https:' ? agents.https : agents.http,
      // A large read buffer: the socket is paused less often, so the host keeps sending
      // (Node 20 takes highWaterMark here; its types do not list it yet).
      ...({ highWaterMark: READ_BUFFER } as object),
      ...(options.signal ? { signal: options.signal } : {}),
    })
    req.setTimeout(options.idleMs, () => req.destroy(stalledError(target.origin, options.idleMs)))
    req.once('response', (res) => {
      res.setTimeout(options.idleMs, () => res.destroy(stalledError(target.origin, options.idleMs)))
      resolve(res)
    })
    req.once('error', (error) => {
      if (options.signal?.aborted) reject(new DpxenError('ABORTED', 'interrupted', { cause: error }))
      else reject(connectionError(target.origin, error))
    })
    req.end()
  })
}

/**
 * Opens `url` and follows 302 to another pool member (xapi sends one when another member holds
 * the storage), at most 3 times. `redirect` gives a 302's location, letting that answer go. A
 * redirect to a host that is not one of the pool's is refused: nothing goes there.
 */
export async function followRedirects<T>(
  trust: Trust,
  url: string,
  open: (url: string) => Promise<T>,
  redirect: (res: T) => string | undefined,
): Promise<T> {
  let current = url
  for (let hop = 0; ; hop++) {
    const res = await open(current)
    const location = hop < MAX_REDIRECTS ? redirect(res) : undefined
    if (location === undefined) return res
    const next = new URL(location, current)
    if (!trust.knows(next.hostname))
      throw new DpxenError(
        'CONNECT_FAILED',
        `${new URL(current).host} redirected the transfer to ${next.host}, which is not a host of this pool (refused: nothing was sent there; check the pool's host addresses with "dpxen check")`,
      )
    current = next.toString()
  }
}

/** GET a resource, following redirects. */
export function getResource(
  agents: StreamAgents,
  url: string,
  options: GetOptions,
): Promise<IncomingMessage> {
  return followRedirects(
    agents.trust,
    url,
    (current) => once(agents, current, options),
    (res) => {
      if (res.statusCode !== 302 || !res.headers.location) return undefined
      res.resume()
      return res.headers.location
    },
  )
}

/** Reads and drops a body (for error answers). */
export async function drain(res: IncomingMessage): Promise<void> {
  res.resume()
  await new Promise<void>((resolve) => {
    res.once('end', resolve)
    res.once('error', () => resolve())
    res.once('close', resolve)
  })
}
