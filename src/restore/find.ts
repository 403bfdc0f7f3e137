// Which files to restore: the XVAs of the mode's kind in backupDir, and the VM each belongs
// to. The kind (an online backup's snapshot, or an offline backup's whole VM) and the VM come
// from the file's manifest and from its ova.xml, never from its name: a VM called
// "web_Snapshot" backed up offline is an offline backup.
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { MODES, type Config, type Method } from '../config/schema.js'
import { readManifest, type Manifest } from '../staging/manifest.js'
import { OC_VM_NAME, OC_VM_UUID } from '../pool/tags.js'
import type { Checked } from '../xva/check.js'
import type { XvaSummary } from '../xva/verify.js'
import { verifyFile } from '../xva/verify-file.js'
import { DpxenError } from '../core/errors.js'

export interface RestoreItem {
  file: string
  /** The kind of backup: a snapshot's (online) or the whole VM's (offline). */
  kind: Method
  path: string
  /** The VM the backup is of. */
  vmName: string
  vmUuid: string
  manifest?: Manifest
  verified: Checked<XvaSummary>
}

/** The kind of backup a manifest says its file holds. */
function manifestKind(manifest: Manifest | undefined): Method | undefined {
  return manifest && manifest.mode in MODES ? MODES[manifest.mode].method : undefined
}

/**
 * The XVA files in backupDir that may hold the mode's kind of backup; those whose manifest says
 * they hold the other kind are listed apart, unread.
 */
export async function listFiles(config: Config): Promise<{ files: string[]; others: string[] }> {
  let names: string[]
  try {
    names = await fsp.readdir(config.backupDir)
  } catch {
    throw new DpxenError(
      'CONFIG_INVALID',
      `backupDir ${config.backupDir} does not exist (restore the files into it with Data Protector first)`,
    )
  }
  const files: string[] = []
  const others: string[] = []
  for (const name of names.filter((n) => n.endsWith('.xva')).sort()) {
    const kind = manifestKind(await readManifest(join(config.backupDir, name)))
    if (kind && kind !== config.method) others.push(name)
    else files.push(name)
  }
  return { files, others }
}

/**
 * Verifies a file end to end (layout, every checksum, and the manifest's size and XXH64) and
 * says which VM it holds. Throws XVA_INVALID for a damaged file.
 */
export async function examine(
  dir: string,
  file: string,
  signal: AbortSignal,
  onBytes?: (bytes: number) => void,
): Promise<RestoreItem> {
  const path = join(dir, file)
  const verified = await verifyFile(path, signal, onBytes)
  const manifest = await readManifest(path)
  if (manifest && (manifest.file.xxh64 !== verified.xxh64 || manifest.file.bytes !== verified.bytes)) {
    throw new DpxenError(
      'XVA_INVALID',
      `${file} does not match its manifest (size or XXH64 differ): the file is damaged`,
    )
  }
  // The VM the XVA itself says it holds: an online backup's snapshot carries the VM's uuid and
  // name in its other_config, an offline backup is the VM. A manifest that names another VM
  // was edited (or belongs to another file): it would send the disks to the wrong VM.
  const oc = verified.summary.vm.otherConfig
  const vmName = oc[OC_VM_NAME] ?? verified.summary.vm.name
  const vmUuid = oc[OC_VM_UUID] ?? verified.summary.vm.uuid
  if (manifest && (manifest.vm.uuid !== vmUuid || manifest.vm.name !== vmName)) {
    throw new DpxenError(
      'XVA_INVALID',
      `${file}: its manifest names VM ${manifest.vm.name} (${manifest.vm.uuid}) but the file holds ${vmName} (${vmUuid}): the manifest was changed or belongs to another file; restore refused`,
    )
  }
  // Without a manifest, ova.xml says: xapi exports a snapshot as a template, and dpxen's
  // snapshots carry the VM's uuid.
  const kind =
    manifestKind(manifest) ??
    (oc[OC_VM_UUID] !== undefined || verified.summary.vm.isTemplate ? 'snapshot' : 'shutdown')
  return { file, kind, path, vmName, vmUuid, ...(manifest ? { manifest } : {}), verified }
}
