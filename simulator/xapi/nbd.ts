// A host's NBD server, as xapi-nbd behaves (xen-api e2ee48d688 ocaml/nbd/src/main.ml over
// xapi-project/nbd b71e1be lib/server.ml and lib/protocol.ml, read for this file):
// - a connection is refused (closed before a byte) when no network, or both kinds, have an NBD
//   purpose, and beyond 16 at once; TLS is required when the purpose is nbd;
// - the fixed-newstyle greeting offers FIXED_NEWSTYLE only (no NO_ZEROES); in TLS mode every
//   option before STARTTLS is answered ERR_TLS_REQD (EXPORT_NAME and ABORT close the
//   connection); afterwards EXPORT_NAME is the one way in: GO, INFO, STRUCTURED_REPLY and every
//   other option get ERR_UNSUP, LIST and a second STARTTLS ERR_POLICY / ERR_INVALID;
// - the export name is `/<vdi-uuid>?session_id=<session>`: an invalid session or VDI closes the
//   connection; the VDI is attached read-only to the host's control domain while it is served;
// - the export is read-only (flags READ_ONLY, without HAS_FLAGS, as protocol.ml marshals it);
//   a READ not aligned to 512 bytes gets EINVAL, a WRITE EPERM, DISC ends the connection; a read
//   is sent in 512 KiB pieces after its reply header.
// Faults: nbd-refused (every connection closed at once), nbd-cut:SIZE (a connection dropped
// after SIZE bytes of data), nbd-stall:SECONDS (each read stops that long after its header, or
// until the client goes), nbd-hang:SECONDS (each read's storage hangs that long, client or not:
// the disk stays attached to dom0 meanwhile).
import { open, type FileHandle } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { createServer, type Server, type Socket } from 'node:net'
import { TLSSocket, createSecureContext, type SecureContext } from 'node:tls'
import type { AddressInfo } from 'node:net'
import { parseSize } from './faults.js'
import { closeServer, listenOn } from './listen.js'
import type { SimContext } from './model/context.js'
import { nbdMode } from './model/nbd-info.js'
import { createVbd, removeVbd } from './model/storage.js'

const IHAVEOPT = Buffer.from('IHAVEOPT')
const OPTION_REPLY_MAGIC = Buffer.from('0003e889045565a9', 'hex')
const REQUEST_MAGIC = 0x25609513
const REPLY_MAGIC = 0x67446698
const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5 }
const REP = {
  ACK: 1,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_TLS_REQD: 0x80000005,
}
const CMD = { READ: 0, WRITE: 1, DISC: 2 }
const ERRNO = { EPERM: 1, EINVAL: 22 }
const CONNECTION_LIMIT = 16
const SECTOR = 512
/** Io_page 128 pages: the piece each read is sent in. */
const PIECE = 512 * 1024

