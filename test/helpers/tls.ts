// Self-signed certificates for the simulator's hosts (127.0.0.k), made with openssl for the TLS
// tests; and the transport the end-to-end suites run over.
//
// DPXEN_TEST_TLS (set by vitest.config.ts's projects) runs the end-to-end suites against
// xapi-sim over HTTPS with a self-signed certificate: `pin` trusts it by its SHA-256
// fingerprint, `ca` by a CA file. writeConfig adds that trust to every configuration that names
// such a simulator, unless the test set caFile or fingerprint itself.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, setGlobalDispatcher } from 'undici'
import { execa } from 'execa'

export interface TestCert {
  certFile: string
  keyFile: string
  cert: Buffer
  key: Buffer
  /** AA:BB:… as Node reports fingerprint256. */
  fingerprint: string
}

export async function makeCert(
  dir: string,
  name = 'host',
  ips = ['127.0.0.1', '127.0.0.2'],
): Promise<TestCert> {
  const certFile = join(dir, `${name}.pem`)
  const keyFile = join(dir, `${name}.key`)
  await execa('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=xapi-sim',
    '-addext',
    `subjectAltName=${ips.map((ip) => `IP:${ip}`).join(',')}`,
    '-keyout',
    keyFile,
    '-out',
    certFile,
  ])
  const { stdout } = await execa('openssl', ['x509', '-in', certFile, '-noout', '-fingerprint', '-sha256'])
  return {
    certFile,
    keyFile,
    cert: readFileSync(certFile),
    key: readFileSync(keyFile),
    fingerprint: stdout.split('=')[1]!.trim().toUpperCase(),
  }
}

export type TestTransport = 'http' | 'pin' | 'ca'

/** The transport of this run: plain HTTP unless DPXEN_TEST_TLS says `pin` or `ca`. */
export function testTransport(): TestTransport {
  const mode = process.env.DPXEN_TEST_TLS ?? ''
  if (mode === '' || mode === 'http') return 'http'
  if (mode === 'pin' || mode === 'ca') return mode
  throw new Error(`DPXEN_TEST_TLS must be http, pin or ca, not "${mode}"`)
}

let shared: Promise<TestCert[]> | undefined

/** How many hosts the shared certificates cover: the test pools' size. */
export const POOL_HOSTS = 3

/**
 * The certificates the simulators of this test process serve, one per host (host k at
 * 127.0.0.k, each its own self-signed certificate, as each XenServer host makes its own), made
 * once in a folder no test removes, and trusted by the tests' own XML-RPC client.
 */
export function sharedCerts(): Promise<TestCert[]> {
  shared ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dpxen-cert-'))
    const certs = await Promise.all(
      Array.from({ length: POOL_HOSTS }, (_, i) => makeCert(dir, `host${i + 1}`, [`127.0.0.${i + 1}`])),
    )
    setGlobalDispatcher(new Agent({ connect: { ca: certs.map((cert) => cert.cert) } }))
    return certs
  })()
  return shared
}

/** A file with every host's certificate, for clients that take a CA bundle (SSL_CERT_FILE). */
export async function caBundle(): Promise<string> {
  const certs = await sharedCerts()
  const file = join(certs[0]!.certFile, '..', 'bundle.pem')
  writeFileSync(file, Buffer.concat(certs.map((cert) => cert.cert)))
  return file
}

/** The first host's certificate (the master's at start). */
export async function sharedCert(): Promise<TestCert> {
  return (await sharedCerts())[0]!
}

/** Origins of https simulators, and the configuration keys that trust them. */
const trust = new Map<string, Record<string, string>>()

/** Records that configurations naming `url` must trust `cert` the way this run's transport says. */
export function trustSim(url: string | undefined, cert: TestCert): void {
  if (!url) return
  const transport = testTransport()
  trust.set(
    new URL(url).origin,
    transport === 'ca' ? { caFile: cert.certFile } : { fingerprint: cert.fingerprint },
  )
}

/** Records the configuration keys that trust the https simulator at `url`. */
export function trustUrl(url: string, keys: Record<string, string>): void {
  trust.set(new URL(url).origin, keys)
}

/** The trust settings for a configuration whose url is that of an https simulator, else none. */
export function trustFor(url: unknown): Record<string, string> {
  if (typeof url !== 'string' || !url.startsWith('https:')) return {}
  try {
    return trust.get(new URL(url).origin) ?? {}
  } catch {
    return {}
  }
}
