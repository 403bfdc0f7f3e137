// The HTTP side of a connection to a host, with one TLS policy: system CAs by default, a CA
// file, or a pinned SHA-256 certificate fingerprint (checked before any byte is sent).
//
// XML-RPC calls go through undici. Streams whose body ends at connection close (xapi's
// /export is HTTP/1.0 without Content-Length) go through node:http instead: undici 7 throws an
// uncatchable assertion when such a body is paused by backpressure as the socket ends
// (nodejs/undici#5360, fixed in undici 8, which needs Node 22).
import { readFileSync } from 'node:fs'
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import type { Duplex } from 'node:stream'
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls'
import { connect as netConnect, isIP, type OnReadOpts, type Socket } from 'node:net'
import { DpxenError } from '../core/errors.js'
import { Agent, type Dispatcher } from './undici.js'

export interface TlsPolicy {
  caFile?: string
  /** AA:BB:… upper-case SHA-256. */
  fingerprint?: string
}

function fingerprintError(actual: string | undefined, pinned: string): DpxenError {
  return new DpxenError(
    'CONNECT_FAILED',
    `the host's certificate fingerprint ${actual ?? '(none)'} is not the configured ${pinned} (refusing to send credentials; if the certificate was renewed on purpose, run "dpxen check" to pin the new one)`,
  )
}

/** A TLS connection whose certificate must have the pinned SHA-256 fingerprint (no CA check). */
function pinnedConnect(
  host: string,
  port: number,
  pinned: string,
  done: (error?: Error) => void,
  onread?: OnReadOpts,
): TLSSocket {
  const socket = tlsConnect({
    host,
    port,
    rejectUnauthorized: false,
    ...(isIP(host) ? {} : { servername: host }),
    ALPNProtocols: ['http/1.1'],
    // Node's tls.connect takes onread like net.connect; its types do not list it.
    ...((onread ? { onread } : {}) as object),
  })
  let settled = false
  const finish = (error?: Error): void => {
    if (settled) return
    settled = true
    done(error)
  }
  socket.once('secureConnect', () => {
    const actual = socket.getPeerCertificate().fingerprint256
    if (actual === pinned) finish()
    else {
      socket.destroy()
      finish(fingerprintError(actual, pinned))
    }
  })
  socket.once('error', (error) => finish(error))
  return socket
}

/** An undici Agent for XML-RPC with the TLS policy. */
export function createDispatcher(policy: TlsPolicy = {}): Dispatcher {
  const base = { keepAliveTimeout: 4000 }
  if (policy.fingerprint) {
    const pinned = policy.fingerprint
    return new Agent({
      ...base,
      connect(opts, callback) {
        // Our own TLS connection: handed to undici only once the certificate matched.
        const socket = pinnedConnect(String(opts.hostname), Number(opts.port) || 443, pinned, (error) => {
          if (error) callback(error, null)
          else callback(null, socket)
        })
      },
    })
  }
  const ca = policy.caFile ? readFileSync(policy.caFile) : undefined
  return new Agent({ ...base, connect: { rejectUnauthorized: true, ...(ca ? { ca } : {}) } })
}

/** The TLS policy with the CA file read. */
export interface SocketPolicy {
  ca?: Buffer
  fingerprint?: string
}

/**
 * A connection for a raw transfer, reading into `onread`'s buffer: plain, or TLS under the
 * policy. `ready` is called once bytes may be sent (the certificate checked), or with the error.
 */
export function openSocket(
  target: URL,
  policy: SocketPolicy,
  onread: OnReadOpts,
  ready: (error?: Error) => void,
): Socket {
  const host = target.hostname.replace(/^\[(.*)\]$/, '$1')
  if (target.protocol !== 'https:') {
    const socket = netConnect({ host, port: Number(target.port) || 80, onread })
    socket.once('connect', () => ready())
    socket.once('error', (error) => ready(error))
    return socket
  }
  const port = Number(target.port) || 443
  if (policy.fingerprint) return pinnedConnect(host, port, policy.fingerprint, ready, onread)
  const socket = tlsConnect({
    host,
    port,
    rejectUnauthorized: true,
    ...(policy.ca ? { ca: policy.ca } : {}),
    ...(isIP(host) ? {} : { servername: host }),
    ALPNProtocols: ['http/1.1'],
    ...({ onread } as object),
  })
  socket.once('secureConnect', () => ready())
  socket.once('error', (error) => ready(error))
  return socket
}

/** node:http(s) agents for streamed transfers, with the same TLS policy. */
export function createStreamAgents(policy: TlsPolicy = {}): {
  http: HttpAgent
  https: HttpsAgent
  policy: SocketPolicy
} {
  const http = new HttpAgent({ keepAlive: false })
  if (policy.fingerprint) {
    const pinned = policy.fingerprint
    const https = new HttpsAgent({ keepAlive: false, rejectUnauthorized: false })
    // The socket is handed over only once its certificate matched: nothing is sent before.
    https.createConnection = (
      options: ConnectionOptions,
      callback?: (error: Error | null, socket: Duplex) => void,
    ) => {
      const socket = tlsConnect({ ...options, rejectUnauthorized: false })
      socket.once('secureConnect', () => {
        const actual = socket.getPeerCertificate().fingerprint256
        if (actual === pinned) callback?.(null, socket)
        else {
          socket.destroy()
          callback?.(fingerprintError(actual, pinned), socket)
        }
      })
      socket.once('error', (error) => callback?.(error, socket))
      return undefined as unknown as Duplex
    }
    return { http, https, policy: { fingerprint: pinned } }
  }
  const ca = policy.caFile ? readFileSync(policy.caFile) : undefined
  return {
    http,
    https: new HttpsAgent({ keepAlive: false, rejectUnauthorized: true, ...(ca ? { ca } : {}) }),
    policy: ca ? { ca } : {},
  }
}

/** TRANSFER_STALLED: the host sent (or, for an upload, took) nothing for `idleMs`. */
export function stalledError(origin: string, idleMs: number, what: 'sent' | 'took' = 'sent'): DpxenError {
  return new DpxenError(
    'TRANSFER_STALLED',
    `${origin} ${what} nothing for ${Math.max(1, Math.round(idleMs / 1000))} s (stalled; see stallTimeout)`,
  )
}

const TLS_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
])

/** Turns a network or TLS failure into a one-line CONNECT_FAILED error that says what to check. */
export function connectionError(url: string, error: unknown): DpxenError {
  if (error instanceof DpxenError) return error
  const cause = (error as { cause?: unknown }).cause
  if (cause instanceof DpxenError) return cause
  const code = (error as NodeJS.ErrnoException).code ?? (cause as { code?: string } | undefined)?.code ?? ''
  const detail = error instanceof Error ? error.message : String(error)
  if (TLS_CODES.has(code)) {
    return new DpxenError(
      'CONNECT_FAILED',
      `cannot verify the certificate of ${url} (${code}): run "dpxen check" with this configuration to see the certificate and the fingerprint line to add (or set caFile to the host's CA)`,
      { cause: error },
    )
  }
  return new DpxenError(
    'CONNECT_FAILED',
    `cannot reach ${url}: ${code || detail} (check url and the network)`,
    { cause: error },
  )
}
