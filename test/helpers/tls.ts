// A self-signed certificate for 127.0.0.1, made with openssl for the TLS tests.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
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
    'subjectAltName=IP:127.0.0.1',
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
