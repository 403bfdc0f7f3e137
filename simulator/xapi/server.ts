// The simulator as a server: XML-RPC on POST (any path but the HTTP handlers'), the HTTP
// handlers, an optional pool-member listener, state in a folder. Usable in-process by tests.
import { X509Certificate } from 'node:crypto'
import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from 'node:http'
import { createServer as createTlsServer, type Server as HttpsServer } from 'node:https'
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { closeServer, listenOn } from './listen.js'
import { NbdListener } from './nbd.js'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { SimContext, SimSettings } from './model/context.js'
import type { ChecksumKind } from './model/context.js'
import { masterOf } from './model/hosts.js'
import { Db } from './model/db.js'
import { DiskStore } from './model/disks.js'
import { XapiFailure, toFailure } from './model/errors.js'
import { Faults } from './faults.js'
import { handleExport } from './http/export.js'
import { handleImport } from './http/import.js'
import { handleExportMetadata, handleImportMetadata } from './http/metadata.js'
import { handleDbDump, handleExportRaw, handleImportRaw } from './http/raw-vdi.js'
import { rawStatus, type HttpCall } from './http/common.js'
import { registerCore } from './rpc/methods/core.js'
import { registerGeneric } from './rpc/methods/generic.js'
import { registerObjects } from './rpc/methods/objects.js'
import { registerCbt, registerNbd } from './rpc/methods/cbt.js'
import { DEMO_SEED, applySeed, createBase, readSeed, type Seed } from './model/pool.js'
import { dispatch, type MethodTable } from './rpc/dispatch.js'
import { parseMethodCall, printFailure, printResponse, printSuccess, type Wire } from './model/xmlrpc.js'

export interface XapiSimOptions {
  host?: string
  port?: number
  /** Folder for state and disks; a temporary one (removed on close) by default. */
  stateDir?: string
  demo?: boolean
  seed?: string | Seed
  user?: string
  password?: string
  checksum?: ChecksumKind
  faults?: string[]
  /**
   * Hosts in the pool (1 by default). Host k listens at 127.0.0.k on the first host's port
   * and is named xenserver-sim-k (the first: xenserver-sim); the first is the master.
   */
  hosts?: number
  authFailureDelayMs?: number
  /**
   * Serve https (as xapi does on 443) with this certificate and key, or one per host. A host
   * with one answers plain HTTP and TLS on its port; the pool records its certificate.
   */
  tls?: TlsPair | TlsPair[]
  /** The scheme of the URLs given out (https when there is a certificate, by default). */
  scheme?: 'http' | 'https'
}

export interface TlsPair {
  cert: string | Buffer
  key: string | Buffer
}

export interface XapiSim {
  /** The first host's URL (the master at start). */
  url: string
  /** Every host's URL, host 1 first. */
  hostUrls: string[]
  /** The second host's URL, when there is one. */
  memberUrl?: string
  faults: Faults
  context: SimContext
  /** Sessions currently logged in (a leak check for clients). */
  openSessions(): number
  /** XML-RPC calls served, by method, and when the first one arrived (epoch ms); resettable. */
  stats(reset?: boolean): { calls: number; byMethod: Record<string, number>; firstCallAt?: number }
  /** Host k (1-based) goes down (stops answering; host_metrics.live false) or comes back. */
  setHostDown(k: number, down: boolean): Promise<void>
  /**
   * Host k serves a new certificate; the pool records it when `recorded` (as
   * host.refresh_server_certificate does), not when it was replaced by hand on the host.
   */
  renewCertificate(k: number, pair: TlsPair, recorded?: boolean): void
  /** The HTTP handler requests host k saw. */
  httpLog(k: number): HttpLogEntry[]
  close(): Promise<void>
}

/** The root password of a simulator started without one (`--password`). */
export const DEFAULT_PASSWORD = 'xenroot'
const RPC_LIMIT = 300 * 1024
const HTTP_HANDLERS: Record<string, Record<string, (call: HttpCall) => Promise<void> | void>> = {
  GET: {
    '/export': handleExport,
    '/export_raw_vdi': handleExportRaw,
    '/export_metadata': handleExportMetadata,
    '/pool/xmldbdump': handleDbDump,
  },
  PUT: {
    '/import': handleImport,
    '/import_raw_vdi': handleImportRaw,
    '/import_metadata': handleImportMetadata,
  },
}

