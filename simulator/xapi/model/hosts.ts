// The hosts of the pool: which SRs each one sees (its attached PBDs), which are live, and the
// choices xapi makes from that (xapi_vm_helpers.ml: assert_can_see_SRs, possible_hosts,
// choose_host; importexport.ml: check_sr_availability, find_host_for_sr).
import type { SimContext } from './context.js'
import { XapiFailure } from './errors.js'
import { NULL_REF } from './schema.js'

/** The pool's master now (pool.master; pool.designate_new_master moves it). */
export function masterOf(sim: SimContext): string {
  return String(sim.db.require('pool', sim.poolRef).master)
}

/** Whether the host is live (host_metrics.live; a host that is down is not). */
export function isLive(sim: SimContext, host: string): boolean {
  const metrics = sim.db.get('host_metrics', String(sim.db.get('host', host)?.metrics ?? NULL_REF))
  return metrics?.live === true
}

/** The SRs the host has an attached PBD for. */
export function srsSeenBy(sim: SimContext, host: string): Set<string> {
  const seen = new Set<string>()
  for (const pbd of (sim.db.get('host', host)?.PBDs as string[] | undefined) ?? []) {
    const rec = sim.db.get('PBD', pbd)
    if (rec?.currently_attached) seen.add(String(rec.SR))
  }
  return seen
}

/** The SRs of the VM's disks, empty drives skipped (assert_can_see_SRs). */
export function srsOfVm(sim: SimContext, vm: string): string[] {
  const srs = new Set<string>()
  for (const vbd of sim.db.require('VM', vm).VBDs as string[]) {
    const rec = sim.db.get('VBD', vbd)
    if (!rec || rec.empty) continue
    const vdi = sim.db.get('VDI', String(rec.VDI))
    if (vdi) srs.add(String(vdi.SR))
  }
  return [...srs]
}

/** Whether the host sees every one of these SRs and is live. */
export function canServe(sim: SimContext, host: string, srs: string[]): boolean {
  if (!isLive(sim, host)) return false
  const seen = srsSeenBy(sim, host)
  return srs.every((sr) => seen.has(sr))
}

/** choose_host: the first live host that sees the SRs (xapi picks one at random), or NO_HOSTS_AVAILABLE. */
export function chooseHost(sim: SimContext, srs: string[]): string {
  const found = sim.db.all('host').find(([ref]) => canServe(sim, ref, srs))
  if (!found) throw new XapiFailure('NO_HOSTS_AVAILABLE')
  return found[0]
}

/**
 * The address a redirect names (importexport.ml return_302_redirect: https, the host's address,
 * the same path and query). The simulator's hosts share one port that is not 443, so it is named.
 */
export function redirectUrl(sim: SimContext, host: string, url: URL, port: number): string {
  const target = new URL(url.toString())
  target.protocol = 'https:'
  target.hostname = sim.faults.get('redirect-to')?.arg ?? String(sim.db.require('host', host).address)
  target.port = port === 443 ? '' : String(port)
  return target.toString()
}
