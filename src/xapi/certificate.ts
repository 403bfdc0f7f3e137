// Trust on first use, as ssh does: what a host's certificate is (fingerprint, subject,
// validity) and whether the configured policy trusts it, read over a TLS connection that sends
// nothing. XenServer and XCP-ng serve a self-signed certificate made at installation
// (/etc/xensource/xapi-ssl.pem), which no CA vouches for: the administrator compares the
// fingerprint with the host's own and pins it.
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { connectionError } from './connection.js'

export interface CertificateFacts {
  /** AA:BB:… upper-case SHA-256, as the configuration's `fingerprint` takes it. */
  fingerprint: string
  subject: string
  issuer: string
  validFrom: Date
  validTo: Date
  /** Whether the system CAs (or caFile) vouch for it and it names the host. */
  trusted: boolean
  /** Why not (DEPTH_ZERO_SELF_SIGNED_CERT, ERR_TLS_CERT_ALTNAME_INVALID…). */
  reason?: string
}

/** One line of a distinguished name: CN=xapi-sim, O=… */
const dn = (text: string): string => text.split('\n').filter(Boolean).join(', ')

/** Connects to the https `url`, reads its certificate and closes; nothing is sent. */
export function probeCertificate(
  url: string,
  options: { caFile?: string; timeoutMs?: number } = {},
): Promise<CertificateFacts> {
  const target = new URL(url)
  const host = target.hostname.replace(/^\[(.*)\]$/, '$1')
  const ca = options.caFile ? readFileSync(options.caFile) : undefined
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host,
      port: Number(target.port) || 443,
      rejectUnauthorized: false,
      ...(ca ? { ca } : {}),
      ...(isIP(host) ? {} : { servername: host }),
      ALPNProtocols: ['http/1.1'],
    })
    socket.setTimeout(options.timeoutMs ?? 30_000, () =>
      socket.destroy(Object.assign(new Error('no TLS handshake'), { code: 'ETIMEDOUT' })),
    )
    socket.once('error', (error) => reject(connectionError(target.origin, error)))
    socket.once('secureConnect', () => {
      const raw = socket.getPeerCertificate().raw
      const authorized = socket.authorized
      const reason = socket.authorizationError
      socket.destroy()
      if (!raw) return reject(connectionError(target.origin, new Error('the host sent no certificate')))
      const cert = new X509Certificate(raw)
      resolve({
        fingerprint: cert.fingerprint256.toUpperCase(),
        subject: dn(cert.subject),
        issuer: dn(cert.issuer),
        validFrom: new Date(cert.validFrom),
        validTo: new Date(cert.validTo),
        trusted: authorized,
        ...(reason ? { reason: String((reason as { code?: string }).code ?? reason) } : {}),
      })
    })
  })
}

/** The line that pins `fingerprint` in a configuration file of the kind `source` names. */
export function fingerprintLine(source: string, fingerprint: string): string {
  if (/\.py$/i.test(source)) return `fingerprint = "${fingerprint}"`
  if (/\.json$|package\.json$|rc$/i.test(source)) return `"fingerprint": "${fingerprint}",`
  return `fingerprint: "${fingerprint}"`
}
