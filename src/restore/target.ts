// Where restored disks go: `sr` by name or uuid, else the pool's default SR; optionally each
// disk's own SR from the backup. The SR must exist, accept new disks, and have room.
import type { Config } from '../config/schema.js'
import { DpxenError } from '../core/errors.js'
import { formatBytes } from '../core/format.js'
import type { PoolView } from '../pool/view.js'

type Rec = Record<string, unknown>

export interface TargetSr {
  ref: string
  name: string
  uuid: string
}

function describe(ref: string, sr: Rec): TargetSr {
  return { ref, name: String(sr.name_label), uuid: String(sr.uuid) }
}

/**
 * The SR named by `sr` (name or uuid), or the pool's default SR when `sr` is empty. `key` is the
 * configuration key that named it (healthCheckSr for a health check's copy), for the messages.
 */
export function resolveSr(
  view: PoolView,
  config: Pick<Config, 'sr' | 'source'>,
  key: 'sr' | 'healthCheckSr' = 'sr',
): TargetSr {
  const wanted = config.sr.trim()
  if (wanted === '') {
    const ref = String(view.pool.default_SR ?? 'OpaqueRef:NULL')
    const sr = view.srs.get(ref)
    if (!sr) {
      throw new DpxenError(
        'CONFIG_INVALID',
        `the pool has no default SR: set ${key} in ${config.source} to the SR to restore into`,
      )
    }
    return describe(ref, sr)
  }
  const matches = [...view.srs.entries()].filter(([, sr]) => sr.uuid === wanted || sr.name_label === wanted)
  if (matches.length === 0) {
    const names = [...view.srs.values()]
      .filter((sr) => sr.content_type !== 'iso')
      .map((sr) => `"${String(sr.name_label)}"`)
    throw new DpxenError(
      'CONFIG_INVALID',
      `${key}: no SR is named "${wanted}" (the pool has ${names.join(', ')}); fix ${key} in ${config.source}`,
    )
  }
  if (matches.length > 1)
    throw new DpxenError(
      'CONFIG_INVALID',
      `${key}: ${matches.length} SRs are named "${wanted}"; give its uuid in ${config.source}`,
    )
  return describe(matches[0]![0], matches[0]![1])
}

/** The SR of the backup's disk, when originalSr is set and that SR still exists. */
export function originalSr(view: PoolView, srUuid: string | undefined): TargetSr | undefined {
  if (!srUuid) return undefined
  const found = [...view.srs.entries()].find(([, sr]) => sr.uuid === srUuid)
  return found ? describe(found[0], found[1]) : undefined
}

/** Checks that the SR accepts new disks and has room for `bytes`; throws a one-line reason. */
export function checkSr(view: PoolView, target: TargetSr, bytes: number): void {
  const sr = view.srs.get(target.ref)!
  const ops = (sr.allowed_operations as string[]) ?? []
  if (sr.content_type === 'iso' || !ops.includes('vdi_create')) {
    throw new DpxenError(
      'VM_FAILED',
      `SR "${target.name}" (type ${String(sr.type)}) cannot hold restored disks; set sr to another SR`,
    )
  }
  const free = Number(sr.physical_size) - Number(sr.physical_utilisation)
  if (bytes > free) {
    throw new DpxenError(
      'NO_SPACE',
      `SR "${target.name}" has ${formatBytes(free)} free, the restore needs ${formatBytes(bytes)}; free space there or set sr to another SR`,
    )
  }
}
