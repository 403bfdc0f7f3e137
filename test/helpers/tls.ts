// A self-signed certificate for 127.0.0.1 (and 127.0.0.2, the simulator's pool member), made
// with openssl for the TLS tests; and the transport the end-to-end suites run over.
//
// DPXEN_TEST_TLS (set by vitest.config.ts's projects) runs the end-to-end suites against
// xapi-sim over HTTPS with a self-signed certificate: `pin` trusts it by its SHA-256
// fingerprint, `ca` by a CA file. writeConfig adds that trust to every configuration that names
// such a simulator, unless the test set caFile or fingerprint itself.
import { mkdtempSync, readFileSync } from 'node:fs'
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

export async function makeCert(dir: string, name = 'host'): Promise<TestCert> {
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
    'subjectAltName=IP:127.0.0.1,IP:127.0.0.2',
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

let shared: Promise<TestCert> | undefined

/**
 * The certificate every simulator of this test process serves under an https transport (made
 * once, in a folder no test removes), and trusted by the tests' own XML-RPC client.
 */
export function sharedCert(): Promise<TestCert> {
  shared ??= makeCert(mkdtempSync(join(tmpdir(), 'dpxen-cert-'))).then((cert) => {
    setGlobalDispatcher(new Agent({ connect: { ca: cert.cert } }))
    return cert
  })
  return shared
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

/** The trust settings for a configuration whose url is that of an https simulator, else none. */
export function trustFor(url: unknown): Record<string, string> {
  if (typeof url !== 'string' || !url.startsWith('https:')) return {}
  try {
    return trust.get(new URL(url).origin) ?? {}
  } catch {
    return {}
  }
}
