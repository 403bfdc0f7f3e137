// What a run killed outright left, settled in one place and said in one wording, once per run by
// every hook and by `dpxen recover`: first an interrupted restore in the folder's journal
// (finished if its swap was whole, undone otherwise), then the VMs an interrupted backup
// stopped (started again), then the snapshots dpxen made that nobody will remove (swept; another
// dpxen's that is still running stays). Files in the staging folder are the hooks' own business.
import type { Logger } from '../core/log.js'
import type { Host } from '../xapi/host.js'
import { recoverRestores } from './journal.js'
import { restartStopped } from './lifecycle.js'
import { sweepSnapshots } from './snapshots.js'
import { readPool, type PoolView } from './view.js'

export interface SettleOptions {
  /** The staging folder, held by this run: its restore journal is settled. */
  dir?: string
  /** The VMs an interrupted backup stopped, from its state file. */
  stopped?: { uuid: string; name: string }[]
  /** This run's id (a post-exec's): its own snapshots are leftovers whatever their owner. */
  runId?: string
  /** Read the whole pool for the sweep and return it (the pre-exec plans from the same read). */
  readPool?: boolean
}

export interface Settled {
  /** How many things were put right: restores settled, VMs started, snapshots removed. */
  settled: number
  /** Snapshots that could not be removed (each said as a warning). */
  failed: number
  pool?: PoolView
}

export async function settleLeftovers(
  host: Host,
  log: Logger,
  options: SettleOptions & { readPool: true },
): Promise<Settled & { pool: PoolView }>
export async function settleLeftovers(host: Host, log: Logger, options: SettleOptions): Promise<Settled>
export async function settleLeftovers(host: Host, log: Logger, options: SettleOptions): Promise<Settled> {
  let settled = 0
  if (options.dir !== undefined)
    for (const line of await recoverRestores(host, options.dir, log)) {
      log.info(line)
      settled++
    }
  settled += await restartStopped(host, log, options.stopped ?? [])
  // Read after the journal is settled: a restore undone above removed records of its own.
  const pool = options.readPool ? await readPool(host) : undefined
  const swept = await sweepSnapshots(host, log, {
    ...(options.runId !== undefined ? { runId: options.runId } : {}),
    ...(pool ? { vms: pool.vms, vdis: pool.vdis } : {}),
  })
  for (const name of swept.destroyed)
    log.info(`dpxen: removed the leftover snapshot "${name}" of an earlier run`)
  for (const name of swept.copies)
    log.info(`dpxen: removed the health-check copy "${name}" an earlier run left`)
  for (const line of swept.failed)
    log.info(`dpxen: warning: a leftover snapshot could not be removed: ${line}`)
  settled += swept.destroyed.length + swept.copies.length
  return { settled, failed: swept.failed.length, ...(pool ? { pool } : {}) }
}
