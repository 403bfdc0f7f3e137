// The disks of a chain run: each exported whole (a dynamic VHD, the first run of a chain), or as
// the changes since the base's disk (a differencing VHD) from the host's VHD export, or, with
// changed block tracking, from the changed blocks read over NBD (cbt.ts). The fallbacks between
// them are here: CBT unusable (said, then the VHD export or a new chain), the base gone under the
// export (a new chain), xapi refusing a delta its records did not show (DeltaRefused: the caller
// backs the VM up whole). Every file is checked as it streams and named only when whole.
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { DpxenError, messageOf, XapiError } from '../core/errors.js'
import { throwIfAborted } from '../core/signals.js'
import type { Base } from '../pool/base.js'
import { exists, type VmDisk } from '../pool/disks.js'
import { chainDisk, type chainNames, type ChainDisk } from '../staging/chain.js'
import { VhdVerifier } from '../xva/vhd.js'
import { CbtUnusable, exportCbtDelta } from './cbt.js'
import { transferToFile } from './export.js'
import type { VmPlan } from './select.js'
import type { VmBackupContext } from './vm.js'

/** The run's snapshot disks, and the file names the run gives them. */
export interface DiskRun {
  ctx: VmBackupContext
  plan: VmPlan
  disks: VmDisk[]
  names: ReturnType<typeof chainNames>
}

interface Exported {
  disks: ChainDisk[]
  bytes: number
}

/**
 * Exports each disk of the snapshot: whole, or the changes since `parent`'s disk (with `cbt`,
 * read over NBD from the blocks changed block tracking names; else the host's VHD delta).
 */
async function exportDisks(run: DiskRun, parent: Base | undefined, cbt: boolean): Promise<Exported> {
  const { ctx, plan, disks, names } = run
  const out: Exported = { disks: [], bytes: 0 }
  for (const disk of disks) {
    throwIfAborted(ctx.signal)
    ctx.onStatus?.(`exporting disk ${disk.userdevice}`)
    const baseVdi = parent?.disks.get(disk.userdevice)
    const own = plan.disks.find((d) => d.userdevice === disk.userdevice)
    const file = names.disk(disk.userdevice)
    const where = {
      srName: own?.srName ?? '',
      ...(own ? { vmVdi: await ctx.host.call<string>('VDI.get_uuid', own.vdi) } : {}),
    }
    if (cbt && baseVdi) {
      ctx.onStatus?.(`reading the changed blocks of disk ${disk.userdevice} over NBD`)
      const delta = await exportCbtDelta(ctx, plan, disk, baseVdi, file, where, (n) =>
        ctx.onBytes?.(out.bytes + n),
      )
      out.bytes += delta.bytes
      out.disks.push(delta)
      continue
    }
    const result = await transferToFile(ctx.host, ctx.log, {
      label: `${plan.name} disk ${disk.userdevice}`,
      dir: ctx.config.backupDir,
      fileName: file,
      signal: ctx.signal,
      direct: ctx.config.directIo,
      path: '/export_raw_vdi',
      query: { vdi: disk.vdi, format: 'vhd', ...(baseVdi ? { base: baseVdi } : {}) },
      verifier: new VhdVerifier(),
      onBytes: (n) => ctx.onBytes?.(out.bytes + n),
    })
    if (result.summary.type !== (baseVdi ? 4 : 3))
      throw new DpxenError(
        'EXPORT_FAILED',
        `disk ${disk.userdevice} of ${plan.name}: the host sent a ${result.summary.type === 3 ? 'whole disk' : 'delta'} where a ${baseVdi ? 'delta' : 'whole disk'} was asked for`,
      )
    out.bytes += result.bytes
    out.disks.push(
      chainDisk(disk.userdevice, file, result, {
        snapshotVdi: await ctx.host.call<string>('VDI.get_uuid', disk.vdi),
        ...(baseVdi ? { baseVdi: await ctx.host.call<string>('VDI.get_uuid', baseVdi) } : {}),
        ...where,
      }),
    )
  }
  return out
}

/** The deltas, or, when the base vanished under them, a full: a new chain. */
export async function exportChanges(
  run: DiskRun,
  parent: Base | undefined,
  cbt: boolean,
): Promise<{ exported: Exported; parent: Base | undefined; nbd: boolean }> {
  const { ctx, plan, disks, names } = run
  const removeFiles = async (): Promise<void> => {
    for (const disk of disks)
      await fsp.rm(join(ctx.config.backupDir, names.disk(disk.userdevice)), { force: true })
  }
  try {
    return { exported: await exportDisks(run, parent, cbt), parent, nbd: true }
  } catch (error) {
    if (error instanceof CbtUnusable && parent && !ctx.signal.aborted) {
      await removeFiles()
      // A base with its data still gives a VHD delta; one kept as tracking metadata alone does not.
      if (!parent.metadataOnly) {
        ctx.log.info(
          `dpxen: ${plan.name}: warning: ${error.reason}: this run's deltas come from the host's VHD export instead`,
        )
        return {
          exported: await exportDisks(run, parent, false),
          parent,
          nbd: !error.nbd,
        }
      }
      ctx.log.info(`dpxen: ${plan.name}: warning: ${error.reason}: exporting whole disks: a new chain`)
      return {
        exported: await exportDisks(run, undefined, false),
        parent: undefined,
        nbd: !error.nbd,
      }
    }
    const refused = parent && !ctx.signal.aborted ? deltaRefusedBy(error) : undefined
    if (refused) {
      for (const name of [...disks.map((d) => names.disk(d.userdevice)), names.metadata])
        await fsp.rm(join(ctx.config.backupDir, name), { force: true })
      throw new DeltaRefused(refused, error)
    }
    if (!parent || ctx.signal.aborted || (await baseExists(ctx, parent))) throw error
    ctx.log.info(
      `dpxen: ${plan.name}: the base snapshot disappeared during the run (${messageOf(error)}); exporting whole disks: a new chain`,
    )
    await removeFiles()
    return {
      exported: await exportDisks(run, undefined, false),
      parent: undefined,
      nbd: true,
    }
  }
}

/** Whether the base is still on the host: its snapshot VM, or (kept as disks alone) its disks. */
async function baseExists(ctx: VmBackupContext, base: Base): Promise<boolean> {
  if (base.ref) return exists(ctx.host, 'VM', base.ref)
  for (const vdi of base.disks.values()) if (!(await exists(ctx.host, 'VDI', vdi))) return false
  return true
}

/** xapi refused to compute a delta of a disk, for a reason its records did not show. */
export class DeltaRefused extends DpxenError {
  constructor(
    readonly reason: string,
    cause: unknown,
  ) {
    super('EXPORT_FAILED', reason, { cause })
  }
}

/**
 * What xapi says when it cannot make a VHD delta of the disk (after the 200): vhd-tool's "Cannot
 * compute differences on non-VHD images", or VDI_TOO_LARGE; undefined for any other failure.
 */
function deltaRefusedBy(error: unknown): string | undefined {
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    if (!(e instanceof XapiError)) continue
    if (e.xapiCode === 'VDI_TOO_LARGE' || e.params.some((p) => /cannot compute differences/i.test(p)))
      return [e.xapiCode, ...e.params.filter((p) => p !== '')].join(' ')
  }
  return undefined
}
