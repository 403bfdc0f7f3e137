// Incremental online backup of one VM. A snapshot as for a full online backup; then its disks
// (deltas.ts): whole (a dynamic VHD) on the first run of a chain, or, against the disks of the
// VM's kept base, the blocks changed since (a differencing VHD, from the host's VHD export or,
// with cbt, read over NBD); and the VM's metadata. A chain manifest names the run, its parent and
// each file's hash. Only then is the new snapshot kept, as a pending
// base the post-exec confirms once Data Protector has the files (pool/base.ts). On any failure
// the new snapshot goes and the old base stays, so the next run computes its deltas against the
// last run whose files Data Protector kept. A base that vanished while its
// delta was being exported makes this run a full: a new chain.
import { crashPoint } from '../core/crash-points.js'
import { DpxenError, messageOf } from '../core/errors.js'
import { throwIfAborted } from '../core/signals.js'
import { VERSION } from '../core/version.js'
import { descendsFrom, dropBases, dropUnsettled, findBase, type Base } from '../pool/base.js'
import { vmDisks } from '../pool/disks.js'
import { makeSnapshot } from '../pool/snapshots.js'
import {
  chainNames,
  runNameAfter,
  writeChainManifest,
  type ChainDisk,
  type ChainManifest,
  type ChainMetadata,
} from '../staging/chain.js'
import { manifestName } from '../staging/manifest.js'
import { XvaVerifier } from '../xva/verify.js'
import { cbtForRun, keepRunAsBase } from './cbt.js'
import { DeltaRefused, exportChanges } from './deltas.js'
import { transferToFile } from './export.js'
import { deltaRefusal, snapshotRefusal, type VmPlan } from './select.js'
import {
  backupOnline,
  removeSnapshot,
  reserveSpace,
  type VmBackupContext,
  type VmBackupResult,
} from './vm.js'

/**
 * With followDataProtectorLevel, what the session's level (MODE) asks of this run: a Full (a new
 * chain), an Incremental (a delta against the VM's last run, whatever fullEvery says), or an
 * Incremental N (a delta against its last run of a lower level, as Data Protector's own restore
 * chain of that session holds: the last backup of a lower level and the session); undefined when
 * no level is given (fullEvery decides).
 */
type Asked = { kind: 'full'; why: string } | { kind: 'incremental' } | { kind: 'leveled'; n: number }

function levelAsks(ctx: VmBackupContext): Asked | undefined {
  const level = ctx.config.followDataProtectorLevel ? ctx.dataProtectorLevel?.trim() : undefined
  if (!level) return undefined
  if (/^full$/i.test(level)) return { kind: 'full', why: "Data Protector's session is a Full (MODE=full)" }
  if (/^incremental$/i.test(level)) return { kind: 'incremental' }
  const n = /^incremental([1-9])$/i.exec(level)?.[1]
  if (n) return { kind: 'leveled', n: Number(n) }
  return {
    kind: 'full',
    why: `Data Protector's backup level "${level.slice(0, 40)}" (MODE) is not one dpxen knows: exported whole`,
  }
}

/** Why this run starts a new chain, or undefined for an incremental run. */
function whyFull(
  ctx: VmBackupContext,
  plan: VmPlan,
  base: Base | undefined,
  asked: Asked | undefined,
  reverted: boolean,
): string | undefined {
  if (!base)
    return asked?.kind === 'leveled'
      ? `no base snapshot of a level below ${asked.n} on the host (Data Protector's Incremental ${asked.n} holds the changes since its last backup of a lower level)`
      : 'no base snapshot on the host (first run, or it was removed)'
  if (asked?.kind === 'full') return asked.why
  if (!asked && base.position + 1 >= ctx.config.fullEvery)
    return `the chain has ${base.position + 1} run(s) (fullEvery ${ctx.config.fullEvery})`
  const missing = plan.disks.filter((d) => !base.disks.has(d.userdevice)).map((d) => d.userdevice)
  if (missing.length) return `the base has no disk at position(s) ${missing.join(', ')}`
  // A chain's runs all hold the same disks at the same sizes: a disk detached, grown or
  // replaced since the base starts a new chain, or the chain could never be restored.
  const gone = [...base.disks.keys()].filter((p) => !plan.disks.some((d) => d.userdevice === p))
  if (gone.length) return `the disk(s) at position(s) ${gone.join(', ')} were removed since run ${base.run}`
  for (const d of plan.disks) {
    const was = base.sizes.get(d.userdevice)
    if (was !== d.virtualSize)
      return `disk ${d.userdevice} changed size since run ${base.run} (${was} to ${d.virtualSize} bytes)`
    if (base.of.get(d.userdevice) !== d.vdi)
      return `disk ${d.userdevice} is another disk than at run ${base.run} (replaced)`
  }
  // Last: a VM made again, or whose disks were replaced, has no such ancestry either.
  if (reverted) return `the VM was reverted to a snapshot taken before run ${base.run}`
  return undefined
}

