// The sockets of a connection to a pool, with one trust policy (`Trust`): the configured host
// by system CAs, a CA file or a pinned SHA-256 fingerprint; the pool's other hosts by the
// certificates the pool records for them (checked before any byte is sent).
//
// Three clients over these sockets, each where it is the better tool: XML-RPC calls through
// undici; every GET (exports, raw disks, the database dump) through raw-get.ts, which reads into
// one buffer (and handles xapi's /export, HTTP/1.0 ended by the connection's close, which undici
// 7 cannot pause safely: nodejs/undici#5360, fixed in undici 8, which needs Node 22); every PUT
// through node:http, for its Expect: 100-continue (undici refuses that header).
import { readFileSync } from 'node:fs'
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import type { Duplex } from 'node:stream'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import { connect as netConnect, isIP, type OnReadOpts, type Socket } from 'node:net'
import { DpxenError } from '../core/errors.js'
import { shownSeconds, type Ms } from '../core/format.js'
import { Agent, type Dispatcher } from './undici.js'

export interface TlsPolicy {
  caFile?: string
  /** AA:BB:… upper-case SHA-256. */
  fingerprint?: string
}

/** A host of the pool as its records describe it. */
export interface PoolHost {
  name: string
  address: string
  /** The SHA-256 fingerprint of its certificate as the pool records it; empty when none is. */
  fingerprint: string
}

interface Target {
  protocol: string
  hostname: string
  port: number
}

/**
 * Whom dpxen trusts, host by host: the configured host (`url`) by the configuration (a pinned
 * fingerprint, a CA file, or the system's CAs); every other host of the pool by exactly the
 * certificate the pool records for it, learned over a session with a trusted host. Every
 * connection (XML-RPC, downloads, uploads) is made here, and nothing is sent on one before its
 * certificate passed.
 */
export class Trust {
  readonly #configured: string
  readonly #ca: Buffer | undefined
  readonly #fingerprint: string | undefined
  readonly #hosts = new Map<string, PoolHost>()

  constructor(url: string, policy: TlsPolicy = {}) {
    this.#configured = bare(new URL(url).hostname)
    this.#ca = policy.caFile ? readFileSync(policy.caFile) : undefined
    this.#fingerprint = policy.fingerprint
  }

  /** Learns the pool's hosts and their certificates (from the pool's records). */
  learn(hosts: PoolHost[]): void {
    this.#hosts.clear()
    for (const host of hosts) this.#hosts.set(bare(host.address), host)
  }

  /** The pool's hosts as last learned. */
  get hosts(): PoolHost[] {
    return [...this.#hosts.values()]
  }

  /** Whether `hostname` is the configured host or one of the pool's (a redirect may go there). */
  knows(hostname: string): boolean {
    const name = bare(hostname)
    return name === this.#configured || this.#hosts.has(name)
  }

  /** The host as a line names it: its name and address when the pool knows it. */
  describe(hostname: string): string {
    const host = this.#hosts.get(bare(hostname))
    return host ? `${host.name} (${host.address})` : bare(hostname)
  }

  /**
   * A connection to `target`, reading into `onread`'s buffer when given. `ready` is called once
   * bytes may be sent (the certificate passed), or with the error.
   */
  connect(target: Target, ready: (error?: Error) => void, onread?: OnReadOpts): Socket {
    const host = bare(target.hostname)
    if (target.protocol !== 'https:') {
      const socket = netConnect({ host, port: target.port || 80, ...(onread ? { onread } : {}) })
      socket.once('connect', () => ready())
      socket.once('error', (error) => ready(error))
      return socket
    }
    const member = host === this.#configured ? undefined : this.#hosts.get(host)
    const pinned = member ? member.fingerprint : this.#fingerprint
    const socket = tlsConnect({
      host,
      port: target.port || 443,
      rejectUnauthorized: pinned === undefined,
      ...(pinned === undefined && this.#ca ? { ca: this.#ca } : {}),
      ...(isIP(host) ? {} : { servername: host }),
      ALPNProtocols: ['http/1.1'],
      // Node's tls.connect takes onread like net.connect; its types do not list it.
      ...((onread ? { onread } : {}) as object),
    })
    let settled = false
    const finish = (error?: Error): void => {
      if (settled) return
      settled = true
      ready(error)
    }
    socket.once('secureConnect', () => {
      if (pinned === undefined) return finish()
      const actual = socket.getPeerCertificate().fingerprint256
      if (actual && actual === pinned) return finish()
      socket.destroy()
      finish(member ? memberCertificateError(member, actual) : fingerprintError(actual, pinned))
    })
    socket.once('error', (error) => finish(error))
    return socket
  }
}

function bare(hostname: string): string {
  return hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase()
}

function fingerprintError(actual: string | undefined, pinned: string): DpxenError {
  return new DpxenError(
    'CONNECT_FAILED',
    `the host's certificate fingerprint ${actual ?? '(none)'} is not the configured ${pinned} (refusing to send credentials; if the certificate was renewed on purpose, run "dpxen check" to pin the new one)`,
  )
}

function memberCertificateError(host: PoolHost, actual: string | undefined): DpxenError {
  const recorded = host.fingerprint || '(none recorded)'
  return new DpxenError(
    'CONNECT_FAILED',
    `pool host ${host.name} (${host.address}) presented the certificate ${actual ?? '(none)'}, not the one the pool records for it, ${recorded} (refusing to send anything to it; a certificate replaced by hand must be installed through xapi, e.g. xe host-server-certificate-install or host-refresh-server-certificate on ${host.name}; "dpxen check" lists every host's)`,
  )
}

/** An undici Agent for XML-RPC whose connections the trust makes. */
export function createDispatcher(trust: Trust): Dispatcher {
  return new Agent({
    keepAliveTimeout: 4000,
    connect(opts, callback) {
      const socket = trust.connect(
        { protocol: String(opts.protocol), hostname: String(opts.hostname), port: Number(opts.port) },
        (error) => (error ? callback(error, null) : callback(null, socket)),
      )
    },
  })
}

/** node:http(s) agents for uploads (put.ts), whose connections the trust makes. */
export function createStreamAgents(trust: Trust): { http: HttpAgent; https: HttpsAgent } {
  const http = new HttpAgent({ keepAlive: false })
  const https = new HttpsAgent({ keepAlive: false })
  // The socket is handed over only once its certificate passed: nothing is sent before.
  https.createConnection = (
    options: ConnectionOptions,
    callback?: (error: Error | null, socket: Duplex) => void,
  ) => {
    const socket = trust.connect(
      { protocol: 'https:', hostname: String(options.host), port: Number(options.port) },
      (error) => callback?.(error ?? null, socket),
    )
    return undefined as unknown as Duplex
  }
  return { http, https }
}

/** TRANSFER_STALLED: the host sent (or, for an upload, took) nothing for `idleMs`. */
export function stalledError(origin: string, idleMs: Ms, what: 'sent' | 'took' = 'sent'): DpxenError {
  return new DpxenError(
    'TRANSFER_STALLED',
    `${origin} ${what} nothing for ${shownSeconds(idleMs)} (stalled; see stallTimeout)`,
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
