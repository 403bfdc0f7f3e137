// Incremental runs with changed block tracking (`cbt: true`, with `incremental`). CBT is enabled
// on the VM's disks (said once); a delta run asks xapi which 64 KiB blocks changed between the
// base's disk and the new snapshot's (VDI.list_changed_blocks), reads the 2 MiB blocks holding
// them over NBD from the new snapshot (VDI.get_nbd_info, several connections at once) and writes
// them as the same differencing VHD an export_raw_vdi delta is, so restores do not change. The
// new base then keeps no data (pool/base.ts keepAsCbtBase). What makes CBT unusable for a run is
// thrown as CbtUnusable, with the reason in words; incremental.ts falls back and says so, never
// in silence and never to a wrong delta.
import { DpxenError, XapiError, isXapiError } from '../core/errors.js'
import { throwIfAborted } from '../core/signals.js'
import { keepAsBase, keepAsCbtBase } from '../pool/base.js'
import { exists } from '../pool/disks.js'
import type { VmDisk } from '../pool/disks.js'
import { chainDisk, type ChainDisk } from '../staging/chain.js'
import { NbdConnection, readAhead, type NbdTarget } from '../xapi/nbd.js'
import { READ_SIZE } from '../xapi/raw-get.js'
import { CheckedIntake } from '../xva/intake.js'
import { VhdVerifier } from '../xva/vhd.js'
import { blocksOfBitmap, VHD_BLOCK, writeVhd } from '../xva/vhd-write.js'
import { intoFile } from './export.js'
import type { VmPlan } from './select.js'
import type { VmBackupContext } from './vm.js'

/** Why this run cannot read the VM's changes with CBT; `nbd` when only NBD is missing. */
export class CbtUnusable extends DpxenError {
  constructor(
    readonly reason: string,
    readonly nbd = false,
    cause?: unknown,
  ) {
    super('EXPORT_FAILED', reason, { cause })
  }
}

/** How to give a network the NBD purpose, for the lines that say it is missing. */
export const NBD_HOW =
  'give the storage network the nbd purpose (xe network-param-add uuid=<network> param-name=purpose param-key=nbd) and open TCP port 10809 of every host to this client'

/**
 * Turns CBT on where it is off (said once, in one line); a refusal (no licence, a disk reset on
 * boot) is the reason this run keeps a base with data, undefined when every disk tracks.
 */
export async function enableCbt(ctx: VmBackupContext, plan: VmPlan): Promise<CbtUnusable | undefined> {
  const enabled: string[] = []
  for (const disk of plan.disks) {
    if (await ctx.host.call<boolean>('VDI.get_cbt_enabled', disk.vdi)) continue
    try {
      await ctx.host.call('VDI.enable_cbt', disk.vdi)
      enabled.push(disk.userdevice)
    } catch (error) {
      if (!(error instanceof XapiError)) throw error
      return new CbtUnusable(
        `changed block tracking cannot be enabled on disk ${disk.userdevice} (${[error.xapiCode, ...error.params].join(' ')})`,
        false,
        error,
      )
    }
  }
  if (enabled.length)
    ctx.log.info(
      `dpxen: ${plan.name}: changed block tracking enabled on disk(s) ${enabled.join(', ')}: from the next run on, only the blocks changed are read, over NBD`,
    )
  return undefined
}

/** Whether changed block tracking covers every one of the disks. */
export async function tracksAll(ctx: VmBackupContext, disks: VmDisk[]): Promise<boolean> {
  for (const disk of disks) if (!(await ctx.host.call<boolean>('VDI.get_cbt_enabled', disk.vdi))) return false
  return true
}

/** Where the host serves the disk over NBD: TLS to the host's certificate for purpose nbd. */
export async function nbdTargets(ctx: VmBackupContext, vdi: string): Promise<NbdTarget[]> {
  const infos = await ctx.host.call<{ exportname: string; address: string; port: string; cert: string }[]>(
    'VDI.get_nbd_info',
    vdi,
  )
  const networks = await ctx.host.call<Record<string, Record<string, unknown>>>('network.get_all_records')
  const secure = Object.values(networks).some((n) => (n.purpose as string[] | undefined)?.includes('nbd'))
  return infos.map((i) => ({
    address: i.address,
    port: Number(i.port),
    exportName: i.exportname,
    ...(secure ? { cert: i.cert } : {}),
  }))
}

/** The blocks changed between the base's disk and the snapshot's, as list_changed_blocks says. */
async function changedBlocks(
  ctx: VmBackupContext,
  disk: VmDisk,
  baseVdi: string,
  size: number,
): Promise<number[]> {
  if (!(await ctx.host.call<boolean>('VDI.get_cbt_enabled', disk.vdi)))
    throw new CbtUnusable(
      `changed block tracking is off on disk ${disk.userdevice} (turned off, or reset by a storage migration)`,
    )
  try {
    const bitmap = await ctx.host.call<string>('VDI.list_changed_blocks', baseVdi, disk.vdi)
    return blocksOfBitmap(Buffer.from(bitmap, 'base64'), size)
  } catch (error) {
    // A base deleted during the run is no CBT failure: the run goes on as a new chain, as with VHD deltas.
    if (!isXapiError(error) || !(await exists(ctx.host, 'VDI', baseVdi))) throw error
    throw new CbtUnusable(
      `changed block tracking cannot compare disk ${disk.userdevice} with the base (${[error.xapiCode, ...error.params.filter((p) => p !== '')].join(' ')}): reset by a storage migration, or turned off and on again`,
      false,
      error,
    )
  }
}