function buildTable(): MethodTable {
  const table: MethodTable = new Map()
  registerGeneric(table)
  registerCore(table)
  registerObjects(table)
  registerCbt(table)
  registerNbd(table)
  return table
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = []
  let length = 0
  for await (const part of req as AsyncIterable<Buffer>) {
    length += part.length
    if (length > limit) return undefined
    parts.push(part)
  }
  return Buffer.concat(parts)
}

function sendXml(res: ServerResponse, body: string): void {
  res.writeHead(200, {
    'content-type': 'text/xml',
    'content-length': Buffer.byteLength(body),
    'Access-Control-Allow-Origin': '*',
    'Access-Control-Allow-Headers': 'X-Requested-With',
  })
  res.end(body)
}

function internalError(res: ServerResponse, detail: string): void {
  res.writeHead(500, { 'content-type': 'text/html', connection: 'close' })
  res.end(
    `<html><body><h1>HTTP 500 internal server error</h1>An unexpected error occurred; please wait a while and try again. If the problem persists, please contact your support representative.<h1> Additional information </h1>${detail.replace(/[<>&]/g, '')}</body></html>`,
  )
}

async function handleRpc(
  sim: SimContext,
  table: MethodTable,
  req: IncomingMessage,
  res: ServerResponse,
  member: string | undefined,
  stats: { calls: number; byMethod: Record<string, number>; firstCallAt: number | undefined },
): Promise<void> {
  stats.firstCallAt ??= Date.now()
  const body = await readBody(req, RPC_LIMIT)
  if (!body) return internalError(res, 'Request body too large')
  if (/^\/json(rpc)?\/?$/.test(new URL(req.url ?? '/', 'http://localhost').pathname)) {
    // Like a host from before JSON-RPC: the XML-RPC handler answers, so clients fall back to XML-RPC.
    return sendXml(res, printFailure(['MESSAGE_METHOD_UNKNOWN', 'JSON-RPC']))
  }
  let call: { method: string; params: unknown[] }
  try {
    call = await parseMethodCall(body)
  } catch (error) {
    return internalError(res, `Xmlrpc.Parse_error(${error instanceof Error ? error.message : String(error)})`)
  }
  stats.calls++
  stats.byMethod[call.method] = (stats.byMethod[call.method] ?? 0) + 1
  if (call.method === 'system.listMethods') {
    // xapi answers this one without the Status/Value envelope.
    return sendXml(res, printResponse((await dispatch(sim, table, call.method, call.params)) as Wire))
  }
  try {
    if (member !== undefined) throw new XapiFailure('HOST_IS_SLAVE', member)
    sendXml(res, printSuccess(await dispatch(sim, table, call.method, call.params)))
  } catch (error) {
    sendXml(res, printFailure(toFailure(error).description))
  }
}

/** The addresses of the pool's hosts: host k at 127.0.0.k (one host: the given address). */
function hostAddresses(options: XapiSimOptions): string[] {
  const host = options.host ?? '127.0.0.1'
  const count = options.hosts ?? 1
  if (!(Number.isInteger(count) && count >= 1 && count <= 16)) throw new Error('hosts must be 1 to 16')
  if (count === 1) return [host === '0.0.0.0' || host === '::' || host === 'localhost' ? '127.0.0.1' : host]
  if (host !== '127.0.0.1') throw new Error('a pool of several hosts listens at 127.0.0.1 … 127.0.0.N')
  return Array.from({ length: count }, (_, i) => `127.0.0.${i + 1}`)
}

/** Records the host's certificate as xapi does (type host; certificates.ml). */
function recordCertificate(sim: SimContext, host: string, pem: string | Buffer): void {
  for (const old of sim.db.require('host', host).certificates as string[]) sim.db.destroy('Certificate', old)
  const x509 = new X509Certificate(pem)
  const ref = sim.db.create('Certificate', {
    name: '',
    type: 'host',
    host,
    not_before: new Date(x509.validFrom),
    not_after: new Date(x509.validTo),
    fingerprint: x509.fingerprint256,
    fingerprint_sha256: x509.fingerprint256,
    fingerprint_sha1: x509.fingerprint,
    purpose: [],
  })
  sim.db.update('host', host, { certificates: [ref] })
  sim.certificates.set(host, String(pem))
}

