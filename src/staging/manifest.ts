// The manifest beside each XVA: what was backed up, from where, in which state, and the file's
// size and XXH64, so a restore can check the file and put each disk back where it was.
import { existsSync } from 'node:fs'
import type { Mode } from '../config/schema.js'
import { writeStagingFile } from './folder.js'
import { MANIFEST_SUFFIX } from './names.js'
import { DpxenError } from '../core/errors.js'
import { MANIFEST_CAP, readSmallText, smallFileProblem } from '../core/small-file.js'

export interface Manifest {
  format: 'dpxen-manifest/1'
  dpxenVersion: string
  runId: string
  /** Data Protector's session (SESSIONID) that ran the backup, when one did. */
  dataProtectorSession?: string
  mode: Mode
  server: string
  vm: { name: string; uuid: string; powerStateAtBackup: string }
  disks: {
    userdevice: string
    device: string
    bootable: boolean
    mode: string
    virtualSize: number
    srName: string
    srUuid: string
  }[]
  vifs: { device: string; mac: string; network: string }[]
  file: {
    name: string
    bytes: number
    xxh64: string
    compression: string
    checksum: string
    /** Whether every chunk's checksum was compared while the export streamed (verifyExport). */
    checksumsVerified: boolean
    tarBytes: number
  }
  xapiVersion: string
  started: string
  finished: string
  seconds: number
}

export function manifestName(xvaName: string): string {
  return xvaName + MANIFEST_SUFFIX
}

/** Writes the manifest atomically, readable by the owner only. */
export async function writeManifest(dir: string, manifest: Manifest): Promise<string> {
  const name = manifestName(manifest.file.name)
  await writeStagingFile(dir, name, JSON.stringify(manifest, null, 2))
  return name
}

/**
 * The manifest file `file`; throws XVA_INVALID saying what is wrong with it (unreadable, too
 * large, not JSON, not ours), never quoting it.
 */
export async function loadManifest(file: string): Promise<Manifest> {
  let text: string
  try {
    text = await readSmallText(file, MANIFEST_CAP)
  } catch (error) {
    throw new DpxenError(
      'XVA_INVALID',
      `${file}: cannot be read as a manifest (${smallFileProblem(error, MANIFEST_CAP)})`,
    )
  }
  try {
    const manifest = JSON.parse(text) as Manifest
    if (manifest?.format === 'dpxen-manifest/1') return manifest
  } catch {
    // said below, without the parser's words: they quote the file
  }
  throw new DpxenError('XVA_INVALID', `${file}: is not a dpxen manifest (damaged or replaced)`)
}

/** The manifest beside the XVA at `path`, or undefined when it is missing or not one of ours. */
export async function readManifest(path: string): Promise<Manifest | undefined> {
  const file = manifestName(path)
  if (!existsSync(file)) return undefined
  return loadManifest(file).catch(() => undefined)
}
