// An NBD client for reading a VDI from the host that serves it (VDI.get_nbd_info): the
// fixed-newstyle handshake, STARTTLS when the host gives a certificate, NBD_OPT_GO, and
// NBD_OPT_EXPORT_NAME when the server does not know GO (xapi-nbd: its server answers
// ERR_UNSUP to every option but EXPORT_NAME, ABORT, LIST and STARTTLS); then NBD_CMD_READ with
// simple replies, one request at a time, into the caller's buffer.
//
// Our own rather than @vates/nbd-client (ISC): that package brings Xen Orchestra's xen-api
// client, promise-toolbox and its logging and disk-transform packages with it, does not verify
// the host's certificate (rejectUnauthorized: false), and has no place for an AbortSignal or a
// stall timeout. This one is ~250 lines over node:net and node:tls: the certificate is pinned to
// the one the pool gives for the host (get_nbd_info's `cert`, learnt over a session with a
// trusted host), a stall is TRANSFER_STALLED, a cut TRANSFER_CLOSED, an abort ABORTED.
import { X509Certificate } from 'node:crypto'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { DpxenError } from '../core/errors.js'
import type { Ms } from '../core/format.js'
import { connectionError, stalledError } from './connection.js'

/** Where and what to read: a record of VDI.get_nbd_info. */
export interface NbdTarget {
  address: string
  port: number
  /** A secret: it holds the session (`/<vdi-uuid>?session_id=…`). Never logged. */
  exportName: string
  /** The host's certificate (PEM): TLS, pinned to it. Without one: plain NBD (insecure_nbd). */
  cert?: string
}

const IHAVEOPT = Buffer.from('IHAVEOPT')
const OPTION_REPLY_MAGIC = 0x3e889045565a9n
const REQUEST_MAGIC = 0x25609513
const SIMPLE_REPLY_MAGIC = 0x67446698
const FLAG_FIXED_NEWSTYLE = 1
const FLAG_NO_ZEROES = 2
const OPT = { EXPORT_NAME: 1, STARTTLS: 5, GO: 7 }
const REP = { ACK: 1, INFO: 3, ERR_UNSUP: 0x80000001 }
const CMD = { READ: 0, DISC: 2 }

/** Exact reads from a socket, bounded by a stall timeout and an abort signal. */
class Incoming {
  #chunks: Buffer[] = []
  #have = 0
  #want: { n: number; resolve: (b: Buffer) => void; reject: (e: unknown) => void } | undefined
  #failure: unknown
  readonly #onData = (chunk: Buffer): void => {
    this.#chunks.push(chunk)
    this.#have += chunk.length
    this.#serve()
  }

  constructor(
    readonly socket: Socket,
    readonly origin: string,
    idleMs: Ms,
  ) {
    socket.on('data', this.#onData)
    socket.setTimeout(idleMs, () => socket.destroy(stalledError(origin, idleMs)))
    socket.once('error', (error) => this.fail(error))
    socket.once('close', () =>
      this.fail(new DpxenError('TRANSFER_CLOSED', `${origin} closed the NBD connection`)),
    )
  }

  fail(error: unknown): void {
    this.#failure ??= error
    this.#want?.reject(this.#failure)
    this.#want = undefined
  }

  read(n: number): Promise<Buffer> {
    if (this.#failure !== undefined && this.#have < n) return Promise.reject(this.#failure)
    return new Promise((resolve, reject) => {
      this.#want = { n, resolve, reject }
      this.#serve()
    })
  }

  /** Stops listening: the socket goes to TLS. */
  detach(): void {
    this.socket.off('data', this.#onData)
    this.socket.setTimeout(0)
    this.socket.removeAllListeners('error')
    this.socket.removeAllListeners('close')
  }

  /** Hands over the bytes asked for, taking whole chunks where it can (no joining of the rest). */
  #serve(): void {
    const want = this.#want
    if (!want || this.#have < want.n) return
    const parts: Buffer[] = []
    for (let need = want.n; need > 0;) {
      const head = this.#chunks[0]!
      if (head.length <= need) {
        parts.push(head)
        this.#chunks.shift()
        need -= head.length
      } else {
        parts.push(head.subarray(0, need))
        this.#chunks[0] = head.subarray(need)
        need = 0
      }
    }
    this.#have -= want.n
    this.#want = undefined
    want.resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts, want.n))
  }
}

function protocolError(origin: string, what: string): DpxenError {
  return new DpxenError('EXPORT_FAILED', `${origin}: the NBD server ${what}`)
}

function option(socket: Socket, opt: number, payload: Buffer = Buffer.alloc(0)): void {
  const head = Buffer.alloc(16)
  IHAVEOPT.copy(head, 0)
  head.writeUInt32BE(opt, 8)
  head.writeUInt32BE(payload.length, 12)
  socket.write(Buffer.concat([head, payload]))
}