/**
 * The Data Protector level the run's base is kept at, as Data Protector runs the session: a Full
 * 0, an Incremental 1, an Incremental N one above its base's level when that is lower (an
 * Incremental 3 after a Full and an Incremental 1 runs as an Incremental 2), N with no base.
 */
function runLevel(
  asked: Asked | undefined,
  delta: Base | undefined,
  full: boolean,
): { level: number; leveled: boolean } {
  if (asked?.kind === 'leveled')
    return { level: delta ? Math.min(asked.n, delta.level + 1) : asked.n, leveled: true }
  return { level: asked?.kind === 'full' || (!asked && full) ? 0 : 1, leveled: false }
}

/** The session line of a run: a full and why, or a delta against which run. */
function runLine(
  plan: VmPlan,
  full: string | undefined,
  base: Base | undefined,
  asked: Asked | undefined,
): string {
  if (full) return `dpxen: ${plan.name}: full run (${full})`
  const why =
    asked?.kind === 'incremental'
      ? " (Data Protector's session is an Incremental)"
      : asked?.kind === 'leveled'
        ? ` (Data Protector's session is an Incremental ${asked.n}: against its last run of a lower level)`
        : ''
  return `dpxen: ${plan.name}: incremental run ${base!.position + 1} of chain ${base!.chain}, against run ${base!.run}${why}`
}

/**
 * The VM's records as xapi exports them just after the snapshot (/export_metadata, without its
 * snapshots): VM, disks' and network cards' records, MACs, and the vTPM's contents. A restore
 * makes a lost VM (or a copy) again from them. The file is checked to be that VM's.
 */
async function exportMetadata(
  ctx: VmBackupContext,
  plan: VmPlan,
  names: ReturnType<typeof chainNames>,
): Promise<ChainMetadata> {
  ctx.onStatus?.('exporting the VM metadata')
  const { summary, bytes, xxh64 } = await transferToFile(ctx.host, ctx.log, {
    label: `${plan.name} metadata`,
    dir: ctx.config.backupDir,
    fileName: names.metadata,
    signal: ctx.signal,
    direct: false,
    path: '/export_metadata',
    query: { uuid: plan.uuid, export_snapshots: 'false' },
    verifier: new XvaVerifier({ metadataOnly: true }),
  }).catch((error: unknown) => {
    if (!(error instanceof DpxenError && error.code === 'XVA_INVALID')) throw error
    throw new DpxenError('EXPORT_FAILED', `the metadata of ${plan.name}: ${messageOf(error)}`, {
      cause: error,
    })
  })
  if (summary.vm.uuid !== plan.uuid)
    throw new DpxenError(
      'EXPORT_FAILED',
      `the metadata the host sent for ${plan.name} describes VM ${summary.vm.uuid}, not ${plan.uuid}`,
    )
  return { file: names.metadata, bytes, xxh64, vtpm: summary.vtpms.length > 0 }
}

/** What the run's chain manifest says: the run, its place in the chain, and each disk's file. */
function chainManifest(
  ctx: VmBackupContext,
  plan: VmPlan,
  r: {
    run: string
    started: Date
    base: Base | undefined
    parent: Base | undefined
    disks: ChainDisk[]
    vmMetadata: ChainMetadata
  },
): ChainManifest {
  return {
    format: 'dpxen-chain/1',
    dpxenVersion: VERSION,
    run: r.run,
    ...(r.parent ? { parentRun: r.parent.run } : {}),
    ...(!r.parent && r.base ? { after: r.base.run } : {}),
    chain: r.parent ? r.parent.chain : r.run,
    position: r.parent ? r.parent.position + 1 : 0,
    server: ctx.config.server,
    vm: { name: plan.name, uuid: plan.uuid, powerStateAtBackup: plan.powerState },
    created: r.started.toISOString(),
    ...(ctx.dataProtectorSession ? { dataProtectorSession: ctx.dataProtectorSession } : {}),
    disks: r.disks,
    vmMetadata: r.vmMetadata,
  }
}

/**
 * A VM whose storage cannot make VHD deltas (deltaRefusal), backed up whole as an online XVA at
 * every run, said each time; a base it kept from a chain goes, since nothing will use it.
 */
