// One disk of an incremental point rebuilt in a new VDI: the full written onto it, then each
// delta in order (import_raw_vdi?format=vhd writes the blocks a VHD holds and leaves the others).
// Used by a restore onto the existing VM (chain.ts) and by one that makes the VM (rebuild.ts).
import { join } from 'node:path'
import { throwIfAborted } from '../core/signals.js'
import type { JournalRecord } from '../pool/journal.js'
import { OC_RESTORE_TOKEN } from '../pool/tags.js'
import type { ChainDisk, ChainManifest } from '../staging/chain.js'
import { importVhd } from '../xapi/import.js'
import type { RestoreContext } from './common.js'

/** A VM's point: its newest run present and the chain down to its full. */
export interface ChainPoint {
  vmName: string
  vmUuid: string
  /** Full first, the point restored last. */
  runs: { name: string; manifest: ChainManifest }[]
}

/**
 * Rebuilds one disk of the point in a new VDI on `sr`: the full, then each delta in order.
 * Records the VDI in `created` as soon as it exists.
 */
export async function rebuildDisk(
  ctx: RestoreContext,
  point: ChainPoint,
  disk: ChainDisk,
  sr: string,
  created: Map<string, string>,
  journal: JournalRecord,
): Promise<void> {
  // Tagged with the journal's token from birth: a crash before the journal knows it leaves a
  // VDI the next run finds and removes.
  const vdi = await ctx.host.call<string>('VDI.create', {
    name_label: `${point.vmName} disk ${disk.userdevice}`,
    name_description: `restored by dpxen from run ${point.runs.at(-1)!.manifest.run}`,
    SR: sr,
    virtual_size: String(disk.virtualSize),
    type: 'user',
    sharable: false,
    read_only: false,
    other_config: { [OC_RESTORE_TOKEN]: journal.entry.token! },
    xenstore_data: {},
    sm_config: {},
    tags: [],
  })
  created.set(disk.userdevice, vdi)
  await journal.update({ copies: [...created.values()] })
  for (const { manifest } of point.runs) {
    throwIfAborted(ctx.signal)
    const file = manifest.disks.find((d) => d.userdevice === disk.userdevice)!.file
    ctx.onStatus?.(`writing ${file}`)
    await importVhd(ctx.host, {
      file: join(ctx.config.backupDir, file),
      vdi,
      signal: ctx.signal,
    })
  }
}
