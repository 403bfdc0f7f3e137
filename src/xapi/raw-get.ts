// GET of a large body (an export) over a socket that reads into one buffer allocated once.
// node:http hands every 64 KiB read over as a new Buffer: at several hundred MB/s that garbage
// kept V8's collector and the stream machinery busy for more CPU than the transfer itself,
// and let tens of MiB of dead buffers pile up before a collection. Here the body is pushed to
// a synchronous consumer that must be done with each piece when it returns (it hashes,
// verifies and copies it); it returns false to stop reading until resume().
//
// HTTP/1.1 request, `Connection: close`; the answer may be HTTP/1.0 or 1.1, its body framed by
// Content-Length or by the connection's end (xapi's /export). A chunked body is refused: xapi
// never sends one for these handlers. 302 is followed to another pool member.
import type { Socket } from 'node:net'
import { DpxenError } from '../errors.js'
import { VERSION } from '../version.js'
import { connectionError, openSocket, type SocketPolicy } from './connection.js'
import { followRedirects } from './http.js'

const MAX_HEAD = 64 * 1024
/** Bytes per read: small enough that a piece is still in the CPU cache while it is hashed, verified and copied. */
export const READ_SIZE = 256 * 1024

export interface RawGetOptions {
  signal?: AbortSignal
  /** Milliseconds without a byte before the transfer counts as stalled. */
  idleMs: number
}

/** Takes a piece of the body, valid only during the call; false pauses reading until resume(). */
export type BodyConsumer = (chunk: Buffer) => boolean

export interface RawResponse {
  status: number
  /** Header names in lower case. */
  headers: Record<string, string>
  /** Streams the body to `consume`; resolves at its end. A throw in `consume` ends it with that error. */
  pump(consume: BodyConsumer): Promise<void>
  /** Reading goes on after `consume` returned false. */
  resume(): void
  /** Reads a short body whole (an error answer), at most 64 KiB. */
  text(): Promise<string>
  /** Closes the connection; a pump under way rejects with `error`. */
  destroy(error?: Error): void
}

function stalled(): Error {
  return Object.assign(new Error('the host sent nothing for too long'), { code: 'ETIMEDOUT_IDLE' })
}

function parseHead(head: string, origin: string): { status: number; headers: Record<string, string> } {
  const [statusLine = '', ...lines] = head.split('\r\n')
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine)
  if (!match)
    throw new DpxenError('EXPORT_FAILED', `${origin} did not answer in HTTP: "${statusLine.slice(0, 60)}"`)
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status: Number(match[1]), headers }
}

