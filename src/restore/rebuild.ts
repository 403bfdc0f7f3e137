// A VM made again from its incremental chain: when it no longer exists, or as a copy
// (restoreAs: copy). Each disk is rebuilt in a new VDI as for any chain restore; then the run's
// VM metadata (xapi's /export_metadata, saved with every run) is imported over them
// (PUT /import_metadata, each of the original's disks mapped to its rebuilt VDI): the VM's own
// records, network cards on the same networks, and its vTPM with its contents. A VM that is
// gone keeps its uuid and MACs (restore=true, as an XVA restore keeps them); a copy gets new
// ones and is left halted. Journalled as an import: a run killed at any step leaves the next
// one the VM and the disks to remove, and nothing of the pool's was touched.
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { DpxenError, messageOf } from '../core/errors.js'
import { throwIfAborted } from '../core/signals.js'
import { destroyUnusedVdis, removeOurVm, vmDisks } from '../pool/disks.js'
import { JournalRecord } from '../pool/journal.js'
import { startVm } from '../pool/lifecycle.js'
import type { ChainManifest } from '../staging/chain.js'
import { importMetadata } from '../xapi/import.js'
import { verifyMetadataFile } from '../xva/verify-file.js'
import { rebuildDisk, type ChainPoint } from './chain-disk.js'
import type { RestoreContext, RestoreOutcome } from './common.js'
import { copyName, tagVm } from './copy.js'
import { checkSr } from './target.js'

/**
 * Why a chain's file could not be read, as the session line says it: a file Data Protector did
 * not put back is named as missing, with what to restore; an abort stays an abort.
 */
export function chainFileFault(file: string, run: string, error: unknown): DpxenError {
  if (error instanceof DpxenError && error.code === 'ABORTED') return error
  if ((error as NodeJS.ErrnoException).code === 'ENOENT')
    return new DpxenError(
      'XVA_INVALID',
      `${file} (run ${run}) is not in backupDir: restore that run's whole session with Data Protector (every file of the VM); nothing was restored`,
    )
  return new DpxenError('XVA_INVALID', `${file} (run ${run}): ${messageOf(error)}`)
}

/**
 * The point's metadata file, checked against its manifest and the VM it must describe; the
 * contents of the vTPM it holds, if any.
 */
export async function verifyMetadata(
  dir: string,
  manifest: ChainManifest,
  signal: AbortSignal,
): Promise<{ vtpm?: string }> {
  const meta = manifest.vmMetadata
  if (!meta) return {}
  let result
  try {
    result = await verifyMetadataFile(join(dir, meta.file), signal)
  } catch (error) {
    throw chainFileFault(meta.file, manifest.run, error)
  }
  if (result.bytes !== meta.bytes || result.xxh64 !== meta.xxh64)
    throw new DpxenError(
      'XVA_INVALID',
      `${meta.file} does not match its chain manifest (size or XXH64 differ): the file is damaged`,
    )
  if (result.summary.vm.uuid !== manifest.vm.uuid)
    throw new DpxenError(
      'XVA_INVALID',
      `${meta.file} describes VM ${result.summary.vm.uuid}, its chain manifest ${manifest.vm.uuid}: the files are not one run's`,
    )
  const [vtpm] = result.summary.vtpms
  return vtpm ? { vtpm: vtpm.contents } : {}
}

/** Why the point cannot make a VM, or undefined: its run must carry the VM's metadata. */
export function cannotRebuild(point: ChainPoint): string | undefined {
  const last = point.runs.at(-1)!.manifest
  if (!last.vmMetadata)
    return `run ${last.run} holds the disks only (made by a dpxen before 0.2, without the VM's metadata)`
  const unmapped = last.disks.filter((d) => !d.vmVdi).map((d) => d.userdevice)
  if (unmapped.length)
    return `run ${last.run} does not say which of the VM's disks are at position(s) ${unmapped.join(', ')}`
  return undefined
}

/** Refuses, before anything is made, a point that cannot make a VM. */
function assertRebuildable(point: ChainPoint, copy: boolean): void {
  const why = cannotRebuild(point)
  if (why)
    throw new DpxenError(
      'VM_FAILED',
      `${copy ? 'restoreAs: copy makes a new VM' : `VM ${point.vmName} no longer exists`}, but ${why}: the pool is unchanged; restore a later run, or an offline backup`,
    )
}