async function openContext(options: XapiSimOptions, closing: AbortController) {
  const ownDir = options.stateDir === undefined
  const stateDir = options.stateDir ?? mkdtempSync(join(tmpdir(), 'xapi-sim-'))
  const settings: SimSettings = {
    user: options.user ?? 'root',
    password: options.password ?? DEFAULT_PASSWORD,
    checksum: options.checksum ?? 'xxhash',
    authFailureDelayMs: options.authFailureDelayMs ?? 5000,
    xapiMajor: 24,
    xapiMinor: 19,
  }
  const db = new Db(stateDir)
  const disks = new DiskStore(stateDir)
  const faults = new Faults(options.faults ?? [])
  const loaded = db.load()
  const shared = {
    db,
    disks,
    faults,
    settings,
    closing: closing.signal,
    nbd: { port: 0 },
    certificates: new Map<string, string>(),
  }
  const base = loaded
    ? { poolRef: db.all('pool')[0]![0], hostRef: db.all('host')[0]![0] }
    : createBase(shared, hostAddresses(options))
  const sim: SimContext = { ...shared, ...base }
  if (!loaded) {
    if (options.demo) await applySeed(sim, DEMO_SEED)
    if (options.seed)
      await applySeed(sim, typeof options.seed === 'string' ? readSeed(options.seed) : options.seed)
    db.saveNow()
  }
  return { sim, stateDir, ownDir }
}

type Stats = { calls: number; byMethod: Record<string, number>; firstCallAt: number | undefined }

/** Every host of the pool listening on one port, each at its address with its certificate. */
async function listenAll(sim: SimContext, table: MethodTable, stats: Stats, options: XapiSimOptions) {
  const hosts = sim.db.all('host').map(([ref, rec]) => ({ ref, address: String(rec.address) }))
  const pairs = hosts.map((_, i) => (Array.isArray(options.tls) ? options.tls[i] : options.tls))
  const listeners: HostListener[] = []
  let port = options.port ?? 0
  for (const [i, host] of hosts.entries()) {
    const pair = pairs[i]
    if (pair) recordCertificate(sim, host.ref, pair.cert)
    const listener = new HostListener(sim, table, stats, host.ref, pair)
    const address = i === 0 && hosts.length === 1 ? (options.host ?? host.address) : host.address
    await listener.listen(port, address)
    port = listener.port
    await listener.nbd.listen(sim.nbd.port, address)
    sim.nbd.port = listener.nbd.port
    listeners.push(listener)
  }
  const scheme = options.scheme ?? (pairs[0] ? 'https' : 'http')
  const urlOf = (i: number): string => {
    const address = hosts.length === 1 ? (options.host ?? hosts[0]!.address) : hosts[i]!.address
    return `${scheme}://${address.includes(':') ? `[${address}]` : address}:${port}`
  }
  return { hosts, listeners, hostUrls: hosts.map((_, i) => urlOf(i)), port }
}

/** Starts the simulator. */
export async function startXapiSim(options: XapiSimOptions = {}): Promise<XapiSim> {
  const closing = new AbortController()
  const { sim, stateDir, ownDir } = await openContext(options, closing)
  const { db } = sim
  const table = buildTable()
  const stats: Stats = { calls: 0, byMethod: {}, firstCallAt: undefined }
  const { hosts, listeners, hostUrls, port } = await listenAll(sim, table, stats, options)
  return {
    url: hostUrls[0]!,
    hostUrls,
    ...(hostUrls[1] ? { memberUrl: hostUrls[1] } : {}),
    faults: sim.faults,
    context: sim,
    openSessions: () => db.count('session'),
    stats(reset = false) {
      const out = {
        calls: stats.calls,
        byMethod: { ...stats.byMethod },
        ...(stats.firstCallAt ? { firstCallAt: stats.firstCallAt } : {}),
      }
      if (reset) Object.assign(stats, { calls: 0, byMethod: {}, firstCallAt: undefined })
      return out
    },
    async setHostDown(k, down) {
      const listener = listeners[k - 1]
      if (!listener) throw new Error(`no host ${k}`)
      db.update('host_metrics', String(db.require('host', listener.host).metrics), { live: !down })
      if (down) return listener.close()
      await listener.listen(port, hosts[k - 1]!.address)
      await listener.nbd.listen(sim.nbd.port, hosts[k - 1]!.address)
    },
    renewCertificate(k, pair, recorded = true) {
      const listener = listeners[k - 1]
      if (!listener) throw new Error(`no host ${k}`)
      listener.renew(pair)
      if (recorded) recordCertificate(sim, listener.host, pair.cert)
    },
    httpLog: (k) => listeners[k - 1]?.log ?? [],
    async close() {
      closing.abort()
      await Promise.all(listeners.map((listener) => listener.close()))
      db.saveNow()
      if (ownDir) rmSync(stateDir, { recursive: true, force: true })
    },
  }
}

