// Which VM of the pool a backup belongs to. Identity is the uuid: a VM of the same name in
// another pool, or one made again by hand, is another VM, and restoring over it would destroy
// its disks. An offline restore over an existing VM gives the new VM a new uuid (xapi cannot
// keep it without destroying the old VM first), so that VM carries the uuid it stands for
// (OC_RESTORED_FROM) and is found by it.
import { DpxenError, isXapiError } from '../core/errors.js'
import type { Host } from '../xapi/host.js'
import { OC_RESTORED_FROM } from './tags.js'

type Rec = Record<string, unknown>

function isVm(rec: Rec): boolean {
  return !rec.is_a_template && !rec.is_a_snapshot && !rec.is_control_domain
}

/**
 * The VM of the backup: the one with its uuid, or one dpxen restored in its place; by name
 * only when `matchByName` (the one VM of that name). A VM that matches by name alone is
 * otherwise an error naming the way out; no VM at all is undefined.
 */
export async function findVm(
  host: Host,
  backup: { uuid: string; name: string },
  options: { matchByName: boolean },
): Promise<string | undefined> {
  try {
    return await host.call<string>('VM.get_by_uuid', backup.uuid)
  } catch (error) {
    if (!isXapiError(error, 'UUID_INVALID', 'HANDLE_INVALID')) throw error
  }
  const records = Object.entries(await host.call<Record<string, Rec>>('VM.get_all_records')).filter(
    ([, rec]) => isVm(rec),
  )
  const standIns = records.filter(
    ([, rec]) => (rec.other_config as Record<string, string> | undefined)?.[OC_RESTORED_FROM] === backup.uuid,
  )
  if (standIns.length === 1) return standIns[0]![0]
  const named = records.filter(([, rec]) => rec.name_label === backup.name).map(([ref]) => ref)
  if (named.length === 0) return undefined
  if (!options.matchByName)
    throw new DpxenError(
      'VM_FAILED',
      `a VM named ${backup.name} exists but it is not the one backed up (its uuid is not ${backup.uuid}); it was not touched: set matchByName: true to restore over it, or restoreAs: copy`,
    )
  if (named.length > 1)
    throw new DpxenError(
      'VM_FAILED',
      `${named.length} VMs are named ${backup.name} and none has the backup's uuid; rename the others first`,
    )
  return named[0]
}
