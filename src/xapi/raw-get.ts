// GET of a large body (an export) over a socket that reads into one buffer allocated once.
// node:http hands every 64 KiB read over as a new Buffer: at several hundred MB/s that garbage
// kept V8's collector and the stream machinery busy for more CPU than the transfer itself.
// Here the body is pushed to a synchronous consumer that must be done with each piece when it
// returns (it hashes, verifies and copies it); it returns false to stop reading until resume().
//
// HTTP/1.1 request, `Connection: close`; the answer may be HTTP/1.0 or 1.1, its body framed by
// Content-Length or by the connection's end (xapi's /export). A chunked body is refused: xapi
// never sends one for these handlers. 302 is followed to another pool member.
//
// The answer is one explicit state machine (`Phase`, moved only by `Exchange`'s methods) with
// one end-of-stream path, `#settle`: the body has ended when every byte received has been
// delivered and either the declared length is reached or the host closed its side. Bytes that
// arrive while the consumer is not taking any (TLS hands over records it had decrypted before
// the pause; the head's read may carry body bytes) wait in a stash, in order, and the end waits
// for them. A body framed by the connection's end can only be as complete as what the host
// sent: the tar end marker and the host's task are checked above this layer.
import type { Socket } from 'node:net'
import type { Ms } from '../core/format.js'
import { DpxenError } from '../core/errors.js'
import { VERSION } from '../core/version.js'
import { connectionError, stalledError, type Trust } from './connection.js'
import { followRedirects } from './http.js'

const MAX_HEAD = 64 * 1024
/** Bytes per read: small enough that a piece is still in the CPU cache while it is hashed, verified and copied. */
export const READ_SIZE = 256 * 1024

export interface RawGetOptions {
  signal?: AbortSignal
  /** Milliseconds without a byte, while one is awaited (connecting, the head, the body), before the transfer counts as stalled. */
  idleMs: Ms
}

/** Takes a piece of the body, valid only during the call; false pauses reading until resume(). */
export type BodyConsumer = (chunk: Buffer) => boolean

export interface RawResponse {
  status: number
  /** Header names in lower case. */
  headers: Record<string, string>
  /**
   * Streams the body to `consume`; resolves once every byte the host sent has been delivered
   * and the body has ended (its length reached, or the host closed the connection cleanly).
   * Rejects with TRANSFER_STALLED, TRANSFER_CLOSED (the connection ended before the declared
   * length, or was reset), ABORTED, or the error `consume` threw.
   */
  pump(consume: BodyConsumer): Promise<void>
  /** Reading goes on after `consume` returned false. */
  resume(): void
  /** Reads a short body whole (an error answer), at most 64 KiB kept. */
  text(): Promise<string>
  /** Closes the connection; a pump under way rejects with `error` (ABORTED by default). */
  destroy(error?: Error): void
}

/**
 * - `head`: reading the answer head (connecting counts here too);
 * - `waiting`: the head is parsed, no consumer yet; body bytes wait in the stash;
 * - `flowing`: pieces go to the consumer as they arrive;
 * - `paused`: the consumer said stop; pieces that still arrive wait in the stash;
 * - `ended`, `failed`: final; the socket is closed.
 * Orthogonal to the phase: `#hostDone` (the host closed its side: no more bytes will come).
 */
type Phase = 'head' | 'waiting' | 'flowing' | 'paused' | 'ended' | 'failed'

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

/** One request and its answer on one connection. */
class Exchange {
  readonly #origin: string
  readonly #idleMs: Ms
  #phase: Phase = 'head'
  #socket: Socket | undefined
  #head: Buffer = Buffer.alloc(0)
  /** Body bytes received but not yet delivered, in order (copies: the read buffer is reused). */
  #stash: Buffer[] = []
  /** Body bytes still to come by the declared Content-Length; Infinity when the connection's end frames it. */
  #left = Infinity
  #hostDone = false
  #consume: BodyConsumer | undefined
  /** Set while a stash is being delivered: a resume() from inside the consumer must not nest. */
  #delivering = false
  #onHead: { resolve: (r: RawResponse) => void; reject: (e: Error) => void }
  #onBody: { resolve: () => void; reject: (e: Error) => void } | undefined
  #failure: Error | undefined

  constructor(
    origin: string,
    idleMs: Ms,
    onHead: { resolve: (r: RawResponse) => void; reject: (e: Error) => void },
  ) {
    this.#origin = origin
    this.#idleMs = idleMs
    this.#onHead = onHead
  }

