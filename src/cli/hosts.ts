// What `dpxen check` says about each host of the pool: its address, whether it is the master,
// enabled and live, and whether the certificate it serves is the one the pool records for it
// (a transfer redirected there is refused otherwise).
import type { Logger } from '../core/log.js'
import { probeCertificate } from '../xapi/certificate.js'
import type { Host } from '../xapi/host.js'
import { NBD_HOW } from '../backup/cbt.js'

interface HostState {
  name_label: string
  address: string
  enabled: boolean
  metrics: string
}

/** One line per host; returns the number of problems. */
export async function checkHosts(pool: Host, log: Logger): Promise<number> {
  const records = await pool.call<Record<string, HostState>>('host.get_all_records')
  const pools = await pool.call<Record<string, { master: string }>>('pool.get_all_records')
  const master = Object.values(pools)[0]?.master
  const masterUrl = new URL(pool.url)
  let problems = 0
  for (const [ref, host] of Object.entries(records)) {
    const live = await pool.call<boolean>('host_metrics.get_live', host.metrics).catch(() => undefined)
    const role = ref === master ? 'master' : 'member'
    const state = `${role}, ${host.enabled ? 'enabled' : 'DISABLED (maintenance)'}${live === false ? ', DOWN' : ''}`
    const recorded = pool.hosts.find((h) => h.address === host.address)?.fingerprint ?? ''
    const line = `host ${host.name_label} (${host.address}, ${state})`
    if (live === false) {
      problems++
      log.info(`PROBLEM ${line}: VMs on its local storage cannot be backed up until it is back`)
      continue
    }
    const port = masterUrl.port ? `:${masterUrl.port}` : ''
    const cert = await probeCertificate(
      `https://${host.address.includes(':') ? `[${host.address}]` : host.address}${port}`,
      {
        timeoutMs: 10_000,
      },
    ).catch((error: unknown) => error as Error)
    if (cert instanceof Error) {
      problems++
      log.info(`PROBLEM ${line}: ${cert.message}`)
    } else if (!recorded) {
      problems++
      log.info(
        `PROBLEM ${line}: certificate ${cert.fingerprint}, but the pool records none for it: transfers redirected there are refused (XenServer 8.2 / XCP-ng 8.2 or later record them)`,
      )
    } else if (cert.fingerprint !== recorded) {
      problems++
      log.info(
        `PROBLEM ${line}: serves the certificate ${cert.fingerprint}, the pool records ${recorded}: transfers redirected there are refused; install the certificate through xapi (xe host-server-certificate-install, or host-refresh-server-certificate) on ${host.name_label}`,
      )
    } else log.info(`ok      ${line}, certificate ${cert.fingerprint} as the pool records it`)
  }
  return problems
}

/**
 * With `cbt`: whether the pool serves disks over NBD (a network with the nbd or insecure_nbd
 * purpose, not both); a line either way, 1 when it does not (the runs would keep their bases'
 * data), 0 when it does.
 */
export async function checkNbd(pool: Host, log: Logger): Promise<number> {
  const networks =
    await pool.call<Record<string, { name_label: string; purpose?: string[] }>>('network.get_all_records')
  const serving = Object.values(networks).flatMap((n) =>
    (n.purpose ?? []).filter((p) => p === 'nbd' || p === 'insecure_nbd').map((p) => `${n.name_label} (${p})`),
  )
  if (serving.length === 1) {
    log.info(`ok      NBD for changed block tracking: ${serving[0]}`)
    return 0
  }
  log.info(
    serving.length
      ? `PROBLEM NBD: ${serving.join(', ')}: a pool with both nbd and insecure_nbd refuses every NBD connection; remove one`
      : `PROBLEM no network of the pool has the nbd purpose: cbt keeps each base's data on the SR until one has (${NBD_HOW})`,
  )
  return 1
}