/** One HTTP request a host saw: what it was, how it answered, and how much body it read. */
export interface HttpLogEntry {
  method: string
  path: string
  status: number
  /** Bytes that arrived on the connection, request head included (a redirect reads only that). */
  bytesReceived: number
}

/**
 * A host's listener: one port for plain HTTP and TLS (xapi serves 80 and 443; the simulator
 * tells them apart by the first byte), XML-RPC answered only by the master (HOST_IS_SLAVE
 * elsewhere), the HTTP handlers on every host.
 */
class HostListener {
  readonly log: HttpLogEntry[] = []
  #front: NetServer | undefined
  readonly #sockets = new Set<Socket>()
  readonly #http: Server
  readonly #https: HttpsServer | undefined
  port = 0
  /** The host's NBD server, on a port of its own (nbd.ts). */
  readonly nbd: NbdListener

  constructor(
    readonly sim: SimContext,
    readonly table: MethodTable,
    readonly stats: Stats,
    readonly host: string,
    pair: TlsPair | undefined,
  ) {
    const handler: RequestListener = (req, res) => this.#serve(req, res)
    this.#http = createServer({ keepAliveTimeout: 5000 }, handler)
    this.#https = pair ? createTlsServer({ ...pair, keepAliveTimeout: 5000 }, handler) : undefined
    this.nbd = new NbdListener(sim, host, pair)
    for (const server of [this.#http, this.#https]) {
      // xapi has no Expect: 100-continue handling; clients that ask for it wait, then send anyway.
      server?.on('checkContinue', (req, res) => server.emit('request', req, res))
    }
  }

  renew(pair: TlsPair): void {
    if (!this.#https) throw new Error('this host serves no TLS')
    this.#https.setSecureContext(pair)
    this.nbd.renew(pair)
  }

  #serve(req: IncomingMessage, res: ServerResponse): void {
    const { sim } = this
    const url = new URL(req.url ?? '/', 'http://localhost')
    const handler = HTTP_HANDLERS[req.method ?? '']?.[url.pathname.replace(/\/+$/, '') || '/']
    const master = masterOf(sim)
    if (handler) {
      const entry: HttpLogEntry = {
        method: req.method ?? '',
        path: url.pathname,
        status: 0,
        bytesReceived: 0,
      }
      this.log.push(entry)
      const socket = req.socket
      socket.once('close', () => {
        entry.bytesReceived = socket.bytesRead
        entry.status ||= rawStatus.get(socket) ?? 0
      })
      res.once('finish', () => (entry.status ||= res.statusCode))
    }
    const work = handler
      ? Promise.resolve(handler({ sim, req, res, url, host: this.host, port: this.port }))
      : req.method === 'POST'
        ? handleRpc(
            sim,
            this.table,
            req,
            res,
            master === this.host ? undefined : memberAnswer(sim),
            this.stats,
          )
        : Promise.resolve(internalError(res, `No handler for ${req.method} ${url.pathname}`))
    work.catch((error: unknown) => {
      if (!res.headersSent) internalError(res, String(error))
      else req.socket.destroy()
    })
  }

  async listen(port: number, address: string): Promise<void> {
    const front = createNetServer({ pauseOnConnect: true }, (socket) => {
      this.#sockets.add(socket)
      socket.once('close', () => this.#sockets.delete(socket))
      socket.on('error', () => undefined)
      socket.once('readable', () => {
        const first = socket.read(1) as Buffer | null
        if (!first) return void socket.destroy()
        socket.unshift(first)
        const tls = first[0] === 0x16
        if (tls && !this.#https) return void socket.destroy()
        ;(tls ? this.#https! : this.#http).emit('connection', socket)
      })
    })
    await listenOn(front, port, address)
    this.#front = front
    this.port = (front.address() as AddressInfo).port
  }

  /** Closes the port and every connection on it (a host that goes down drops them all). */
  async close(): Promise<void> {
    const front = this.#front
    this.#front = undefined
    const closed = front ? closeServer(front) : Promise.resolve()
    for (const socket of this.#sockets) socket.destroy()
    await Promise.all([closed, this.nbd.close()])
  }
}

/** What a member answers XML-RPC with: HOST_IS_SLAVE and the master's address. */
function memberAnswer(sim: SimContext): string {
  return String(sim.db.require('host', masterOf(sim)).address)
}
