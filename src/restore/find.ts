// Which files to restore: the XVAs of the mode's kind in backupDir (online: *_Snapshot.xva,
// offline: the others), and the VM each belongs to, read from its manifest or from ova.xml,
// not only from its name.
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import type { Config } from '../config/schema.js'
import { readManifest, type Manifest } from '../staging/manifest.js'
import { OC_VM_NAME, OC_VM_UUID } from '../pool/tags.js'
import type { StreamResult } from '../xva/pipe.js'
import { verifyFile } from '../xva/verify-file.js'
import { DpxenError } from '../core/errors.js'

export interface RestoreItem {
  file: string
  path: string
  /** The VM the backup is of. */
  vmName: string
  vmUuid: string
  manifest?: Manifest
  verified: StreamResult
}

export function isOnlineFile(name: string): boolean {
  return name.endsWith('_Snapshot.xva')
}

/** Lists the XVA files of the kind the mode restores, and says clearly what else is there. */
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
  const xvas = names.filter((n) => n.endsWith('.xva')).sort()
  const online = config.method === 'snapshot'
  return {
    files: xvas.filter((n) => isOnlineFile(n) === online),
    others: xvas.filter((n) => isOnlineFile(n) !== online),
  }
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
  return { file, path, vmName, vmUuid, ...(manifest ? { manifest } : {}), verified }
}