/** One option reply: its type and data. */
async function optionReply(incoming: Incoming, opt: number): Promise<{ type: number; data: Buffer }> {
  const head = await incoming.read(20)
  if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC || head.readUInt32BE(8) !== opt)
    throw protocolError(incoming.origin, 'answered an option out of turn')
  const length = head.readUInt32BE(16)
  if (length > 64 * 1024) throw protocolError(incoming.origin, 'sent an option reply too long to be one')
  return { type: head.readUInt32BE(12), data: length ? await incoming.read(length) : Buffer.alloc(0) }
}

/** A connection to one export, ready for reads. */
export class NbdConnection {
  readonly #incoming: Incoming
  #handle = 0n
  #closed = false

  private constructor(
    incoming: Incoming,
    readonly size: number,
    readonly readOnly: boolean,
  ) {
    this.#incoming = incoming
  }

  /** Connects, negotiates (TLS when the target has a certificate), and opens the export. */
  static async open(target: NbdTarget, options: { idleMs: Ms; signal: AbortSignal }): Promise<NbdConnection> {
    const origin = `nbd://${target.address}:${target.port}`
    options.signal.throwIfAborted()
    const raw = netConnect({ host: target.address, port: target.port })
    let incoming = new Incoming(raw, origin, options.idleMs)
    const onAbort = (): void => {
      incoming.socket.destroy()
      incoming.fail(new DpxenError('ABORTED', 'interrupted'))
    }
    options.signal.addEventListener('abort', onAbort, { once: true })
    try {
      const greeting = await incoming.read(18)
      if (greeting.toString('latin1', 0, 8) !== 'NBDMAGIC' || !greeting.subarray(8, 16).equals(IHAVEOPT))
        throw protocolError(origin, 'did not greet as a fixed-newstyle NBD server')
      const serverFlags = greeting.readUInt16BE(16)
      if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) throw protocolError(origin, 'is not fixed-newstyle')
      const noZeroes = (serverFlags & FLAG_NO_ZEROES) !== 0
      const flags = Buffer.alloc(4)
      flags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (noZeroes ? FLAG_NO_ZEROES : 0))
      raw.write(flags)
      if (target.cert) incoming = await startTls(incoming, target.cert, options.idleMs)
      const { size, flags: exportFlags } = await openExport(incoming, target.exportName, noZeroes)
      return new NbdConnection(incoming, size, (exportFlags & 2) !== 0)
    } catch (error) {
      incoming.socket.destroy()
      if (options.signal.aborted) throw new DpxenError('ABORTED', 'interrupted')
      // A refused or unreachable port, a TLS failure: CONNECT_FAILED naming the NBD address.
      throw connectionError(origin, error)
    } finally {
      options.signal.removeEventListener('abort', onAbort)
    }
  }

  /** Reads `length` bytes at `offset` into `into` (at its start); exactly, or throws. */
  async read(offset: number, length: number, into: Buffer, signal: AbortSignal): Promise<void> {
    if (this.#closed)
      throw new DpxenError('TRANSFER_CLOSED', `${this.#incoming.origin}: the connection is closed`)
    if (offset + length > this.size)
      throw protocolError(this.#incoming.origin, `export ends at ${this.size}, before ${offset + length}`)
    signal.throwIfAborted()
    const onAbort = (): void => void this.#incoming.socket.destroy(new DpxenError('ABORTED', 'interrupted'))
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      const request = Buffer.alloc(28)
      request.writeUInt32BE(REQUEST_MAGIC, 0)
      request.writeUInt16BE(CMD.READ, 6)
      const handle = ++this.#handle
      request.writeBigUInt64BE(handle, 8)
      request.writeBigUInt64BE(BigInt(offset), 16)
      request.writeUInt32BE(length, 24)
      this.#incoming.socket.write(request)
      const reply = await this.#incoming.read(16)
      if (reply.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC || reply.readBigUInt64BE(8) !== handle)
        throw protocolError(this.#incoming.origin, 'sent a reply that is not the one to this read')
      const error = reply.readUInt32BE(4)
      if (error)
        throw protocolError(
          this.#incoming.origin,
          `refused to read ${length} bytes at ${offset} (errno ${error})`,
        )
      // The data in pieces as they come, copied out, so nothing of the socket's is kept.
      for (let at = 0; at < length;) {
        const piece = await this.#incoming.read(Math.min(length - at, 256 * 1024))
        piece.copy(into, at)
        at += piece.length
      }
    } catch (error) {
      this.#closed = true
      this.#incoming.socket.destroy()
      throw signal.aborted ? new DpxenError('ABORTED', 'interrupted') : error
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  /** Says goodbye (NBD_CMD_DISC) and closes; never throws. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const socket = this.#incoming.socket
    const disc = Buffer.alloc(28)
    disc.writeUInt32BE(REQUEST_MAGIC, 0)
    disc.writeUInt16BE(CMD.DISC, 6)
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve())
      socket.end(disc)
      setTimeout(() => (socket.destroy(), resolve()), 2000).unref()
    })
  }
}

/** STARTTLS, then TLS pinned to the host's certificate: nothing else is accepted. */
async function startTls(incoming: Incoming, cert: string, idleMs: Ms): Promise<Incoming> {
  option(incoming.socket, OPT.STARTTLS)
  const { type } = await optionReply(incoming, OPT.STARTTLS)
  if (type !== REP.ACK) throw protocolError(incoming.origin, `refused TLS (reply ${type.toString(16)})`)
  incoming.detach()
  const expected = new X509Certificate(cert).fingerprint256
  const tls = tlsConnect({ socket: incoming.socket, rejectUnauthorized: false })
  const secured = new Incoming(tls, incoming.origin, idleMs)
  await new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', () => {
      const presented = tls.getPeerCertificate().fingerprint256
      if (presented === expected) resolve()
      else
        reject(
          new DpxenError(
            'CONNECT_FAILED',
            `${incoming.origin}: the NBD server's certificate (SHA-256 ${presented}) is not the one the pool records for the host`,
          ),
        )
    })
    tls.once('error', reject)
  })
  return secured
}