async function backupWhole(
  ctx: VmBackupContext,
  plan: VmPlan,
  fileName: string,
  why: string,
  when = 'this run and every run while the disk stays there',
): Promise<VmBackupResult> {
  ctx.log.info(`dpxen: ${plan.name}: ${why}: backed up whole as an XVA (as mode online), ${when}`)
  await ctx.intend?.([fileName, manifestName(fileName)])
  const result = await backupOnline(ctx, plan, fileName)
  if (await dropBases(ctx.host, plan.uuid, plan.name, ctx.log))
    ctx.log.info(`dpxen: ${plan.name}: removed its base snapshot: a whole backup needs none`)
  return result
}

export async function backupIncremental(
  ctx: VmBackupContext,
  plan: VmPlan,
  fileName: string,
): Promise<VmBackupResult> {
  const cannot = deltaRefusal(plan)
  if (cannot) return backupWhole(ctx, plan, fileName, cannot)
  try {
    return await backupChained(ctx, plan, fileName)
  } catch (error) {
    if (!(error instanceof DeltaRefused) || ctx.signal.aborted) throw error
    // Seen only now: this run's files and snapshot are gone, its base kept; backed up whole.
    return backupWhole(
      ctx,
      plan,
      fileName,
      `the host could not compute a delta of its disks (${error.reason}), which its records did not show`,
      'this run; the next run tries a new chain',
    )
  }
}

/** A run of the VM's chain: a full or the deltas since its base, with the VM's metadata. */
async function backupChained(ctx: VmBackupContext, plan: VmPlan, fileName: string): Promise<VmBackupResult> {
  const refusal = snapshotRefusal(plan)
  if (refusal) throw new DpxenError('SNAPSHOT_UNSUPPORTED', refusal)
  const release = await reserveSpace(ctx, plan)
  try {
    const started = new Date()
    await dropUnsettled(ctx.host, plan.uuid, plan.name, ctx.log)
    const asked = levelAsks(ctx)
    const base = await findBase(ctx.host, plan.uuid, asked?.kind === 'leveled' ? asked.n : undefined)
    // The run's name follows the newest run of the VM, whichever base a delta is against.
    const run = runNameAfter(started, (await findBase(ctx.host, plan.uuid))?.run)
    // A base kept as its disks alone has no VM record in the VM's ancestry: CBT's own chain
    // refuses a reverted VM's disks (list_changed_blocks: unrelated), and the run falls back.
    const reverted = base?.ref !== undefined && !(await descendsFrom(ctx.host, plan.ref, base.ref))
    const cbt = await cbtForRun(ctx, plan)
    const full =
      base?.metadataOnly && !cbt
        ? `the base keeps no data (changed block tracking) and this run cannot use changed block tracking`
        : whyFull(ctx, plan, base, asked, reverted)
    ctx.log.info(runLine(plan, full, base, asked))
    throwIfAborted(ctx.signal)
    ctx.onStatus?.('snapshotting')
    const snap = await makeSnapshot(ctx.host, plan.ref, plan.name, ctx.runId, ctx.log)
    let kept = false
    try {
      const names = chainNames(fileName.replace(/(_Snapshot)?\.xva$/, ''), run)
      const disks = await vmDisks(ctx.host, snap)
      await ctx.intend?.([...disks.map((d) => names.disk(d.userdevice)), names.metadata, names.manifest])
      const vmMetadata = await exportMetadata(ctx, plan, names)
      const changes = await exportChanges({ ctx, plan, disks, names }, full ? undefined : base, cbt)
      const { exported, parent } = changes
      const at = { run, started, base, parent, disks: exported.disks, vmMetadata }
      const manifest = chainManifest(ctx, plan, at)
      await writeChainManifest(ctx.config.backupDir, names.manifest, manifest)
      crashPoint(`keep the base of ${plan.name}`)
      const { chain, position } = manifest
      const info = {
        vmUuid: plan.uuid,
        vmName: plan.name,
        run,
        chain,
        position,
        runId: ctx.runId,
        ...runLevel(asked, parent, full !== undefined || parent === undefined),
      }
      await keepRunAsBase(ctx, plan, { snap, disks, info, cbt, nbdRead: changes.nbd })
      kept = true
      return {
        files: [...exported.disks.map((d) => d.file), names.metadata, names.manifest],
        written: `${names.manifest}, the VM's metadata and ${exported.disks.length} disk file(s)`,
        export: { bytes: exported.bytes, seconds: (Date.now() - started.getTime()) / 1000 },
      }
    } finally {
      if (!kept) await removeSnapshot(ctx, plan, snap)
    }
  } finally {
    release()
  }
}