/** Exact-length reads from a socket (a connection's bytes, in order). */
class Bytes {
  #chunks: Buffer[] = []
  #have = 0
  #want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined
  #ended: Error | undefined
  readonly #onData = (chunk: Buffer): void => {
    this.#chunks.push(chunk)
    this.#have += chunk.length
    this.#serve()
  }
  readonly #onEnd = (): void => {
    this.#ended = new Error('the client closed the connection')
    this.#want?.reject(this.#ended)
    this.#want = undefined
  }

  constructor(readonly socket: Socket) {
    socket.on('data', this.#onData)
    socket.once('end', this.#onEnd)
    socket.once('close', this.#onEnd)
  }

  read(n: number): Promise<Buffer> {
    if (this.#ended && this.#have < n) return Promise.reject(this.#ended)
    return new Promise((resolve, reject) => {
      this.#want = { n, resolve, reject }
      this.#serve()
    })
  }

  /** Stops listening (before the socket is handed to TLS). */
  detach(): void {
    this.socket.off('data', this.#onData)
    this.socket.off('end', this.#onEnd)
    this.socket.off('close', this.#onEnd)
  }

  #serve(): void {
    const want = this.#want
    if (!want || this.#have < want.n) return
    const all = Buffer.concat(this.#chunks)
    this.#chunks = all.length > want.n ? [all.subarray(want.n)] : []
    this.#have = all.length - want.n
    this.#want = undefined
    want.resolve(all.subarray(0, want.n))
  }
}

/** One option request: its number and payload. */
async function option(bytes: Bytes): Promise<{ opt: number; payload: Buffer }> {
  const head = await bytes.read(16)
  if (!head.subarray(0, 8).equals(IHAVEOPT)) throw new Error('bad option magic')
  const length = head.readUInt32BE(12)
  if (length > 4096 + 64) throw new Error('option too long')
  return { opt: head.readUInt32BE(8), payload: length ? await bytes.read(length) : Buffer.alloc(0) }
}

function reply(socket: Socket, opt: number, type: number): void {
  const out = Buffer.alloc(20)
  OPTION_REPLY_MAGIC.copy(out, 0)
  out.writeUInt32BE(opt, 8)
  out.writeUInt32BE(type, 12)
  socket.write(out)
}

export class NbdListener {
  #server: Server | undefined
  readonly #sockets = new Set<Socket>()
  #context: SecureContext | undefined
  port = 0

  constructor(
    readonly sim: SimContext,
    readonly host: string,
    pair: { cert: string | Buffer; key: string | Buffer } | undefined,
  ) {
    this.#context = pair ? createSecureContext(pair) : undefined
  }

  renew(pair: { cert: string | Buffer; key: string | Buffer }): void {
    this.#context = createSecureContext(pair)
  }

  async listen(port: number, address: string): Promise<void> {
    const server = createServer((socket) => {
      socket.on('error', () => undefined)
      if (this.#sockets.size >= CONNECTION_LIMIT || this.sim.faults.get('nbd-refused'))
        return void socket.destroy()
      this.#sockets.add(socket)
      socket.once('close', () => this.#sockets.delete(socket))
      this.#connection(socket).catch(() => socket.destroy())
    })
    await listenOn(server, port, address)
    this.#server = server
    this.port = (server.address() as AddressInfo).port
  }

  async close(): Promise<void> {
    const server = this.#server
    this.#server = undefined
    const closed = server ? closeServer(server) : Promise.resolve()
    for (const socket of this.#sockets) socket.destroy()
    await closed
  }

  /** The negotiation, then the export served until the client disconnects. */
  async #connection(raw: Socket): Promise<void> {
    const mode = nbdMode(this.sim)
    if (!mode || (mode === 'tls' && !this.#context)) return void raw.destroy()
    const greeting = Buffer.alloc(18)
    greeting.write('NBDMAGIC', 0)
    IHAVEOPT.copy(greeting, 8)
    greeting.writeUInt16BE(1, 16) // FIXED_NEWSTYLE
    raw.write(greeting)
    let bytes = new Bytes(raw)
    const fixed = ((await bytes.read(4)).readUInt32BE(0) & 1) === 1
    let socket: Socket = raw
    if (mode === 'tls') {
      if (!fixed) return void raw.destroy()
      socket = await this.#startTls(bytes)
      bytes = new Bytes(socket)
    }
    const name = await this.#exportName(bytes, socket, mode === 'tls')
    if (name === undefined) return void socket.end()
    await this.#serve(bytes, socket, name)
  }

  /** Cleartext until STARTTLS: every other option ERR_TLS_REQD; EXPORT_NAME or ABORT end it. */
  async #startTls(bytes: Bytes): Promise<Socket> {
    for (;;) {
      const { opt } = await option(bytes)
      if (opt === OPT.EXPORT_NAME || opt === OPT.ABORT) throw new Error('no TLS')
      if (opt !== OPT.STARTTLS) {
        reply(bytes.socket, opt, REP.ERR_TLS_REQD)
        continue
      }
      reply(bytes.socket, opt, REP.ACK)
      bytes.detach()
      const tls = new TLSSocket(bytes.socket, { isServer: true, secureContext: this.#context! })
      tls.on('error', () => bytes.socket.destroy())
      this.#sockets.add(tls)
      tls.once('close', () => this.#sockets.delete(tls))
      return tls
    }
  }

  /** The options until EXPORT_NAME (its name), or undefined on ABORT. */
  async #exportName(bytes: Bytes, socket: Socket, tls: boolean): Promise<string | undefined> {
    for (;;) {
      const { opt, payload } = await option(bytes)
      if (opt === OPT.EXPORT_NAME) return payload.toString('utf8')
      if (opt === OPT.ABORT) {
        reply(socket, opt, REP.ACK)
        return undefined
      }
      if (opt === OPT.STARTTLS) reply(socket, opt, tls ? REP.ERR_INVALID : REP.ERR_POLICY)
      else if (opt === OPT.LIST) reply(socket, opt, REP.ERR_POLICY)
      else reply(socket, opt, REP.ERR_UNSUP)
    }
  }

  /** The VDI the export name names, checked as xapi-nbd checks it: a valid session, a VDI of that uuid. */
  #vdiOf(name: string): string | undefined {
    const url = new URL(name.startsWith('/') ? name : `/${name}`, 'nbd://host')
    const session = url.searchParams.get('session_id')
    if (!session || !this.sim.db.has('session', session)) return undefined
    const vdi = this.sim.db.refByUuid('VDI', url.pathname.slice(1))
    if (!vdi || this.sim.db.require('VDI', vdi).type === 'cbt_metadata') return undefined
    return vdi
  }

  async #serve(bytes: Bytes, socket: Socket, name: string): Promise<void> {
    const { sim } = this
    const vdi = this.#vdiOf(name)
    if (!vdi) return void socket.destroy()
    const rec = sim.db.require('VDI', vdi)
    const size = Number(rec.virtual_size)
    const dom0 = sim.db
      .all('VM')
      .find(([, vm]) => vm.is_control_domain === true && vm.resident_on === this.host)?.[0]
    const vbd = dom0 ? attachToDom0(sim, dom0, vdi) : undefined
    const disk = await open(sim.disks.path(String(rec.uuid)), 'r')
    try {
      const info = Buffer.alloc(8 + 2 + 124)
      info.writeBigUInt64BE(BigInt(size), 0)
      info.writeUInt16BE(2, 8) // READ_ONLY
      socket.write(info)
      await this.#requests(bytes, socket, disk, size)
    } finally {
      await disk.close()
      if (vbd && sim.db.has('VBD', vbd)) removeVbd(sim, vbd)
      socket.end()
    }
  }

  /** Transmission: READ served, WRITE refused (read-only), DISC ends it, anything else EINVAL. */
  async #requests(bytes: Bytes, socket: Socket, disk: FileHandle, size: number): Promise<void> {
    const cut = this.sim.faults.get('nbd-cut')
    let allowance = cut ? parseSize(cut.arg ?? '0') : Infinity
    for (;;) {
      const head = await bytes.read(28)
      if (head.readUInt32BE(0) !== REQUEST_MAGIC) return
      const type = head.readUInt16BE(6)
      const handle = head.subarray(8, 16)
      const offset = Number(head.readBigUInt64BE(16))
      const length = head.readUInt32BE(24)
      if (type === CMD.DISC) return
      if (type !== CMD.READ) {
        simpleReply(socket, handle, type === CMD.WRITE ? ERRNO.EPERM : ERRNO.EINVAL)
        continue
      }
      if (offset % SECTOR || length % SECTOR) {
        simpleReply(socket, handle, ERRNO.EINVAL)
        continue
      }
      simpleReply(socket, handle, 0)
      const stall = this.sim.faults.get('nbd-stall')
      // A host slow to send: the read waits, and ends when the client goes.
      if (stall) await stalled(socket, Number(stall.arg) * 1000, this.sim.closing)
      // Storage that hangs under the read: blocked in the kernel, it ends when the storage answers.
      const hang = this.sim.faults.get('nbd-hang')
      if (hang)
        await sleep(Number(hang.arg) * 1000, undefined, { signal: this.sim.closing }).catch(() => undefined)
      if (socket.destroyed) return
      // Past the end, Block.read fails after the header: xapi-nbd drops the connection.
      if (offset + length > size) return void socket.destroy()
      allowance = await sendData(socket, disk, offset, length, allowance)
      if (allowance < 0) return void socket.destroy()
    }
  }
}

/** Waits `ms`, or until the client closes the connection or the simulator stops. */
async function stalled(socket: Socket, ms: number, closing: AbortSignal): Promise<void> {
  const gone = new AbortController()
  const onClose = (): void => gone.abort()
  socket.once('close', onClose)
  await sleep(ms, undefined, { signal: AbortSignal.any([gone.signal, closing]) }).catch(() => undefined)
  socket.off('close', onClose)
}

function simpleReply(socket: Socket, handle: Buffer, error: number): void {
  const out = Buffer.alloc(16)
  out.writeUInt32BE(REPLY_MAGIC, 0)
  out.writeUInt32BE(error, 4)
  handle.copy(out, 8)
  socket.write(out)
}

/** The bytes of a READ, piece by piece with backpressure; the allowance left (negative: cut). */
async function sendData(socket: Socket, disk: FileHandle, offset: number, length: number, allowance: number) {
  for (let at = offset; at < offset + length;) {
    const n = Math.min(PIECE, offset + length - at)
    const piece = Buffer.alloc(n)
    await disk.read(piece, 0, n, at)
    if (allowance < n) {
      socket.write(piece.subarray(0, Math.max(0, allowance)))
      return -1
    }
    allowance -= n
    at += n
    if (!socket.write(piece) && !socket.destroyed)
      await new Promise<void>((resolve) => {
        const done = (): void => {
          socket.off('drain', done)
          socket.off('close', done)
          resolve()
        }
        socket.once('drain', done)
        socket.once('close', done)
      })
  }
  return allowance
}

/** The VDI attached read-only to the host's control domain for the connection (with_attached_vdi). */
function attachToDom0(sim: SimContext, dom0: string, vdi: string): string {
  const used = new Set(
    (sim.db.require('VM', dom0).VBDs as string[]).map((v) => String(sim.db.get('VBD', v)?.userdevice)),
  )
  let userdevice = 0
  while (used.has(String(userdevice))) userdevice++
  const vbd = createVbd(sim, {
    VM: dom0,
    VDI: vdi,
    userdevice: String(userdevice),
    bootable: false,
    mode: 'RO',
    type: 'Disk',
    empty: false,
    other_config: {},
    qos_algorithm_type: '',
    qos_algorithm_params: {},
    device: `xvd${String.fromCharCode(97 + userdevice)}`,
  })
  sim.db.update('VBD', vbd, { currently_attached: true })
  return vbd
}