function once(policy: SocketPolicy, url: string, options: RawGetOptions): Promise<RawResponse> {
  const target = new URL(url)
  const buffer = Buffer.allocUnsafeSlow(READ_SIZE)
  let head: Buffer[] = []
  let headBytes = 0
  let response: RawResponse | undefined
  /**
   * Body bytes that arrived while the consumer was not taking any (before pump(), or after it
   * said stop: TLS may hand over several decrypted records after a pause), copied.
   */
  const stash: Buffer[] = []
  let paused = true
  /** The connection ended while bytes still waited in the stash. */
  let eof = false
  let consume: BodyConsumer | undefined
  let left = Infinity
  let ended = false
  let failure: Error | undefined
  let settleHead: { resolve: (r: RawResponse) => void; reject: (e: Error) => void } | undefined
  let settleBody: { resolve: () => void; reject: (e: Error) => void } | undefined
  let socket: Socket | undefined

  const fail = (error: Error): void => {
    if (failure || ended) return
    failure = error
    socket?.destroy()
    settleHead?.reject(error)
    settleBody?.reject(error)
  }
  const end = (): void => {
    if (failure || ended) return
    ended = true
    socket?.destroy()
    settleBody?.resolve()
  }
  /** Gives a piece of body to the consumer; false pauses. */
  const deliver = (piece: Buffer): boolean => {
    const take = piece.length > left ? piece.subarray(0, left) : piece
    left -= take.length
    let more = true
    try {
      if (take.length) more = consume!(take)
    } catch (error) {
      fail(error as Error)
      return false
    }
    if (left === 0) end()
    return more
  }
  /** Delivers the stash; true when it is empty and the consumer wants more. */
  const drainStash = (): boolean => {
    while (stash.length) {
      if (failure || ended) return false
      if (!deliver(stash.shift()!)) return false
    }
    return !failure && !ended
  }
  const onRead = (length: number, buf: Buffer): boolean => {
    if (failure || ended) return false
    const piece = buf.subarray(0, length)
    if (!response) {
      head.push(Buffer.from(piece))
      headBytes += piece.length
      const all = head.length === 1 ? head[0]! : Buffer.concat(head)
      head = [all]
      const at = all.indexOf('\r\n\r\n')
      if (at < 0) {
        if (headBytes > MAX_HEAD)
          fail(new DpxenError('EXPORT_FAILED', `${target.origin} sent an answer head over 64 KiB`))
        return true
      }
      let parsed: ReturnType<typeof parseHead>
      try {
        parsed = parseHead(all.subarray(0, at).toString('latin1'), target.origin)
      } catch (error) {
        fail(error as Error)
        return false
      }
      if (/chunked/i.test(parsed.headers['transfer-encoding'] ?? '')) {
        fail(
          new DpxenError(
            'EXPORT_FAILED',
            `${target.origin} sent a chunked body, which xapi never does for a transfer (is a proxy in between?)`,
          ),
        )
        return false
      }
      const length = parsed.headers['content-length']
      if (length !== undefined) left = Number(length)
      const rest = all.subarray(at + 4)
      if (rest.length) stash.push(rest)
      head = []
      response = makeResponse(parsed)
      settleHead?.resolve(response)
      settleHead = undefined
      // Wait for pump(): the bytes that came with the head go first.
      return false
    }
    if (paused) {
      stash.push(Buffer.from(piece))
      return false
    }
    if (deliver(piece)) return true
    paused = true
    return false
  }
  const goOn = (): void => {
    paused = true
    if (!drainStash()) return
    if (eof) return onEnd()
    paused = false
    socket!.resume()
  }
  const onEnd = (): void => {
    if (!response)
      fail(new DpxenError('EXPORT_FAILED', `${target.origin} closed the connection without an answer`))
    else if (stash.length) eof = true
    else if (left !== Infinity && left > 0)
      fail(Object.assign(new Error('the connection was closed early'), { code: 'ECONNRESET' }))
    else end()
  }

  const makeResponse = (parsed: { status: number; headers: Record<string, string> }): RawResponse => ({
    ...parsed,
    pump(consumer) {
      consume = consumer
      return new Promise<void>((resolve, reject) => {
        if (failure) return reject(failure)
        settleBody = { resolve, reject }
        if (left === 0) return end()
        goOn()
      })
    },
    resume() {
      if (!ended && !failure) goOn()
    },
    async text() {
      const parts: Buffer[] = []
      let size = 0
      await this.pump((chunk) => {
        if (size < MAX_HEAD) parts.push(Buffer.from(chunk.subarray(0, MAX_HEAD - size)))
        size += chunk.length
        return true
      })
      return Buffer.concat(parts).toString('utf8')
    },
    destroy(error) {
      if (error) fail(error)
      else if (!ended && !failure) {
        failure = new DpxenError('ABORTED', 'closed')
        socket?.destroy()
        settleBody?.reject(failure)
      }
    },
  })

  return new Promise<RawResponse>((resolve, reject) => {
    settleHead = { resolve, reject }
    const onAbort = (): void => fail(new DpxenError('ABORTED', 'interrupted'))
    if (options.signal?.aborted) return onAbort()
    options.signal?.addEventListener('abort', onAbort, { once: true })
    let ready = false
    socket = openSocket(target, policy, { buffer, callback: onRead }, (error) => {
      if (ready) return
      ready = true
      if (error) return fail(options.signal?.aborted ? error : connectionError(target.origin, error))
      socket!.write(
        `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nUser-Agent: dpxen/${VERSION}\r\nAccept: */*\r\nConnection: close\r\n\r\n`,
      )
    })
    socket.setTimeout(options.idleMs, () => fail(stalled()))
    socket.on('error', (error) => fail(ready ? error : connectionError(target.origin, error)))
    socket.on('end', () => {
      if (!response)
        fail(new DpxenError('EXPORT_FAILED', `${target.origin} closed the connection without an answer`))
      else if (left !== Infinity && left > 0)
        fail(Object.assign(new Error('the connection was closed early'), { code: 'ECONNRESET' }))
      else end()
    })
    socket.on('close', () => {
      options.signal?.removeEventListener('abort', onAbort)
      if (!ended) fail(Object.assign(new Error('the connection was closed'), { code: 'ECONNRESET' }))
    })
  })
}

/** GET a resource for a raw transfer, following redirects. */
export function rawGet(policy: SocketPolicy, url: string, options: RawGetOptions): Promise<RawResponse> {
  return followRedirects(
    url,
    (current) => once(policy, current, options),
    (res) => {
      if (res.status !== 302 || !res.headers.location) return undefined
      res.destroy()
      return res.headers.location
    },
  )
}
