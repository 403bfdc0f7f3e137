// The manifest of one VM's backup, from its plan and the export's result.
import type { Mode } from '../config/schema.js'
import { VERSION } from '../core/version.js'
import type { Manifest } from '../staging/manifest.js'
import type { ExportResult } from './export.js'
import type { VmPlan } from './select.js'

export function buildManifest(args: {
  runId: string
  dataProtectorSession?: string
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
    ...(args.dataProtectorSession ? { dataProtectorSession: args.dataProtectorSession } : {}),
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
