// The manifest beside each XVA: what was backed up, from where, in which state, and the file's
// size and XXH64, so a restore can check the file and put each disk back where it was.
import type { Mode } from '../config/schema.js'
import { VERSION } from '../version.js'
import type { ExportResult } from './export.js'
import type { VmPlan } from './select.js'
import { writeStagingFile } from './staging.js'
import { MANIFEST_SUFFIX } from './tags.js'

export interface Manifest {
  format: 'dpxen-manifest/1'
  dpxenVersion: string
  runId: string
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

export function buildManifest(args: {
  runId: string
  mode: Mode
  server: string
  plan: VmPlan
  result: ExportResult
  fileName: string
  started: Date
}): Manifest {
  const { plan, result } = args
  return {
    format: 'dpxen-manifest/1',
    dpxenVersion: VERSION,
    runId: args.runId,
    mode: args.mode,
    server: args.server,
    vm: { name: plan.name, uuid: plan.uuid, powerStateAtBackup: plan.powerState },
    disks: plan.disks.map((d) => ({
      userdevice: d.userdevice,
      device: d.device,
      bootable: d.bootable,
      mode: d.mode,
      virtualSize: d.virtualSize,
      srName: d.srName,
      srUuid: d.srUuid,
    })),
    vifs: plan.vifs,
    file: {
      name: args.fileName,
      bytes: result.bytes,
      xxh64: result.xxh64,
      compression: result.compression,
      checksum: result.summary.checksum,
      checksumsVerified: result.checksumsVerified,
      tarBytes: result.summary.tarBytes,
    },
    xapiVersion: result.summary.xapiVersion,
    started: args.started.toISOString(),
    finished: new Date().toISOString(),
    seconds: Number(result.seconds.toFixed(3)),
  }
}

/** Writes the manifest atomically, readable by the owner only. */
export async function writeManifest(dir: string, manifest: Manifest): Promise<string> {
  const name = manifestName(manifest.file.name)
  await writeStagingFile(dir, name, JSON.stringify(manifest, null, 2))
  return name
}
