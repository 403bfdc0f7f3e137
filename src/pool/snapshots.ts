// dpxen's snapshots: made tagged (who made them, when, of which VM), and swept when an earlier
// run left them behind. Destroying them with their disks is in disks.ts.
import { messageOf } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import type { Host } from '../xapi/host.js'
import { refsInResult } from '../xapi/xmlrpc.js'
import { destroyVdi, destroyVmAndDisks, diskVdis, exists } from './disks.js'
import {
  OC_BACKUP_RUN,
  OC_BASE_OF,
  OC_BASE_RUN,
  OC_CREATED,
  OC_HEALTH_CHECK,
  OC_OWNER,
  OC_VM_NAME,
  OC_VM_UUID,
  SNAPSHOT_PREFIX,
} from './tags.js'
import { ownerGone, ownerTag, STALE_AFTER_MS } from '../staging/owner.js'

/**
 * Snapshots a VM and tags the snapshot as ours. The snapshot call is not interrupted by a
 * signal (we must learn the ref to destroy it); if tagging fails the snapshot is destroyed.
 */
export async function makeSnapshot(
  host: Host,
  vmRef: string,
  vmName: string,
  runId: string,
  log: Logger,
): Promise<string> {
  // The name says whose it is from the moment it exists: a run killed before the tags below
  // leaves a snapshot the sweep still recognises (snapshotOwner).
  const name = `${SNAPSHOT_PREFIX} ${vmName} ${new Date().toISOString()} (${ownerTag()})`
  const [snap] = refsInResult(await host.callAsync('VM.snapshot', [vmRef, name]))
  if (!snap) throw new Error('VM.snapshot returned no snapshot')
  try {
    for (const [key, value] of [
      [OC_BACKUP_RUN, runId],
      [OC_CREATED, new Date().toISOString()],
      [OC_OWNER, ownerTag()],
      [OC_VM_UUID, await host.call<string>('VM.get_uuid', vmRef)],
      [OC_VM_NAME, vmName],
    ]) {
      await host.call('VM.add_to_other_config', snap, key, value)
    }
    // Its disks too: a run killed between destroying the snapshot and its disks leaves disks
    // that nothing else would say are ours (sweepSnapshots removes them).
    for (const vdi of await diskVdis(host, snap)) {
      await host.call('VDI.add_to_other_config', vdi, OC_BACKUP_RUN, runId)
      await host.call('VDI.add_to_other_config', vdi, OC_OWNER, ownerTag())
    }
  } catch (error) {
    await destroyVmAndDisks(host, snap, log).catch(() => undefined)
    throw error
  }
  return snap
}

const OWNED_NAME = new RegExp(
  `^${SNAPSHOT_PREFIX} .* (\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(?:\\.\\d+)?Z) \\(([^()\\s]+:\\d+)\\)$`,
)

/** When and by which process (host:pid) a snapshot named by makeSnapshot was made. */
export function snapshotOwner(name: string): { created: string; owner: string } | undefined {
  const match = OWNED_NAME.exec(name)
  return match ? { created: match[1]!, owner: match[2]! } : undefined
}

/** Whether what a run left (made at `created`, by `owner`) is to go: this run's, stale, or its process gone. */
function leftOver(
  oc: Record<string, string>,
  created: number,
  runId: string | undefined,
  owner = oc[OC_OWNER],
) {
  const stale = Number.isFinite(created) && Date.now() - created > STALE_AFTER_MS
  const mine = runId !== undefined && oc[OC_BACKUP_RUN] === runId
  return mine || stale || ownerGone(owner)
}

/**
 * Whether a disk is a snapshot's (or a health check's copy's) whose record is gone (a run killed
 * between the two): tagged, no VBD. A base's disks without their record are never needed again, whoever removed it.
 */
