// Which VM of the pool a backup belongs to.
import { DpxenError, isXapiError } from '../core/errors.js'
import type { XapiSession } from '../xapi/session.js'

/** The VM with the backup's uuid, else the one VM (not a template or snapshot) of its name. */
export async function findVm(
  session: XapiSession,
  backup: { uuid: string; name: string },
): Promise<string | undefined> {
  try {
    return await session.call<string>('VM.get_by_uuid', backup.uuid)
  } catch (error) {
    if (!isXapiError(error, 'UUID_INVALID', 'HANDLE_INVALID')) throw error
  }
  const refs = await session.call<string[]>('VM.get_by_name_label', backup.name)
  const vms: string[] = []
  for (const ref of refs) {
    const rec = await session.call<Record<string, unknown>>('VM.get_record', ref)
    if (!rec.is_a_template && !rec.is_a_snapshot && !rec.is_control_domain) vms.push(ref)
  }
  if (vms.length > 1)
    throw new DpxenError(
      'VM_FAILED',
      `${vms.length} VMs are named ${backup.name} and none has the backup's uuid; rename the others first`,
    )
  return vms[0]
}
