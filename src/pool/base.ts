// The base snapshot of an incremental backup: one per VM, kept on the host between runs, the
// disks the next run's deltas are computed against. A run's snapshot is kept once its files are
// written (its run tags taken off, so no sweep removes it), as a pending base: only when the
// post-exec learns that Data Protector backed the files up (SMEXIT 0) does it become the base
// and the older base go. Otherwise it is dropped and the older base stays: a delta is never
// computed against a run whose files nobody kept. Data Protector's leveled Incrementals
// (Incremental N: the changes since the last backup of a lower level) keep one base per level
// below them: a Full and daily Incremental 1 keep two.
import { messageOf } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import type { Host } from '../xapi/host.js'
import { destroyVmAndDisks, diskVdis, exists, vmDisks } from './disks.js'
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
  OC_OWNER,
} from './tags.js'

export interface Base {
  ref: string
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
}

interface Kept {
  ref: string
  oc: Record<string, string>
}

/** The VM's kept snapshots, oldest run first: confirmed bases and pending ones. */
async function keptOf(host: Host, vmUuid: string): Promise<{ bases: Kept[]; pending: Kept[] }> {
  const vms = await host.call<Records>('VM.get_all_records')
  const all = Object.entries(vms)
    .filter(
      ([, r]) =>
        r.is_a_snapshot === true && (r.other_config as Record<string, string>)?.[OC_BASE_OF] === vmUuid,
    )
    .map(([ref, r]) => ({ ref, oc: r.other_config as Record<string, string> }))
    .sort((a, b) => (a.oc[OC_BASE_RUN] ?? '').localeCompare(b.oc[OC_BASE_RUN] ?? ''))
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
  const disks = new Map((await vmDisks(host, found.ref)).map((d) => [d.userdevice, d.vdi]))
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
  const vms = await host.call<Records>('VM.get_all_records')
  const touched = new Set(
    Object.values(vms)
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
    const newest = mine.at(-1)!
    const confirm = run.backedUp && run.ok.has(uuid)
    // A leveled run replaces the bases of its level and above; any other run, every base.
    const leveled = newest.oc[OC_BASE_LEVELED] === 'true'
    const replaced = bases.filter((k) => !leveled || levelOf(k) >= levelOf(newest))
    const drop = confirm ? [...replaced, ...mine.slice(0, -1)] : mine
    if (confirm) await host.call('VM.remove_from_other_config', newest.ref, OC_BASE_PENDING)
    for (const k of drop) await destroyKept(host, k.ref, name, log)
    const since = bases.at(-1)?.oc[OC_BASE_RUN]
    lines.push(
      confirm
        ? `${name}: run ${newest.oc[OC_BASE_RUN]} is the base of the next incremental run`
        : `${name}: Data Protector did not back up every file of run ${newest.oc[OC_BASE_RUN]}: its snapshot was removed; the next incremental run holds the changes since ${since ? `run ${since}` : 'a new full'}`,
    )
  }
  return lines
}

async function destroyKept(host: Host, ref: string, name: string, log: Logger): Promise<void> {
  try {
    if (await exists(host, 'VM', ref)) await destroyVmAndDisks(host, ref, log)
  } catch (error) {
    log.info(`dpxen: warning: ${name}: a base snapshot could not be removed: ${messageOf(error)}`)
  }
}

/** Makes a run's snapshot the VM's base: renamed, its run tags replaced by the base's. */
export async function keepAsBase(
  host: Host,
  snap: string,
  info: {
    vmUuid: string
    vmName: string
    run: string
    chain: string
    position: number
    runId: string
    level: number
    leveled: boolean
  },
): Promise<void> {
  // Pending first: from the moment it says whose base it is, the post-exec knows to settle it.
  for (const [key, value] of [
    [OC_BASE_PENDING, info.runId],
    [OC_BASE_OF, info.vmUuid],
    [OC_BASE_RUN, info.run],
    [OC_BASE_CHAIN, info.chain],
    [OC_BASE_POSITION, String(info.position)],
    [OC_BASE_LEVEL, String(info.level)],
    [OC_BASE_LEVELED, String(info.leveled)],
  ] as const) {
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
  for (const k of [...bases, ...pending]) await destroyKept(host, k.ref, name, log)
  return bases.length + pending.length
}

/** Removes pending bases a post-exec never settled (their files' fate is unknown). */
export async function dropUnsettled(host: Host, vmUuid: string, name: string, log: Logger): Promise<void> {
  for (const k of (await keptOf(host, vmUuid)).pending) await destroyKept(host, k.ref, name, log)
}
