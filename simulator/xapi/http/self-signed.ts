// A self-signed certificate for the simulator, made when it starts, as a XenServer or XCP-ng
// host makes one at installation (/etc/xensource/xapi-ssl.pem) that no CA vouches for. Made
// with the selfsigned package (WebCrypto, no openssl binary: Windows clients have none).
import { X509Certificate } from 'node:crypto'
import { isIP } from 'node:net'
import { generate } from 'selfsigned'

export interface HostCertificate {
  cert: string
  key: string
  /** AA:BB:… upper-case SHA-256, as dpxen's `fingerprint` takes it. */
  fingerprint: string
}

/** A certificate for `hosts` (names or IP addresses), EC P-256, valid for ten years from now. */
export async function selfSignedCertificate(hosts: string[]): Promise<HostCertificate> {
  const now = new Date()
  const pems = await generate([{ name: 'commonName', value: 'xapi-sim' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(now.getTime() - 60_000),
    notAfterDate: new Date(now.getTime() + 3650 * 86_400_000),
    extensions: [
      {
        name: 'subjectAltName',
        altNames: hosts.map((host) => (isIP(host) ? { type: 7, ip: host } : { type: 2, value: host })),
      },
    ],
  })
  return {
    cert: pems.cert,
    key: pems.private,
    fingerprint: new X509Certificate(pems.cert).fingerprint256.toUpperCase(),
  }
}
