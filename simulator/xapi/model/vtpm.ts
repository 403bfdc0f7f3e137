// Virtual TPMs as xapi keeps them (xapi_vtpm.ml): at most one per VM, made and removed only while
// the VM is halted, the contents a base64 secret that VM.snapshot, VM.clone and VM.copy copy
// (unless the vTPM is unique) and that every export carries (export.ml make_vtpm).
import { XapiFailure } from './errors.js'
import type { SimContext } from './context.js'
import type { Rec } from './db.js'

/** Creates a vTPM on `vm` without checks (seeds, copies, imports). */
export function addVtpm(
  sim: SimContext,
  vm: string,
  from: { contents: string; isUnique?: boolean; isProtected?: boolean; uuid?: string },
): string {
  const ref = sim.db.create('VTPM', {
    ...(from.uuid ? { uuid: from.uuid } : {}),
    VM: vm,
    persistence_backend: 'xapi',
    is_unique: from.isUnique ?? false,
    is_protected: from.isProtected ?? false,
    allowed_operations: ['destroy'],
    current_operations: {},
    contents: from.contents,
  })
  sim.db.link('VM', vm, 'VTPMs', ref, true)
  return ref
}

/** The VM's vTPMs that still exist. */
export function vtpmsOf(sim: SimContext, vm: Rec): Rec[] {
  return ((vm.VTPMs as string[] | undefined) ?? []).flatMap((r): Rec[] => {
    const v = sim.db.get('VTPM', r)
    return v ? [v] : []
  })
}

/** VM.snapshot / clone / copy: the source's vTPMs on `to`, their contents copied unless unique. */
export function copyVtpms(sim: SimContext, from: Rec, to: string): void {
  sim.db.update('VM', to, { VTPMs: [] })
  for (const v of vtpmsOf(sim, from))
    addVtpm(sim, to, { contents: v.is_unique ? '' : String(v.contents), isUnique: Boolean(v.is_unique) })
}

/** Removes the VM's vTPMs (VM.destroy removes them with the VM). */
export function removeVtpms(sim: SimContext, vm: Rec): void {
  for (const ref of (vm.VTPMs as string[] | undefined) ?? [])
    if (sim.db.has('VTPM', ref)) sim.db.destroy('VTPM', ref)
}

function assertHalted(sim: SimContext, vm: string, allowed: string[]): void {
  const state = String(sim.db.require('VM', vm).power_state)
  if (!allowed.includes(state))
    throw new XapiFailure('VM_BAD_POWER_STATE', vm, allowed.join(';').toLowerCase(), state.toLowerCase())
}

/** VTPM.create: the VM halted, no vTPM yet (VTPM_MAX_AMOUNT_REACHED [count]). */
export function createVtpm(sim: SimContext, vm: string, isUnique: boolean): string {
  assertHalted(sim, vm, ['Halted'])
  const count = vtpmsOf(sim, sim.db.require('VM', vm)).length
  if (count) throw new XapiFailure('VTPM_MAX_AMOUNT_REACHED', String(count))
  return addVtpm(sim, vm, { contents: '', isUnique })
}

/** VTPM.destroy: only while its VM is halted or suspended. */
export function destroyVtpm(sim: SimContext, ref: string): void {
  const vm = String(sim.db.require('VTPM', ref).VM)
  assertHalted(sim, vm, ['Halted', 'Suspended'])
  sim.db.link('VM', vm, 'VTPMs', ref, false)
  sim.db.destroy('VTPM', ref)
}

/** VTPM.set_contents: the contents must be base64 (else INTERNAL_ERROR, as Base64.decode fails). */
export function setVtpmContents(sim: SimContext, ref: string, contents: string): void {
  sim.db.require('VTPM', ref)
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(contents) || contents.length % 4 !== 0)
    throw new XapiFailure('INTERNAL_ERROR', 'Invalid_argument("Base64.decode")')
  sim.db.update('VTPM', ref, { contents })
}
