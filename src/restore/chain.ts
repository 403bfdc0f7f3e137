// Restore of incremental backups: the point restored is, for each VM, the newest run whose files
// Data Protector put back into backupDir. Its chain (that run, its parent, … down to the full)
// must be complete and in order and every file must match its manifest (size, XXH64, a whole
// VHD), or the VM is refused before anything on the pool changes. Each disk is then rebuilt in
// a new VDI: the full written onto it, then each delta in order (import_raw_vdi?format=vhd
// writes the blocks a VHD holds and leaves the others). The VM is stopped, its disks swapped
// for the rebuilt ones all or nothing, the old disks removed, and the VM started again if it
// ran. On any failure before the swap the new VDIs go and the VM is as it was.
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { DpxenError } from '../core/errors.js'
import { throwIfAborted } from '../core/signals.js'
import { destroyUnusedVdis, RollbackFailed, vmDisks, type VmDisk } from '../pool/disks.js'
import { JournalRecord } from '../pool/journal.js'
import { findVm } from '../pool/find.js'
import { runningOrHalted, stopOptions, whileHalted } from '../pool/lifecycle.js'
import { swapDisks } from '../pool/swap.js'
import type { ChainDisk, ChainManifest } from '../staging/chain.js'
import { verifyVhdFile } from '../xva/verify-file.js'
import { rebuildDisk, type ChainPoint } from './chain-disk.js'
import { putBackVtpm, type RestoreContext, type RestoreOutcome } from './common.js'
import { chainFileFault, rebuildVm, verifyMetadata } from './rebuild.js'

export type { ChainPoint }

/**
 * For each VM, the newest run present and the chain down to its full; a VM whose chain has a
 * gap or is out of order is in `problems`, with what to restore.
 */
export function chainPoints(found: { name: string; manifest: ChainManifest }[]): {
  points: ChainPoint[]
  problems: { vmName: string; reason: string }[]
} {
  const byVm = new Map<string, { name: string; manifest: ChainManifest }[]>()
  for (const f of found) byVm.set(f.manifest.vm.uuid, [...(byVm.get(f.manifest.vm.uuid) ?? []), f])
  const points: ChainPoint[] = []
  const problems: { vmName: string; reason: string }[] = []
  for (const runs of byVm.values()) {
    // The point is the one run no other run follows (as its parent, or as the full that ended
    // its chain): the chains say which is newest, never the run ids, which come from a clock.
    const followed = new Set(runs.flatMap((r) => [r.manifest.parentRun, r.manifest.after]))
    const present = new Set(runs.map((r) => r.manifest.run))
    const latest = runs.filter((r) => !followed.has(r.manifest.run))
    // A run whose parent's files are missing explains two latest runs: report the gap.
    const gap = latest.find((r) => r.manifest.parentRun !== undefined && !present.has(r.manifest.parentRun))
    if (gap) latest.splice(0, latest.length, gap)
    if (latest.length !== 1) {
      const names = (latest.length ? latest : runs).map((r) => r.manifest.run).join(', ')
      problems.push({
        vmName: runs[0]!.manifest.vm.name,
        reason: latest.length
          ? `backupDir holds ${latest.length} latest runs of it that no chain orders (${names}): keep only the files of the point to restore`
          : `its chain manifests name each other in a circle (${names}): the files are not dpxen's as written`,
      })
      continue
    }
    const newest = latest[0]!
    const vmName = newest.manifest.vm.name
    const byRun = new Map(runs.map((r) => [r.manifest.run, r]))
    const chain = [newest]
    let problem: string | undefined
    for (let at = newest; at.manifest.parentRun !== undefined;) {
      const parent = byRun.get(at.manifest.parentRun)
      if (!parent) {
        problem = `run ${at.manifest.run} holds the changes since run ${at.manifest.parentRun}, whose files are not in backupDir: restore that run's files (and any before it down to the full) with Data Protector too`
        break
      }
      if (
        parent.manifest.chain !== at.manifest.chain ||
        parent.manifest.position !== at.manifest.position - 1
      ) {
        problem = `runs ${parent.manifest.run} and ${at.manifest.run} are not consecutive runs of one chain`
        break
      }
      chain.unshift(parent)
      at = parent
    }
    if (!problem && chain[0]!.manifest.position !== 0)
      problem = `the chain of run ${newest.manifest.run} does not start with a full`
    if (problem) problems.push({ vmName, reason: problem })
    else points.push({ vmName, vmUuid: newest.manifest.vm.uuid, runs: chain })
  }
  return { points, problems }
}

/**
 * Every file of the chain is whole and the one its manifest names; the disks agree run to run;
 * the point's VM metadata is that VM's.
 */
export async function verifyChain(dir: string, point: ChainPoint, signal: AbortSignal): Promise<void> {
  await verifyMetadata(dir, point.runs.at(-1)!.manifest, signal)
  const positions = point.runs[0]!.manifest.disks.map((d) => `${d.userdevice}:${d.virtualSize}`).join(',')
  for (const { manifest } of point.runs) {
    if (manifest.disks.map((d) => `${d.userdevice}:${d.virtualSize}`).join(',') !== positions)
      throw new DpxenError(
        'XVA_INVALID',
        `run ${manifest.run} has other disks than the chain's full: start a new chain`,
      )
    for (const disk of manifest.disks) {
      let result
      try {
        result = await verifyVhdFile(join(dir, disk.file), signal)
      } catch (error) {
        throw chainFileFault(disk.file, manifest.run, error)
      }
      if (result.bytes !== disk.bytes || result.xxh64 !== disk.xxh64)
        throw new DpxenError(
          'XVA_INVALID',
          `${disk.file} does not match its chain manifest (size or XXH64 differ): the file is damaged`,
        )
      // What the manifest says that the file says too must agree: the VDI is made from the
      // manifest's size, and a 4 MiB disk once came back as 64 GiB.
      if (result.summary.virtualSize !== disk.virtualSize || result.summary.blocks !== disk.blocks)
        throw new DpxenError(
          'XVA_INVALID',
          `${disk.file} holds a disk of ${result.summary.virtualSize} bytes in ${result.summary.blocks} block(s), its chain manifest says ${disk.virtualSize} in ${disk.blocks}: the manifest was changed; nothing was restored`,
        )
      if (result.summary.type !== (manifest.position === 0 ? 3 : 4))
        throw new DpxenError(
          'XVA_INVALID',
          `${disk.file} is not the ${manifest.position === 0 ? 'whole disk' : 'delta'} its manifest says`,
        )
    }
  }
}

