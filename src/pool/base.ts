// The base snapshot of an incremental backup: one per VM, kept on the host between runs, the
// disks the next run's deltas are computed against. A run's snapshot is kept once its files are
// written (its run tags taken off, so no sweep removes it), as a pending base: only when the
// post-exec learns that Data Protector backed the files up (SMEXIT 0) does it become the base
// and the older base go. Otherwise it is dropped and the older base stays: a delta is never
// computed against a run whose files nobody kept. Data Protector's leveled Incrementals
// (Incremental N: the changes since the last backup of a lower level) keep one base per level
// below them: a Full and daily Incremental 1 keep two.
// With changed block tracking (cbt) a base is its disks alone: the snapshot's VM record is
// destroyed and its disks' data too (VDI.data_destroy), leaving the tracking metadata the next
// run's list_changed_blocks needs; the base's tags then live on each of its disks.
import { crashPoint } from '../core/crash-points.js'
import { messageOf } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import type { Host } from '../xapi/host.js'
import { destroyVdi, destroyVmAndDisks, diskVdis, exists, vmDisks } from './disks.js'
import {
  BASE_PREFIX,
  OC_BACKUP_RUN,
  OC_BASE_CHAIN,
  OC_BASE_LEVEL,
  OC_BASE_LEVELED,
  OC_BASE_OF,
  OC_BASE_PENDING,
  OC_BASE_POSITION,
  OC_BASE_RUN,
  OC_BASE_USERDEVICE,
  OC_OWNER,
} from './tags.js'

export interface Base {
  /** The snapshot VM; undefined for a base kept as its disks alone (cbt). */
  ref: string | undefined
  run: string
  chain: string
  position: number
  /** The Data Protector level of its run (OC_BASE_LEVEL). */
  level: number
  /** The base's disk at each position (userdevice → VDI ref). */
  disks: Map<string, string>
  /** Each of those disks' size, and the VM disk it is a snapshot of (VDI ref). */
  sizes: Map<string, number>
  of: Map<string, string>
  /** Kept as its disks' tracking metadata alone (cbt): no data to compute a VHD delta from. */
  metadataOnly: boolean
}

interface Kept {
  /** The snapshot VM; undefined when the base is its disks alone. */
  ref: string | undefined
  oc: Record<string, string>
  /** A base kept as its disks alone: position → VDI ref. */
  vdis?: Map<string, string>
}

/**
 * The VM's kept bases, oldest run first: confirmed and pending ones. A base is a snapshot VM, or
 * (cbt) the disks tagged with its run; disks whose run still has its VM record belong to that.
 */
async function keptOf(host: Host, vmUuid: string): Promise<{ bases: Kept[]; pending: Kept[] }> {
  const vms = await host.call<Records>('VM.get_all_records')
  const snapshots: Kept[] = Object.entries(vms)
    .filter(
      ([, r]) =>
        r.is_a_snapshot === true && (r.other_config as Record<string, string>)?.[OC_BASE_OF] === vmUuid,
    )
    .map(([ref, r]) => ({ ref, oc: r.other_config as Record<string, string> }))
  const runs = new Set(snapshots.map((k) => k.oc[OC_BASE_RUN]))
  const groups = new Map<string, Kept>()
  for (const [ref, r] of Object.entries(await host.call<Records>('VDI.get_all_records'))) {
    const oc = (r.other_config ?? {}) as Record<string, string>
    const run = oc[OC_BASE_RUN]
    // Still plugged into the run's snapshot: a run killed while tagging them; the sweep removes
    // that snapshot with its disks.
    const plugged = ((r.VBDs as string[] | undefined) ?? []).length > 0
    if (
      oc[OC_BASE_OF] !== vmUuid ||
      run === undefined ||
      oc[OC_BASE_USERDEVICE] === undefined ||
      runs.has(run) ||
      plugged
    )
      continue
    const group = groups.get(run) ?? { ref: undefined, oc, vdis: new Map<string, string>() }
    group.vdis!.set(oc[OC_BASE_USERDEVICE], ref)
    groups.set(run, group)
  }
  const all = [...snapshots, ...groups.values()].sort((a, b) =>
    (a.oc[OC_BASE_RUN] ?? '').localeCompare(b.oc[OC_BASE_RUN] ?? ''),
  )
  return {
    bases: all.filter((k) => !k.oc[OC_BASE_PENDING]),
    pending: all.filter((k) => k.oc[OC_BASE_PENDING]),
  }
}

type Records = Record<string, Record<string, unknown>>

const levelOf = (k: Kept): number => Number(k.oc[OC_BASE_LEVEL] ?? 0)

/**
 * The VM's base snapshot, if one is kept: the newest, or with `below` the newest of a level
 * below it (what an Incremental `below` is a delta against).
 */
