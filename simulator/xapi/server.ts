// The simulator as a server: XML-RPC on POST (any path but the HTTP handlers'), the HTTP
// handlers, an optional pool-member listener, state in a folder. Usable in-process by tests.
import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import { mkdtempSync, rmSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ChecksumKind, SimContext, SimSettings } from './model/context.js'
import { Db } from './model/db.js'
import { DiskStore } from './model/disks.js'
import { XapiFailure, toFailure } from './model/errors.js'
import { Faults } from './faults.js'
import { handleExport } from './http/export.js'
import { handleImport } from './http/import.js'
import { handleDbDump, handleExportRaw, handleImportRaw } from './http/raw-vdi.js'
import type { HttpCall } from './http/common.js'
import { registerCore } from './rpc/methods/core.js'
import { registerGeneric } from './rpc/methods/generic.js'
import { registerObjects } from './rpc/methods/objects.js'
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
  /** Open a pool-member listener on this port (0: the master's port) at memberHost. */
  memberPort?: number
  memberHost?: string
  authFailureDelayMs?: number
  /** Serve https with this certificate and key (PEM), as xapi does on port 443. */
  tls?: { cert: string | Buffer; key: string | Buffer }
}

export interface XapiSim {
  url: string
  memberUrl?: string
  faults: Faults
  context: SimContext
  /** Sessions currently logged in (a leak check for clients). */
  openSessions(): number
  /** XML-RPC calls served, by method, and when the first one arrived (epoch ms); resettable. */
  stats(reset?: boolean): { calls: number; byMethod: Record<string, number>; firstCallAt?: number }
  close(): Promise<void>
}

const RPC_LIMIT = 300 * 1024
const HTTP_HANDLERS: Record<string, Record<string, (call: HttpCall) => Promise<void> | void>> = {
  GET: { '/export': handleExport, '/export_raw_vdi': handleExportRaw, '/pool/xmldbdump': handleDbDump },
  PUT: { '/import': handleImport, '/import_raw_vdi': handleImportRaw },
}

function buildTable(): MethodTable {
  const table: MethodTable = new Map()
  registerGeneric(table)
  registerCore(table)
  registerObjects(table)
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

/** Starts the simulator. */
export async function startXapiSim(options: XapiSimOptions = {}): Promise<XapiSim> {
  const host = options.host ?? '127.0.0.1'
  const ownDir = options.stateDir === undefined
  const stateDir = options.stateDir ?? mkdtempSync(join(tmpdir(), 'xapi-sim-'))
  const settings: SimSettings = {
    user: options.user ?? 'root',
    password: options.password ?? 'xenroot',
    checksum: options.checksum ?? 'xxhash',
    authFailureDelayMs: options.authFailureDelayMs ?? 5000,
    xapiMajor: 24,
    xapiMinor: 19,
  }
  const closing = new AbortController()
  const db = new Db(stateDir)
  const disks = new DiskStore(stateDir)
  const faults = new Faults(options.faults ?? [])
  const loaded = db.load()
  const address = host === '0.0.0.0' || host === '::' || host === 'localhost' ? '127.0.0.1' : host
  const base = loaded
    ? { poolRef: db.all('pool')[0]![0], hostRef: db.all('host')[0]![0] }
    : createBase({ db, disks, faults, settings, closing: closing.signal }, address)
  const sim: SimContext = { db, disks, faults, settings, closing: closing.signal, ...base }
  if (!loaded) {
    if (options.demo) await applySeed(sim, DEMO_SEED)
    if (options.seed)
      await applySeed(sim, typeof options.seed === 'string' ? readSeed(options.seed) : options.seed)
    db.saveNow()
  }
  const table = buildTable()
  const stats: { calls: number; byMethod: Record<string, number>; firstCallAt: number | undefined } = {
    calls: 0,
    byMethod: {},
    firstCallAt: undefined,
  }

  const listen = (handler: RequestListener): Server =>
    options.tls
      ? createTlsServer({ ...options.tls, keepAliveTimeout: 5000 }, handler)
      : createServer({ keepAliveTimeout: 5000 }, handler)
  const makeServer = (member: () => string | undefined): Server =>
    listen((req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost')
      const handler = HTTP_HANDLERS[req.method ?? '']?.[url.pathname.replace(/\/+$/, '') || '/']
      const work =
        handler && member() === undefined
          ? Promise.resolve(handler({ sim, req, res, url }))
          : req.method === 'POST'
            ? handleRpc(sim, table, req, res, member(), stats)
            : Promise.resolve(internalError(res, `No handler for ${req.method} ${url.pathname}`))
      work.catch((error: unknown) => {
        if (!res.headersSent) internalError(res, String(error))
        else req.socket.destroy()
      })
    })

  const server = makeServer(() => undefined)
  // xapi has no Expect: 100-continue handling; clients that ask for it wait, then send anyway.
  server.on('checkContinue', (req, res) => server.emit('request', req, res))
  await listenOn(server, options.port ?? 0, host)
  const port = (server.address() as AddressInfo).port
  const scheme = options.tls ? 'https' : 'http'
  const url = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`
  let memberServer: Server | undefined
  let memberUrl: string | undefined
  if (options.memberPort !== undefined) {
    const memberHost = options.memberHost ?? '127.0.0.2'
    const memberPort = options.memberPort || port
    // Clients follow HOST_IS_SLAVE to the master's address on the same port; name the port only when it differs.
    const masterAddress = memberPort === port ? address : `${address}:${port}`
    db.update('host', sim.hostRef, { address: masterAddress })
    memberServer = makeServer(() => masterAddress)
    await listenOn(memberServer, memberPort, memberHost)
    memberUrl = `${scheme}://${memberHost}:${(memberServer.address() as AddressInfo).port}`
  }

  return {
    url,
    ...(memberUrl ? { memberUrl } : {}),
    faults,
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
    async close() {
      closing.abort()
      await Promise.all([server, memberServer].filter((s): s is Server => s !== undefined).map(closeServer))
      db.saveNow()
      if (ownDir) rmSync(stateDir, { recursive: true, force: true })
    },
  }
}

function listenOn(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  })
}
