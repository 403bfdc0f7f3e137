// Where xapi's NBD server answers, as xapi decides it (xen-api e2ee48d688): network purposes
// (xapi_network.ml add_purpose, assert_can_add_purpose), VDI.get_nbd_info (xapi_vdi.ml
// _get_nbd_info) and whether a connection gets TLS (ocaml/nbd/src/main.ml xapi_says_use_tls).
import { X509Certificate } from 'node:crypto'
import type { SimContext } from './context.js'
import { XapiFailure } from './errors.js'

const PURPOSES = ['nbd', 'insecure_nbd'] as const
type Purpose = (typeof PURPOSES)[number]

function asPurpose(value: unknown): Purpose {
  if (!PURPOSES.includes(value as Purpose))
    // What xapi's unmarshalling answers for an unknown enum value was not verified.
    throw new XapiFailure('INTERNAL_ERROR', `Rpc.Runtime_error("network_purpose", "${String(value)}")`)
  return value as Purpose
}

/** network.add_purpose: managed networks only; nbd and insecure_nbd never in one pool. */
export function addPurpose(sim: SimContext, network: string, value: unknown): void {
  const purpose = asPurpose(value)
  const rec = sim.db.require('network', network)
  if (rec.managed === false) throw new XapiFailure('NETWORK_UNMANAGED', network)
  const current = (rec.purpose as string[] | undefined) ?? []
  if (current.includes(purpose)) return
  const conflicting = purpose === 'nbd' ? 'insecure_nbd' : 'nbd'
  for (const [, other] of sim.db.all('network'))
    if (((other.purpose as string[] | undefined) ?? []).includes(conflicting))
      throw new XapiFailure('NETWORK_INCOMPATIBLE_PURPOSES', purpose, conflicting)
  sim.db.update('network', network, { purpose: [purpose, ...current] })
}

export function removePurpose(sim: SimContext, network: string, value: unknown): void {
  const purpose = asPurpose(value)
  const rec = sim.db.require('network', network)
  sim.db.update('network', network, {
    purpose: ((rec.purpose as string[] | undefined) ?? []).filter((p) => p !== purpose),
  })
}

/**
 * Whether the NBD server speaks TLS to a new connection: 'tls' when a network has purpose nbd,
 * 'plain' for insecure_nbd, undefined (the connection refused) for both or neither.
 */
export function nbdMode(sim: SimContext): 'tls' | 'plain' | undefined {
  const all = sim.db.all('network').flatMap(([, n]) => (n.purpose as string[] | undefined) ?? [])
  const tls = all.includes('nbd')
  const plain = all.includes('insecure_nbd')
  if (tls === plain) return undefined
  return tls ? 'tls' : 'plain'
}

/** The host name a certificate names (the first DNS name), else the host's hostname, as xapi picks it. */
function subjectOf(sim: SimContext, host: string, pem: string): string {
  try {
    const names = (new X509Certificate(pem).subjectAltName ?? '')
      .split(', ')
      .filter((n) => n.startsWith('DNS:'))
      .map((n) => n.slice(4))
      .sort()
    const strict = names.filter((n) => !n.startsWith('*'))
    const chosen = (strict.length ? strict : names)[0]
    if (chosen) return chosen
  } catch {
    // no certificate to read: the hostname, as xapi falls back
  }
  return String(sim.db.require('host', host).hostname)
}

/**
 * VDI.get_nbd_info: one record per address of each attached PIF on a network with an NBD
 * purpose, on each host where the VDI's SR is plugged; none without such a network. The export
 * name carries the caller's session (a secret). Refused for a cbt_metadata VDI.
 */
export function nbdInfo(sim: SimContext, vdiRef: string, session: string): Record<string, string>[] {
  const vdi = sim.db.require('VDI', vdiRef)
  if (vdi.type === 'cbt_metadata') throw new XapiFailure('VDI_INCOMPATIBLE_TYPE', vdiRef, 'cbt_metadata')
  const nbdNetworks = new Set(
    sim.db
      .all('network')
      .filter(([, n]) =>
        ((n.purpose as string[] | undefined) ?? []).some((p) => p === 'nbd' || p === 'insecure_nbd'),
      )
      .map(([ref]) => ref),
  )
  const hosts = sim.db
    .all('PBD')
    .filter(([, pbd]) => pbd.SR === vdi.SR && pbd.currently_attached === true)
    .map(([, pbd]) => String(pbd.host))
  const exportname = `/${String(vdi.uuid)}?session_id=${session}`
  return hosts.flatMap((host) => {
    const ips = sim.db
      .all('PIF')
      .filter(
        ([, pif]) =>
          pif.host === host && pif.currently_attached === true && nbdNetworks.has(String(pif.network)),
      )
      .flatMap(([, pif]) =>
        [String(pif.IP), ...((pif.IPv6 as string[] | undefined) ?? [])].filter((ip) => ip !== ''),
      )
    if (!ips.length) return []
    const cert = sim.certificates.get(host) ?? ''
    const subject = subjectOf(sim, host, cert)
    // An int on the wire is a string, as xapi writes int64 in XML-RPC.
    return ips.map((address) => ({ exportname, address, port: String(sim.nbd.port), cert, subject }))
  })
}