export async function findBase(host: Host, vmUuid: string, below?: number): Promise<Base | undefined> {
  const { bases } = await keptOf(host, vmUuid)
  const found = bases.filter((k) => below === undefined || levelOf(k) < below).at(-1)
  if (!found) return undefined
  const disks = found.vdis ?? new Map((await vmDisks(host, found.ref!)).map((d) => [d.userdevice, d.vdi]))
  // A run killed between its snapshot's record and its disks' data (keepAsCbtBase): finished now.
  if (found.vdis)
    for (const vdi of found.vdis.values())
      if ((await host.call<string>('VDI.get_type', vdi)) !== 'cbt_metadata')
        await host.call('VDI.data_destroy', vdi)
  const sizes = new Map<string, number>()
  const of = new Map<string, string>()
  for (const [position, vdi] of disks) {
    sizes.set(position, Number(await host.call<string>('VDI.get_virtual_size', vdi)))
    of.set(position, await host.call<string>('VDI.get_snapshot_of', vdi))
  }
  return {
    sizes,
    of,
    ref: found.ref,
    run: found.oc[OC_BASE_RUN] ?? '',
    chain: found.oc[OC_BASE_CHAIN] ?? '',
    position: Number(found.oc[OC_BASE_POSITION] ?? 0),
    level: levelOf(found),
    disks,
    metadataOnly: found.vdis !== undefined,
  }
}

/**
 * Whether the VM still descends from the base: xapi makes each snapshot its VM's parent, makes a
 * snapshot reverted to the VM's parent again, and gives a destroyed VM's children its parent
 * (xapi_vm_clone.ml, xapi_vm_snapshot.ml, xapi_vm.ml). A VM reverted to a snapshot older than the
 * base has the base among its ancestors no more, and a delta against the base would not be the
 * VM's changes.
 */
export async function descendsFrom(host: Host, vm: string, base: string): Promise<boolean> {
  let at = await host.call<string>('VM.get_parent', vm)
  for (let depth = 0; depth < 1000 && at !== 'OpaqueRef:NULL'; depth++) {
    if (at === base) return true
    if (!(await exists(host, 'VM', at))) return false
    at = await host.call<string>('VM.get_parent', at)
  }
  return false
}

/**
 * After Data Protector's session: each base the run `runId` left pending becomes its VM's base
 * when the session backed the files up and the VM's backup succeeded (the older bases go), and
 * goes otherwise (the base stays). Covers every VM the run touched, also one whose backup died
 * half-way. Returns a line for each VM whose base changed.
 */
export async function settleBases(
  host: Host,
  run: { runId: string; ok: Map<string, string>; backedUp: boolean },
  log: Logger,
): Promise<string[]> {
  // The run's pending bases: snapshot VMs, or (cbt) disks alone.
  const records = [
    ...Object.values(await host.call<Records>('VM.get_all_records')),
    ...Object.values(await host.call<Records>('VDI.get_all_records')),
  ]
  const touched = new Set(
    records
      .map((r) => r.other_config as Record<string, string> | undefined)
      .filter((oc) => oc?.[OC_BASE_PENDING] === run.runId)
      .map((oc) => oc![OC_BASE_OF]!)
      .filter(Boolean),
  )
  const lines: string[] = []
  for (const uuid of touched) {
    const name = run.ok.get(uuid) ?? uuid
    const { bases, pending } = await keptOf(host, uuid)
    const mine = pending.filter((k) => k.oc[OC_BASE_PENDING] === run.runId)
    const newest = mine.at(-1)
    // Tagged half-way by a run killed there: no base to settle; the sweep removes its snapshot.
    if (!newest) continue
    const confirm = run.backedUp && run.ok.has(uuid)
    // A leveled run replaces the bases of its level and above; any other run, every base.
    const leveled = newest.oc[OC_BASE_LEVELED] === 'true'
    const replaced = bases.filter((k) => !leveled || levelOf(k) >= levelOf(newest))
    const drop = confirm ? [...replaced, ...mine.slice(0, -1)] : mine
    if (confirm) await untag(host, newest, OC_BASE_PENDING)
    for (const k of drop) await destroyKept(host, k, name, log)
    const since = bases.at(-1)?.oc[OC_BASE_RUN]
    lines.push(
      confirm
        ? `${name}: run ${newest.oc[OC_BASE_RUN]} is the base of the next incremental run`
        : `${name}: Data Protector did not back up every file of run ${newest.oc[OC_BASE_RUN]}: its snapshot was removed; the next incremental run holds the changes since ${since ? `run ${since}` : 'a new full'}`,
    )
  }
  return lines
}

/** Takes a tag off a base: its VM record, or each of its disks. */
async function untag(host: Host, kept: Kept, key: string): Promise<void> {
  if (kept.ref) await host.call('VM.remove_from_other_config', kept.ref, key)
  for (const vdi of kept.vdis?.values() ?? []) await host.call('VDI.remove_from_other_config', vdi, key)
}