function orphanDisk(vdi: Record<string, unknown>, runId: string | undefined): boolean {
  const oc = (vdi.other_config ?? {}) as Record<string, string>
  if ((vdi.VBDs as string[] | undefined)?.length) return false
  // A health check's copy's disk, its VM record already gone.
  if (oc[OC_HEALTH_CHECK] !== undefined) return leftOver(oc, Date.parse(oc[OC_CREATED] ?? ''), runId)
  if (!vdi.is_a_snapshot) return false
  // A removed base's disk; not a base kept as its disks alone (cbt), whose disks carry its run.
  if (oc[OC_BASE_OF] !== undefined) return oc[OC_BASE_RUN] === undefined
  return oc[OC_BACKUP_RUN] !== undefined && leftOver(oc, Date.parse(String(vdi.snapshot_time ?? '')), runId)
}

/**
 * Destroys snapshots an earlier dpxen run left: ours (tagged), and either made by this run, or
 * by a dpxen process on this machine that is gone, or older than a day. Another dpxen backing
 * up the same pool right now keeps its snapshot. Returns the names of those destroyed.
 */
export async function sweepSnapshots(
  host: Host,
  log: Logger,
  options: {
    runId?: string
    /** The pool's VM and VDI records when the caller has just read them (saves reading them again). */
    vms?: Map<string, Record<string, unknown>>
    vdis?: Map<string, Record<string, unknown>>
  } = {},
): Promise<{ destroyed: string[]; copies: string[]; failed: string[] }> {
  type Records = Record<string, Record<string, unknown>>
  const vms = options.vms ?? new Map(Object.entries(await host.call<Records>('VM.get_all_records')))
  const vdis = options.vdis ?? new Map(Object.entries(await host.call<Records>('VDI.get_all_records')))
  const destroyed: string[] = []
  const copies: string[] = []
  const failed: string[] = []
  const remove = async (what: string, destroy: () => Promise<void>, into = destroyed): Promise<void> => {
    try {
      await destroy()
      into.push(what)
    } catch (error) {
      failed.push(`${what}: ${messageOf(error)}`)
    }
  }
  for (const [ref, vdi] of vdis)
    if (orphanDisk(vdi, options.runId))
      await remove(`disk ${String(vdi.name_label)}`, () => destroyVdi(host, ref, log))
  for (const [ref, vm] of vms) {
    const oc = (vm.other_config ?? {}) as Record<string, string>
    if (!vm.is_a_snapshot) {
      // A health check's copy, left by a run killed before it destroyed it.
      if (oc[OC_HEALTH_CHECK] !== undefined && leftOver(oc, Date.parse(oc[OC_CREATED] ?? ''), options.runId))
        await remove(String(vm.name_label), () => removeHealthCopy(host, ref, log), copies)
      continue
    }
    // Tagged, or not yet, or half: a run killed between the snapshot and its tags left only the
    // name, and another dpxen tagging its snapshot right now has some tags and not yet the
    // others. What a tag does not say yet, the name says (a missing owner is not a gone one).
    const named = snapshotOwner(String(vm.name_label))
    if (oc[OC_BACKUP_RUN] === undefined && !named) continue
    const created = Date.parse(oc[OC_CREATED] ?? named?.created ?? '')
    if (!leftOver(oc, created, options.runId, oc[OC_OWNER] ?? named?.owner)) continue
    await remove(String(vm.name_label), () => destroyVmAndDisks(host, ref, log))
  }
  return { destroyed, copies, failed }
}

/**
 * Removes a health check's copy: stopped at once if it runs (it is a throwaway: nothing in it is
 * kept), then destroyed with its disks. Bounded: a copy that will not stop is left to the sweep.
 */
export async function removeHealthCopy(
  host: Host,
  vm: string,
  log: Logger,
  signal?: AbortSignal,
): Promise<void> {
  if (!(await exists(host, 'VM', vm))) return
  if ((await host.call<string>('VM.get_power_state', vm)) !== 'Halted')
    await host.callAsync('VM.hard_shutdown', [vm], { signal: AbortSignal.timeout(HEALTH_COPY_STOP_MS) })
  // After a SIGTERM, busy disks are retried for seconds only (disks.ts ABORTED_RETRY_MS).
  await destroyVmAndDisks(host, vm, log, signal)
}

/** How long the hard shutdown of a health check's copy may take. */
const HEALTH_COPY_STOP_MS = 60_000