  get final(): boolean {
    return this.#phase === 'ended' || this.#phase === 'failed'
  }

  attach(socket: Socket): void {
    this.#socket = socket
    socket.setTimeout(this.#idleMs, () => this.fail(stalledError(this.#origin, this.#idleMs)))
  }

  /** A read from the socket (valid only during the call); false stops the socket reading. */
  read(piece: Buffer): boolean {
    switch (this.#phase) {
      case 'head':
        return this.#readHead(piece)
      case 'flowing':
        if (this.#stash.length === 0) return this.#deliver(piece)
        this.#stash.push(Buffer.from(piece))
        this.#drain()
        return this.#phase === 'flowing'
      case 'waiting':
      case 'paused':
        this.#stash.push(Buffer.from(piece))
        return false
      default:
        return false
    }
  }

  /** The host closed its side cleanly: no more bytes will come. */
  hostEnded(): void {
    if (this.final) return
    if (this.#phase === 'head') return this.fail(this.#noAnswer())
    this.#hostDone = true
    this.#settle()
  }

  /** The connection is gone: a failure unless the host had ended cleanly (the stash may still be delivered). */
  closed(): void {
    if (this.final || this.#hostDone) return
    this.fail(
      this.#phase === 'head'
        ? this.#noAnswer()
        : new DpxenError('TRANSFER_CLOSED', `${this.#origin} closed the connection during the transfer`),
    )
  }

  fail(error: Error): void {
    if (this.final) return
    this.#phase = 'failed'
    this.#failure = error
    this.#stash = []
    this.#socket?.destroy()
    this.#onHead.reject(error)
    this.#onBody?.reject(error)
  }

  pump(consume: BodyConsumer): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.#phase === 'failed') return reject(this.#failure!)
      if (this.#phase !== 'waiting') return reject(new Error('pump() called twice'))
      this.#consume = consume
      this.#onBody = { resolve, reject }
      this.#phase = 'flowing'
      this.#drain()
    })
  }

  resume(): void {
    if (this.#phase !== 'paused') return
    this.#phase = 'flowing'
    if (!this.#delivering) this.#drain()
  }

  #noAnswer(): DpxenError {
    return new DpxenError('EXPORT_FAILED', `${this.#origin} closed the connection without an answer`)
  }

  #readHead(piece: Buffer): boolean {
    const all = Buffer.concat([this.#head, piece])
    const at = all.indexOf('\r\n\r\n')
    if (at < 0) {
      if (all.length > MAX_HEAD)
        this.fail(new DpxenError('EXPORT_FAILED', `${this.#origin} sent an answer head over 64 KiB`))
      else this.#head = all
      return !this.final
    }
    this.#head = Buffer.alloc(0)
    let parsed: ReturnType<typeof parseHead>
    try {
      parsed = parseHead(all.subarray(0, at).toString('latin1'), this.#origin)
    } catch (error) {
      this.fail(error as Error)
      return false
    }
    // Only a transfer's body is refused chunked: an error page's framing does not matter, the
    // task says what went wrong.
    const ok = parsed.status >= 200 && parsed.status < 300
    if (ok && /chunked/i.test(parsed.headers['transfer-encoding'] ?? '')) {
      this.fail(
        new DpxenError(
          'EXPORT_FAILED',
          `${this.#origin} sent a chunked body, which xapi never does for a transfer (is a proxy in between?)`,
        ),
      )
      return false
    }
    const length = parsed.headers['content-length']
    if (length !== undefined) {
      if (!/^\d+$/.test(length)) {
        this.fail(
          new DpxenError(
            'EXPORT_FAILED',
            `${this.#origin} sent a bad Content-Length "${length.slice(0, 20)}"`,
          ),
        )
        return false
      }
      this.#left = Number(length)
    }
    const rest = all.subarray(at + 4)
    if (rest.length) this.#stash.push(rest)
    this.#phase = 'waiting'
    // Nothing is awaited from the host until a consumer comes.
    this.#socket?.setTimeout(0)
    this.#onHead.resolve(this.#response(parsed))
    return false
  }

  /** Gives one piece to the consumer; whether reading may go on. */
  #deliver(piece: Buffer): boolean {
    const take = piece.length > this.#left ? piece.subarray(0, this.#left) : piece
    this.#left -= take.length
    let more = true
    if (take.length) {
      try {
        more = this.#consume!(take)
      } catch (error) {
        this.fail(error as Error)
        return false
      }
    }
    // The consumer may have destroyed the exchange, or resumed it from inside the call.
    if (this.final) return false
    if (!more && this.#phase === 'flowing') this.#phase = 'paused'
    if (this.#left === 0) {
      this.#settle()
      return false
    }
    return this.#phase === 'flowing'
  }

  /** Delivers the stash while the consumer takes it, then settles or reads on. */
  #drain(): void {
    this.#delivering = true
    try {
      while (this.#phase === 'flowing' && this.#stash.length) this.#deliver(this.#stash.shift()!)
    } finally {
      this.#delivering = false
    }
    this.#settle()
  }

  /**
   * The one end-of-stream path. Ended: nothing left in the stash and the length reached, or the
   * host closed cleanly with no length declared. Closed early: the host closed before the
   * declared length. Otherwise, a flowing body reads on.
   */
  #settle(): void {
    if (this.final || this.#phase === 'head' || this.#phase === 'waiting') return
    if (this.#stash.length === 0 && (this.#left === 0 || this.#hostDone)) {
      if (this.#left !== Infinity && this.#left > 0) {
        this.fail(
          new DpxenError(
            'TRANSFER_CLOSED',
            `${this.#origin} closed the connection ${this.#left} bytes before the end of the body`,
          ),
        )
        return
      }
      this.#phase = 'ended'
      this.#socket?.destroy()
      this.#onBody?.resolve()
      return
    }
    if (this.#phase === 'flowing' && this.#stash.length === 0 && !this.#hostDone) {
      this.#socket?.setTimeout(this.#idleMs)
      this.#socket?.resume()
    } else if (this.#phase === 'paused') {
      // Waiting for our own consumer is not the host stalling.
      this.#socket?.setTimeout(0)
    }
  }

  #response(parsed: { status: number; headers: Record<string, string> }): RawResponse {
    return {
      ...parsed,
      pump: (consume) => this.pump(consume),
      resume: () => this.resume(),
      text: async () => {
        const parts: Buffer[] = []
        let size = 0
        await this.pump((chunk) => {
          if (size < MAX_HEAD) parts.push(Buffer.from(chunk.subarray(0, MAX_HEAD - size)))
          size += chunk.length
          return true
        })
        return Buffer.concat(parts).toString('utf8')
      },
      destroy: (error) => this.fail(error ?? new DpxenError('ABORTED', 'closed')),
    }
  }
}

function once(trust: Trust, url: string, options: RawGetOptions): Promise<RawResponse> {
  const target = new URL(url)
  const buffer = Buffer.allocUnsafeSlow(READ_SIZE)
  return new Promise<RawResponse>((resolve, reject) => {
    const exchange = new Exchange(target.origin, options.idleMs, { resolve, reject })
    const onAbort = (): void => exchange.fail(new DpxenError('ABORTED', 'interrupted'))
    if (options.signal?.aborted) return onAbort()
    options.signal?.addEventListener('abort', onAbort, { once: true })
    let ready = false
    const socket = trust.connect(
      { protocol: target.protocol, hostname: target.hostname, port: Number(target.port) },
      (error) => {
        if (ready) return
        ready = true
        if (error)
          return exchange.fail(options.signal?.aborted ? error : connectionError(target.origin, error))
        socket.write(
          `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nUser-Agent: dpxen/${VERSION}\r\nAccept: */*\r\nConnection: close\r\n\r\n`,
        )
      },
      { buffer, callback: (length) => exchange.read(buffer.subarray(0, length)) },
    )
    exchange.attach(socket)
    socket.on('error', (error) => {
      if (!ready) return // the ready callback has it
      exchange.fail(
        new DpxenError('TRANSFER_CLOSED', `${target.origin}: the connection failed (${describe(error)})`, {
          cause: error,
        }),
      )
    })
    socket.on('end', () => exchange.hostEnded())
    socket.on('close', () => {
      options.signal?.removeEventListener('abort', onAbort)
      exchange.closed()
    })
  })
}

function describe(error: Error): string {
  return (error as NodeJS.ErrnoException).code ?? error.message
}

/** GET a resource for a raw transfer, following redirects. */
export function rawGet(trust: Trust, url: string, options: RawGetOptions): Promise<RawResponse> {
  return followRedirects(
    trust,
    url,
    (current) => once(trust, current, options),
    (res) => {
      if (res.status !== 302 || !res.headers.location) return undefined
      res.destroy()
      return res.headers.location
    },
  )
}