/** Where a rebuilt disk goes: `sr` given, there; else (or with originalSr) where the disk is. */
async function srFor(ctx: RestoreContext, disk: ChainDisk, old: VmDisk[]): Promise<string> {
  const replaced = old.find((d) => d.userdevice === disk.userdevice)
  const own = replaced && (ctx.config.sr === '' || ctx.config.originalSr)
  return own ? ctx.host.call<string>('VDI.get_SR', replaced.vdi) : ctx.target.ref
}

/** The VBD to make for each rebuilt disk: like the one it replaces, or a plain data disk. */
function slotsFor(disks: ChainDisk[], old: VmDisk[], created: Map<string, string>): VmDisk[] {
  return disks.map(
    (d) =>
      old.find((o) => o.userdevice === d.userdevice) ??
      ({
        vbd: '',
        vdi: created.get(d.userdevice)!,
        userdevice: d.userdevice,
        device: '',
        bootable: false,
        mode: 'RW',
        otherConfig: {},
        qosType: '',
        qosParams: {},
      } as unknown as VmDisk),
  )
}

/**
 * Stops the VM, swaps its disks for the rebuilt ones all or nothing (the journal says how far
 * it got), and starts it again if it ran, unless a failed undo left it lacking a disk.
 */
async function swapIn(
  ctx: RestoreContext,
  point: ChainPoint,
  at: {
    vm: string
    running: boolean
    old: VmDisk[]
    created: Map<string, string>
    journal: JournalRecord
    vtpm: string | undefined
  },
  flags: { swapped: boolean; settled: boolean },
): Promise<void> {
  const { vm, old, created, journal } = at
  const fresh = slotsFor(point.runs[0]!.manifest.disks, old, created)
  await whileHalted(
    ctx,
    { ref: vm, name: point.vmName, running: at.running },
    { ...stopOptions(ctx.config), why: 'could not be started again', startAgain: () => flags.settled },
    async () => {
      try {
        await swapDisks(ctx, { vm, name: point.vmName, old, fresh, vdiFor: created, journal })
      } catch (error) {
        if (error instanceof RollbackFailed) flags.settled = false
        throw error
      }
      flags.swapped = true
      if (at.vtpm !== undefined) await putBackVtpm(ctx, vm, point.vmName, at.vtpm)
    },
  )
}

/**
 * Rebuilds each disk of the point in a new VDI and swaps the VM's disks for them; a VM that no
 * longer exists, or a copy (restoreAs: copy), is made from the run's metadata instead.
 */
export async function restoreChain(ctx: RestoreContext, point: ChainPoint): Promise<RestoreOutcome> {
  if (ctx.config.restoreAs === 'copy') return rebuildVm(ctx, point, { copy: true })
  const vm = await findVm(
    ctx.host,
    { uuid: point.vmUuid, name: point.vmName },
    { matchByName: ctx.config.matchByName },
  )
  if (!vm) return rebuildVm(ctx, point, { copy: false })
  const state = await runningOrHalted(ctx.host, vm, point.vmName, 'restoring its disks')
  const old = await vmDisks(ctx.host, vm)
  const { disks } = point.runs[0]!.manifest
  const created = new Map<string, string>()
  // Written before anything changes: a run killed from here on is settled by the next one
  // (dpxen recover, or any hook), which removes what this one made and puts the VM back.
  const journal = await JournalRecord.open(ctx.config.backupDir, {
    kind: 'online',
    vmName: point.vmName,
    vm,
    wasRunning: state === 'Running',
    phase: 'importing',
    token: randomUUID(),
  })
  const flags = { swapped: false, settled: true }
  try {
    for (const disk of disks)
      await rebuildDisk(ctx, point, disk, await srFor(ctx, disk, old), created, journal)
    throwIfAborted(ctx.signal)
    const { vtpm } = await verifyMetadata(ctx.config.backupDir, point.runs.at(-1)!.manifest, ctx.signal)
    await swapIn(ctx, point, { vm, running: state === 'Running', old, created, journal, vtpm }, flags)
    const replaced = old.filter((d) => created.has(d.userdevice)).map((d) => d.vdi)
    await destroyUnusedVdis(ctx, replaced, point.vmName)
    const runs = point.runs.map((r) => r.manifest.run)
    return {
      summary: `${created.size} disk(s) rebuilt from run ${runs.at(-1)} (${runs.length === 1 ? 'a full' : `a full and ${runs.length - 1} incremental run(s)`})`,
    }
  } finally {
    if (!flags.swapped && flags.settled) await destroyUnusedVdis(ctx, [...created.values()], point.vmName)
    // A swap that could not be undone keeps its entry: the next run puts the old disks back.
    if (flags.settled) await journal.close()
  }
}