async function destroyKept(host: Host, kept: Kept, name: string, log: Logger): Promise<void> {
  try {
    if (kept.ref && (await exists(host, 'VM', kept.ref))) await destroyVmAndDisks(host, kept.ref, log)
    // Disks alone: SM merges each one's tracking log into the next, so the chain stays whole.
    for (const vdi of kept.vdis?.values() ?? [])
      if (await exists(host, 'VDI', vdi)) await destroyVdi(host, vdi, log)
  } catch (error) {
    log.info(`dpxen: warning: ${name}: a base snapshot could not be removed: ${messageOf(error)}`)
  }
}

type BaseInfo = {
  vmUuid: string
  vmName: string
  run: string
  chain: string
  position: number
  runId: string
  level: number
  leveled: boolean
}

/**
 * The tags that make a base, pending first: from the moment it says whose base it is, the
 * post-exec knows to settle it.
 */
function baseTags(info: BaseInfo): (readonly [string, string])[] {
  return [
    [OC_BASE_PENDING, info.runId],
    [OC_BASE_OF, info.vmUuid],
    [OC_BASE_RUN, info.run],
    [OC_BASE_CHAIN, info.chain],
    [OC_BASE_POSITION, String(info.position)],
    [OC_BASE_LEVEL, String(info.level)],
    [OC_BASE_LEVELED, String(info.leveled)],
  ]
}

/** Makes a run's snapshot the VM's base: renamed, its run tags replaced by the base's. */
export async function keepAsBase(host: Host, snap: string, info: BaseInfo): Promise<void> {
  for (const [key, value] of baseTags(info)) {
    await host.call('VM.remove_from_other_config', snap, key)
    await host.call('VM.add_to_other_config', snap, key, value)
  }
  await host.call('VM.set_name_label', snap, `${BASE_PREFIX} ${info.vmName} ${info.run}`)
  for (const key of [OC_BACKUP_RUN, OC_OWNER]) await host.call('VM.remove_from_other_config', snap, key)
  // Its disks say whose base they are before they lose the run's tags: a base removed half-way
  // (the record gone, the disks not yet) leaves disks the next sweep knows as dpxen's.
  for (const vdi of await diskVdis(host, snap)) {
    await host.call('VDI.remove_from_other_config', vdi, OC_BASE_OF)
    await host.call('VDI.add_to_other_config', vdi, OC_BASE_OF, info.vmUuid)
    for (const key of [OC_BACKUP_RUN, OC_OWNER]) await host.call('VDI.remove_from_other_config', vdi, key)
  }
}

/** Removes every base of the VM, settled or pending (it is no longer backed up in a chain); how many. */
export async function dropBases(host: Host, vmUuid: string, name: string, log: Logger): Promise<number> {
  const { bases, pending } = await keptOf(host, vmUuid)
  for (const k of [...bases, ...pending]) await destroyKept(host, k, name, log)
  return bases.length + pending.length
}

/** Removes pending bases a post-exec never settled (their files' fate is unknown). */
export async function dropUnsettled(host: Host, vmUuid: string, name: string, log: Logger): Promise<void> {
  for (const k of (await keptOf(host, vmUuid)).pending) await destroyKept(host, k, name, log)
}

/**
 * Makes a run's snapshot the VM's base as changed block tracking keeps it (cbt): each disk tagged
 * as the base (pending first) and named for it, the snapshot's VM record destroyed (its disks
 * stay), then each disk's data destroyed: what is left is the tracking metadata the next run's
 * list_changed_blocks needs, and no data on the SR. A kill between the steps leaves either a
 * snapshot the next sweep removes (its run tags still on it) or disks findBase finishes.
 */
export async function keepAsCbtBase(
  host: Host,
  snap: string,
  info: Parameters<typeof keepAsBase>[2],
): Promise<void> {
  const disks = await vmDisks(host, snap)
  for (const d of disks) {
    for (const [key, value] of [...baseTags(info), [OC_BASE_USERDEVICE, d.userdevice] as const]) {
      await host.call('VDI.remove_from_other_config', d.vdi, key)
      await host.call('VDI.add_to_other_config', d.vdi, key, value)
    }
    await host.call(
      'VDI.set_name_label',
      d.vdi,
      `${BASE_PREFIX} ${info.vmName} ${info.run} disk ${d.userdevice}`,
    )
    for (const key of [OC_BACKUP_RUN, OC_OWNER]) await host.call('VDI.remove_from_other_config', d.vdi, key)
  }
  crashPoint(`destroy the record of ${info.vmName}'s base`)
  await host.call('VM.destroy', snap)
  for (const d of disks) {
    crashPoint(`destroy the data of ${info.vmName}'s base disk ${d.userdevice}`)
    await host.call('VDI.data_destroy', d.vdi)
  }
}
