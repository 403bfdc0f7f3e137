// What changed block tracking forbids other VDI operations, as xapi checks it
// (xapi_vdi.ml check_operation_error, allowed_for_cbt_metadata_vdi). Apart from the logs
// themselves (cbt.ts), which the disk store keeps.
import type { SimContext } from './context.js'
import { XapiFailure } from './errors.js'

/** Operations a cbt_metadata VDI refuses (xapi_vdi.ml allowed_for_cbt_metadata_vdi). */
const NOT_ON_METADATA = [
  'clone',
  'copy',
  'disable_cbt',
  'enable_cbt',
  'mirror',
  'resize',
  'snapshot',
  'set_on_boot',
]

/**
 * What CBT forbids other VDI operations (clone, copy, snapshot, resize, set_on_boot, mirror):
 * a cbt_metadata VDI refuses them (VDI_INCOMPATIBLE_TYPE), and a disk with CBT enabled refuses
 * set_on_boot and mirror (VDI_CBT_ENABLED).
 */
export function assertCbtState(sim: SimContext, ref: string, op: string): void {
  const vdi = sim.db.require('VDI', ref)
  if (vdi.type === 'cbt_metadata' && NOT_ON_METADATA.includes(op))
    throw new XapiFailure('VDI_INCOMPATIBLE_TYPE', ref, 'cbt_metadata')
  if (vdi.cbt_enabled && (op === 'set_on_boot' || op === 'mirror'))
    throw new XapiFailure('VDI_CBT_ENABLED', ref)
}
