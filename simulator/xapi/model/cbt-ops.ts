// The CBT calls on VDIs with xapi's checks (xen-api HEAD e2ee48d688: xapi_vdi.ml
// check_operation_error, change_cbt_status, enable_cbt, list_changed_blocks, _data_destroy,
// destroy_and_data_destroy_common, wait_for_vbds_to_be_unplugged_and_destroyed;
// message_forwarding.ml checks list_changed_blocks on vdi_to). The logs themselves are cbt.ts.
import type { SimContext } from './context.js'
import type { Rec } from './db.js'
import { XapiFailure } from './errors.js'
import { recomputeSrUsage, srCapabilities } from './factory.js'
import { removeVbd } from './storage.js'
import { assertCbtState } from './cbt-checks.js'

type CbtOp = 'enable_cbt' | 'disable_cbt' | 'data_destroy' | 'list_changed_blocks'

/** Operations that may run while a VBD is attached (operation_can_be_performed_live). */
const LIVE: CbtOp[] = ['enable_cbt', 'disable_cbt', 'data_destroy']
function attachedVbds(sim: SimContext, vdi: Rec): Rec[] {
  return (vdi.VBDs as string[])
    .map((v) => sim.db.get('VBD', v))
    .filter((v): v is Rec => v !== undefined && v.currently_attached === true)
}

/**
 * check_operation_error's parts that concern CBT, in xapi's order: attached (VDI_IN_USE; a
 * list_changed_blocks is let through when only snapshot VMs hold the disk), the SR's support,
 * a cbt_metadata VDI, cbt_enabled (set_on_boot and mirror), then each call's own rule.
 */
export function assertCbtOp(sim: SimContext, ref: string, op: CbtOp): void {
  const vdi = sim.db.require('VDI', ref)
  const attached = attachedVbds(sim, vdi)
  const onSnapshotsOnly =
    op === 'list_changed_blocks' && attached.every((vbd) => sim.db.get('VM', vbd.VM)?.is_a_snapshot === true)
  if (attached.length && !LIVE.includes(op) && !onSnapshotsOnly) throw new XapiFailure('VDI_IN_USE', ref, op)
  const sr = sim.db.get('SR', vdi.SR)
  if (!sr || !srCapabilities(String(sr.type)).vdiOps.includes(op))
    throw new XapiFailure('SR_OPERATION_NOT_SUPPORTED', String(vdi.SR))
  assertCbtState(sim, ref, op)
  if (op === 'data_destroy') {
    if (!vdi.is_a_snapshot) throw new XapiFailure('OPERATION_NOT_ALLOWED', `VDI is not a snapshot: ${ref}`)
    if (!vdi.cbt_enabled) throw new XapiFailure('VDI_NO_CBT_METADATA', ref)
  }
  if (op === 'enable_cbt' || op === 'disable_cbt') {
    if (vdi.is_a_snapshot) throw new XapiFailure('OPERATION_NOT_ALLOWED', `VDI is a snapshot: ${ref}`)
    if (vdi.type !== 'user' && vdi.type !== 'system')
      throw new XapiFailure('VDI_INCOMPATIBLE_TYPE', ref, String(vdi.type))
    if ((vdi.sm_config as Record<string, string>).on_boot === 'reset')
      throw new XapiFailure('VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION')
  }
}

/**
 * VDI.enable_cbt / disable_cbt: idempotent. enable_cbt checks the pool's licence first
 * (Pool_features.assert_enabled: LICENCE_RESTRICTION [CBT], the fault cbt-unlicensed).
 */
export function setCbt(sim: SimContext, ref: string, enabled: boolean): void {
  if (enabled && sim.faults.get('cbt-unlicensed')) throw new XapiFailure('LICENCE_RESTRICTION', 'CBT')
  assertCbtOp(sim, ref, enabled ? 'enable_cbt' : 'disable_cbt')
  const vdi = sim.db.require('VDI', ref)
  if (vdi.cbt_enabled === enabled) return
  const uuid = String(vdi.uuid)
  if (enabled) sim.disks.cbt.enable(uuid, Number(vdi.virtual_size))
  else sim.disks.cbt.disable(uuid)
  sim.db.update('VDI', ref, { cbt_enabled: enabled })
}

/** How long data_destroy waits for the snapshot's VBDs to go (xapi_vdi.ml data_destroy ~timeout:4). */
const VBD_WAIT_MS = 4000

/**
 * VDI.data_destroy: the VDI is marked cbt_metadata at once (and put back on a failure); the call
 * waits up to 4 s for its VBDs to be unplugged and destroyed (a snapshot VM left in place costs
 * those 4 s), fails VDI_IN_USE if one is still attached, destroys the others, and drops the
 * data: the SR's utilisation falls, the CBT log stays. Again: nothing.
 */
export async function dataDestroy(sim: SimContext, ref: string): Promise<void> {
  assertCbtOp(sim, ref, 'data_destroy')
  const before = sim.db.require('VDI', ref)
  if (before.type === 'cbt_metadata') return
  sim.db.update('VDI', ref, { type: 'cbt_metadata' })
  try {
    const deadline = Date.now() + VBD_WAIT_MS
    while ((sim.db.require('VDI', ref).VBDs as string[]).length && Date.now() < deadline)
      await sim.db.waitForChange(deadline - Date.now(), sim.closing)
    if (attachedVbds(sim, sim.db.require('VDI', ref)).length)
      throw new XapiFailure('VDI_IN_USE', ref, 'data_destroy')
  } catch (error) {
    sim.db.update('VDI', ref, { type: before.type })
    throw error
  }
  for (const vbd of before.VBDs as string[]) if (sim.db.has('VBD', vbd)) removeVbd(sim, vbd)
  await sim.disks.removeData(String(before.uuid))
  sim.db.update('VDI', ref, { physical_utilisation: 0 })
  recomputeSrUsage(sim, String(before.SR))
}

/** VDI.list_changed_blocks(vdi_from, vdi_to): checked on vdi_to, answered by the logs. */
export function listChangedBlocks(sim: SimContext, from: string, to: string): string {
  assertCbtOp(sim, to, 'list_changed_blocks')
  const uuidOf = (ref: string): string => String(sim.db.require('VDI', ref).uuid)
  return sim.disks.cbt.changed(uuidOf(from), uuidOf(to))
}