/** Opens `count` connections to the first target that answers. */
async function connect(ctx: VmBackupContext, targets: NbdTarget[], count: number): Promise<NbdConnection[]> {
  let last: unknown
  for (const target of targets) {
    const opened: NbdConnection[] = []
    try {
      for (let i = 0; i < count; i++)
        opened.push(await NbdConnection.open(target, { idleMs: ctx.config.stallTimeout, signal: ctx.signal }))
      return opened
    } catch (error) {
      await Promise.all(opened.map((c) => c.close()))
      if (ctx.signal.aborted) throw error
      last = error
    }
  }
  throw new CbtUnusable(
    `no host serving the disk over NBD could be reached (${last instanceof Error ? last.message : String(last)}): ${NBD_HOW}`,
    true,
    last,
  )
}

/**
 * One disk's delta of a CBT run: the changed blocks read over NBD from the new snapshot's disk
 * into `<fileName>`, a differencing VHD whose parent is the base's disk.
 */
export async function exportCbtDelta(
  ctx: VmBackupContext,
  plan: VmPlan,
  disk: VmDisk,
  baseVdi: string,
  file: string,
  where: Pick<ChainDisk, 'srName' | 'vmVdi'>,
  onBytes: (bytes: number) => void,
): Promise<ChainDisk> {
  const size = Number(await ctx.host.call<string>('VDI.get_virtual_size', disk.vdi))
  const blocks = await changedBlocks(ctx, disk, baseVdi, size)
  const targets = await nbdTargets(ctx, disk.vdi)
  if (!targets.length) throw new CbtUnusable(`no network of the pool has the nbd purpose: ${NBD_HOW}`, true)
  throwIfAborted(ctx.signal)
  const connections = await connect(ctx, targets, ctx.config.nbdConnections)
  const uuid = await ctx.host.call<string>('VDI.get_uuid', disk.vdi)
  const parentUuid = await ctx.host.call<string>('VDI.get_uuid', baseVdi)
  try {
    const read = readAhead(connections, blocks, { blockSize: VHD_BLOCK, size, signal: ctx.signal })
    let done = 0
    const result = await intoFile(
      ctx.log,
      {
        label: `${plan.name} disk ${disk.userdevice}`,
        dir: ctx.config.backupDir,
        fileName: file,
        direct: ctx.config.directIo,
      },
      async (open) => {
        const sink = await open()
        return writeVhd(
          { size, uuid, parentUuid, blocks },
          (wake) => new CheckedIntake(sink, new VhdVerifier(), { maxPiece: READ_SIZE, wake }),
          async (block, into) => {
            await read(block, into)
            onBytes((done += VHD_BLOCK))
          },
          { signal: ctx.signal, maxPiece: READ_SIZE },
        )
      },
    )
    return chainDisk(disk.userdevice, file, result, { snapshotVdi: uuid, baseVdi: parentUuid, ...where })
  } finally {
    await Promise.all(connections.map((c) => c.close()))
  }
}

/** Whether this run uses changed block tracking: configured, and turned on (else said why). */
export async function cbtForRun(ctx: VmBackupContext, plan: VmPlan): Promise<boolean> {
  if (!ctx.config.cbt) return false
  const refusal = await enableCbt(ctx, plan)
  if (refusal)
    ctx.log.info(
      `dpxen: ${plan.name}: warning: ${refusal.reason}: this run keeps a base snapshot with its data, as without cbt`,
    )
  return refusal === undefined
}

/**
 * The run's snapshot kept as the next base: without data (cbt) only when every disk of the
 * snapshot tracks (CBT reset under the snapshot leaves disks that would lose their data for
 * nothing) and NBD can read the next run; else with its data.
 */
export async function keepRunAsBase(
  ctx: VmBackupContext,
  plan: VmPlan,
  r: {
    snap: string
    disks: VmDisk[]
    info: Parameters<typeof keepAsBase>[2]
    cbt: boolean
    nbdRead: boolean
  },
): Promise<void> {
  const metadataOnly =
    r.cbt && (await tracksAll(ctx, r.disks)) && (await nbdReady(ctx, plan, r.disks, r.nbdRead))
  if (metadataOnly) await keepAsCbtBase(ctx.host, r.snap, r.info)
  else await keepAsBase(ctx.host, r.snap, r.info)
}

/**
 * Whether the next run can read over NBD, so the new base may keep no data: a run that just read
 * over NBD says so; else the pool is asked. When it cannot, the base keeps its data, said in a line.
 */
async function nbdReady(
  ctx: VmBackupContext,
  plan: VmPlan,
  disks: VmDisk[],
  readThisRun: boolean,
): Promise<boolean> {
  const ready = readThisRun && disks.length > 0 && (await nbdTargets(ctx, disks[0]!.vdi)).length > 0
  if (!ready)
    ctx.log.info(
      `dpxen: ${plan.name}: warning: no network of the pool has the nbd purpose: the base keeps its data on the SR until one has (${NBD_HOW})`,
    )
  return ready
}
