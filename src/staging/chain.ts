// Incremental backups' files: per VM and run, one VHD per disk and a chain manifest naming the
// run, its parent run, and each disk's file, base and content hash, so that a restore can prove
// a chain complete and in order. Names carry the run, so Data Protector keeps every run's files
// apart forever: <server>_<vm>_<run>_<disk>.vhd and <server>_<vm>_<run>.chain.json.
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { writeStagingFile } from './folder.js'
import { CHAIN_SUFFIX, METADATA_SUFFIX, VHD_SUFFIX } from './names.js'
import { MANIFEST_CAP, readSmallText } from '../core/small-file.js'

export interface ChainDisk {
  /** The disk's position on the VM (VBD userdevice). */
  userdevice: string
  file: string
  bytes: number
  xxh64: string
  virtualSize: number
  /** Blocks the VHD holds. */
  blocks: number
  /** The snapshot disk this run exported, and the one it was compared with (none for a full). */
  snapshotVdi: string
  baseVdi?: string
  /** Where the disk was (restores choose their SR from it when none is given). */
  srName: string
  /** The VM's own disk at this position, as the run's VM metadata names it (its VBD's VDI). */
  vmVdi?: string
}

/** A disk's entry in a chain manifest: its checked VHD file, and the disks it came from. */
export function chainDisk(
  userdevice: string,
  file: string,
  vhd: { bytes: number; xxh64: string; summary: { virtualSize: number; blocks: number } },
  from: Pick<ChainDisk, 'snapshotVdi' | 'baseVdi' | 'srName' | 'vmVdi'>,
): ChainDisk {
  return {
    userdevice,
    file,
    bytes: vhd.bytes,
    xxh64: vhd.xxh64,
    virtualSize: vhd.summary.virtualSize,
    blocks: vhd.summary.blocks,
    ...from,
  }
}

/** The VM's records at the run (xapi's /export_metadata), from which a lost VM is made again. */
export interface ChainMetadata {
  file: string
  bytes: number
  xxh64: string
  /** Whether the VM had a vTPM, whose contents the file then holds. */
  vtpm: boolean
}

export interface ChainManifest {
  format: 'dpxen-chain/1'
  dpxenVersion?: string
  /** This run: a compact UTC time, unique per VM. */
  run: string
  /** The run this one holds the changes since; absent for a full. */
  parentRun?: string
  /**
   * For a full that ended an earlier chain: that chain's last run (the base it replaced), so a
   * restore orders the two chains by the chains themselves, never by the clock.
   */
  after?: string
  /** The full this chain starts with. */
  chain: string
  /** 0 for the full, then 1, 2, … */
  position: number
  server: string
  vm: { name: string; uuid: string; powerStateAtBackup: string }
  created: string
  dataProtectorSession?: string
  disks: ChainDisk[]
  /** Absent in runs made before dpxen 0.2: those restore onto an existing VM only. */
  vmMetadata?: ChainMetadata
}

/** A run's name: its start as a compact UTC time (sortable, safe in file names). */
export function runName(started: Date): string {
  return started
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.(\d+)Z$/, '$1Z')
}

/**
 * This run's name: its start, or, when the clock says no later than `previous` (a clock stepped
 * back, a frozen or coarse one), the millisecond after `previous`: unique and later than the
 * run it follows, whatever the clock does.
 */
export function runNameAfter(started: Date, previous: string | undefined): string {
  const run = runName(started)
  if (previous === undefined || run > previous) return run
  const at = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z$/.exec(previous)
  if (!at) return `${previous}-1`
  const [, y, mo, d, h, mi, se, ms] = at
  return runName(new Date(Date.parse(`${y}-${mo}-${d}T${h}:${mi}:${se}.${ms}Z`) + 1))
}

/** `<base>_<run>.chain.json` and `<base>_<run>_<disk>.vhd`, from the XVA name's base. */
export function chainNames(
  base: string,
  run: string,
): { manifest: string; metadata: string; disk: (userdevice: string) => string } {
  return {
    manifest: `${base}_${run}${CHAIN_SUFFIX}`,
    metadata: `${base}_${run}${METADATA_SUFFIX}`,
    disk: (userdevice) => `${base}_${run}_${userdevice}${VHD_SUFFIX}`,
  }
}

export async function writeChainManifest(dir: string, name: string, manifest: ChainManifest): Promise<void> {
  await writeStagingFile(dir, name, JSON.stringify(manifest, null, 2))
}

/** Every chain manifest in `dir` that reads as one (others are reported by the caller). */
export async function readChainManifests(dir: string): Promise<{ name: string; manifest: ChainManifest }[]> {
  const out: { name: string; manifest: ChainManifest }[] = []
  for (const name of (await fsp.readdir(dir)).filter((n) => n.endsWith(CHAIN_SUFFIX)).sort()) {
    try {
      // A FIFO, a device or a huge file in the folder is passed over, never waited on or read whole.
      const manifest = JSON.parse(await readSmallText(join(dir, name), MANIFEST_CAP)) as ChainManifest
      if (manifest.format === 'dpxen-chain/1' && Array.isArray(manifest.disks)) out.push({ name, manifest })
    } catch {
      // not a chain manifest: the restore names it as a file it cannot use
    }
  }
  return out
}