/** NBD_OPT_GO, or NBD_OPT_EXPORT_NAME where the server does not know GO: the export's size and flags. */
async function openExport(
  incoming: Incoming,
  name: string,
  noZeroes: boolean,
): Promise<{ size: number; flags: number }> {
  const nameBytes = Buffer.from(name, 'utf8')
  const go = Buffer.alloc(4 + nameBytes.length + 2)
  go.writeUInt32BE(nameBytes.length, 0)
  nameBytes.copy(go, 4)
  option(incoming.socket, OPT.GO, go)
  let export_: { size: number; flags: number } | undefined
  for (;;) {
    const { type, data } = await optionReply(incoming, OPT.GO)
    if (type === REP.INFO && data.length >= 12 && data.readUInt16BE(0) === 0)
      export_ = { size: Number(data.readBigUInt64BE(2)), flags: data.readUInt16BE(10) }
    else if (type === REP.ACK) {
      if (!export_) throw protocolError(incoming.origin, 'opened the export without saying its size')
      return export_
    } else if (type === REP.ERR_UNSUP) break
    else if (type & 0x80000000)
      throw protocolError(
        incoming.origin,
        `refused the export (reply ${type.toString(16)}): is the session still valid?`,
      )
  }
  // The old way: no error reply exists; a refusal closes the connection.
  option(incoming.socket, OPT.EXPORT_NAME, nameBytes)
  const info = await incoming.read(noZeroes ? 10 : 134).catch((error: unknown) => {
    if (error instanceof DpxenError && error.code === 'TRANSFER_CLOSED')
      throw protocolError(
        incoming.origin,
        'closed the connection at the export name (an expired session, or a VDI it cannot serve)',
      )
    throw error
  })
  return { size: Number(info.readBigUInt64BE(0)), flags: info.readUInt16BE(8) }
}

/**
 * Reads `blocks` (ascending, each `blockSize` bytes of an export of `size` bytes) for a writer
 * that asks for them in that order, over several connections at once (one read in flight on
 * each, block k on connection k mod N): while the writer takes one block, the next N are on
 * their way. Memory: N + 1 blocks. The returned function gives block `b` into `into`.
 */
export function readAhead(
  connections: NbdConnection[],
  blocks: number[],
  options: { blockSize: number; size: number; signal: AbortSignal },
): (block: number, into: Buffer) => Promise<void> {
  const { blockSize, size, signal } = options
  const pending = new Map<number, Promise<Buffer>>()
  const lanes = connections.map(() => Promise.resolve())
  let next = 0
  const start = (): void => {
    while (next < blocks.length && pending.size < connections.length) {
      const k = next++
      const block = blocks[k]!
      const lane = k % connections.length
      const length = Math.min(blockSize, size - block * blockSize)
      const read = lanes[lane]!.then(async () => {
        const data = Buffer.alloc(length)
        await connections[lane]!.read(block * blockSize, length, data, signal)
        return data
      })
      read.catch(() => undefined) // a failure reaches the writer when it asks for the block
      lanes[lane] = read.then(
        () => undefined,
        () => undefined,
      )
      pending.set(block, read)
    }
  }
  return async (block, into) => {
    start()
    const read = pending.get(block)
    if (!read) throw new RangeError(`block ${block} was not asked for in order`)
    const data = await read
    pending.delete(block)
    start()
    data.copy(into)
  }
}