export async function rebuildVm(
  ctx: RestoreContext,
  point: ChainPoint,
  options: {
    copy: boolean
    /** other_config set on the VM and its disks before the journal lets it go (a health check's copy). */
    tags?: Record<string, string>
  },
): Promise<RestoreOutcome & { vm: string }> {
  const last = point.runs.at(-1)!.manifest
  assertRebuildable(point, options.copy)
  const name = options.copy
    ? copyName(ctx.config.copyName, { vmName: point.vmName, vmUuid: point.vmUuid, started: last.created })
    : point.vmName
  const disks = point.runs[0]!.manifest.disks
  const start = !options.copy && ctx.config.startAfterRestore && last.vm.powerStateAtBackup === 'Running'
  checkSr(
    ctx.view,
    ctx.target,
    disks.reduce((sum, d) => sum + d.virtualSize, 0),
  )
  const journal = await JournalRecord.open(ctx.config.backupDir, {
    kind: 'offline',
    vmName: name,
    vm: '',
    wasRunning: false,
    phase: 'importing',
    token: randomUUID(),
    // A run killed once the VM is made: the next one starts it (and only then).
    startNew: start,
  })
  const created = new Map<string, string>()
  let vm: string | undefined
  let kept = false
  try {
    for (const disk of disks) await rebuildDisk(ctx, point, disk, ctx.target.ref, created, journal)
    throwIfAborted(ctx.signal)
    vm = await importOver(ctx, last, created, { restore: !options.copy, journal })
    await checkMade(ctx, vm, created)
    if (options.copy) await ctx.host.call('VM.set_name_label', vm, name)
    await tagVm(ctx, vm, options.tags)
    throwIfAborted(ctx.signal)
    kept = true
    await journal.update({ phase: 'finishing' })
    if (start) await startVm(ctx, vm, name)
  } finally {
    if (!kept) {
      if (vm) await removeOurVm(ctx, vm, `the VM made from run ${last.run}`)
      await destroyUnusedVdis(ctx, [...created.values()], name)
    }
    await journal.close()
  }
  return {
    vm: vm!,
    summary: await outcome(ctx, point, { vm: vm!, name, copy: options.copy, start, disks: created.size }),
  }
}

/** The run's metadata imported over the rebuilt disks: the VM xapi made. */
async function importOver(
  ctx: RestoreContext,
  last: ChainManifest,
  created: Map<string, string>,
  options: { restore: boolean; journal: JournalRecord },
): Promise<string> {
  ctx.onStatus?.('making the VM from its metadata')
  const map = new Map<string, string>()
  for (const d of last.disks)
    map.set(d.vmVdi!, await ctx.host.call<string>('VDI.get_uuid', created.get(d.userdevice)!))
  const refs = await importMetadata(ctx.host, {
    file: join(ctx.config.backupDir, last.vmMetadata!.file),
    restore: options.restore,
    disks: map,
    signal: ctx.signal,
    onTask: (task) => options.journal.update({ importTask: task }),
    onImported: (made) => options.journal.update({ imported: made[0]! }),
  })
  return refs[0]!
}

/** The session's line for a VM made from its chain. */
async function outcome(
  ctx: RestoreContext,
  point: ChainPoint,
  made: { vm: string; name: string; copy: boolean; start: boolean; disks: number },
): Promise<string> {
  const last = point.runs.at(-1)!.manifest
  const uuid = await ctx.host.call<string>('VM.get_uuid', made.vm)
  const runs = point.runs.length
  const from = `run ${last.run} (${runs === 1 ? 'a full' : `a full and ${runs - 1} incremental run(s)`})`
  const vtpm = last.vmMetadata!.vtpm ? ', its vTPM' : ''
  return made.copy
    ? `made as a copy, "${made.name}" (uuid ${uuid}, new MAC addresses${vtpm}, halted), from ${from} on SR "${ctx.target.name}"; ${point.vmName} was not touched`
    : `made again from ${from}: it no longer existed; uuid and MAC addresses kept${vtpm}, ${made.disks} disk(s) on SR "${ctx.target.name}"${made.start ? ', started' : ', halted'}`
}

/** The VM xapi made holds each rebuilt disk at its position, and nothing else of ours is missing. */
async function checkMade(ctx: RestoreContext, vm: string, created: Map<string, string>): Promise<void> {
  const disks = await vmDisks(ctx.host, vm)
  for (const [position, vdi] of created)
    if (disks.find((d) => d.userdevice === position)?.vdi !== vdi)
      throw new DpxenError(
        'VM_FAILED',
        `the VM made from the metadata lacks its rebuilt disk at position ${position} (the import is incomplete)`,
      )
}
