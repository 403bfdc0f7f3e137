// A VM's guest, as far as anyone outside it can tell, as xapi shows it (xen-api e2ee48d688):
// - VM.start first deletes the VM's guest metrics (xapi_vm.ml: they may be stale, or a clone's);
//   once the domain runs, xapi makes an empty record (xapi_xenops.ml
//   create_guest_metrics_if_needed), and `bootSeconds` later the guest agent (PV drivers, guest
//   tools) fills it from xenstore (xapi_guest_agent.ml: PV_drivers_version's keys major, minor,
//   micro, build; os_version's name, distro, …);
// - a halt keeps the record, stale; a snapshot, clone or copy gets a copy of it
//   (xapi_vm_helpers.ml copy_guest_metrics), and an export carries it to the imported VM
//   (export.ml, import.ml): a halted copy of a running VM shows an agent it has not run;
// - the guest's writes under vm-data come back into VM.xenstore_data (xapi_xenops.ml, the
//   xsdata_state update).
//
// What the guest does is the seed's (bootSeconds, guestAgent, healthCheckScript), kept with the
// VM in other_config under GUEST_KEY so that it travels in its exports and comes back with a
// restore or a copy, as a real guest's software travels on its disks. A guest boots only from
// a disk with data on it (its boot disk, or the first): a disk restored as zeros never boots.
// The script a seeded guest runs answers dpxen's documented xenstore key as the example script
// in docs does: `planned` → `running` → `success` or `failure`.
// Fault guest-no-boot: a started guest never gets as far as its agent.
import { promises as fsp } from 'node:fs'
import type { SimContext } from './context.js'
import type { Rec } from './db.js'
import { NULL_REF } from './schema.js'

/** other_config key holding the seeded guest's behaviour (JSON); the simulator's own. */
export const GUEST_KEY = 'xapi-sim:guest'
/** The xenstore key a guest's health-check script answers (under vm-data, as xapi syncs it). */
export const HEALTH_KEY = 'vm-data/dpxen-health-check'
export const HEALTH_ERROR_KEY = 'vm-data/dpxen-health-check-error'

export interface Guest {
  /** Seconds from VM.start to the guest agent's first report. */
  bootSeconds: number
  /** The guest agent's version (major.minor.micro), or false for a guest without one. */
  agent: string | false
  /** What its health-check script answers when the key says `planned`; no script when absent. */
  script?: 'success' | 'failure'
}

export const DEFAULT_GUEST: Guest = { bootSeconds: 2, agent: '8.4.0' }

/** The guest of a VM record; a VM the simulator did not seed (imported from elsewhere) has none. */
export function guestOf(vm: Rec): Guest | undefined {
  const text = (vm.other_config as Record<string, string> | undefined)?.[GUEST_KEY]
  if (!text) return undefined
  try {
    return { ...DEFAULT_GUEST, ...(JSON.parse(text) as Partial<Guest>) }
  } catch {
    return undefined
  }
}

const running = new WeakMap<SimContext, Map<string, AbortController>>()

function timersOf(sim: SimContext): Map<string, AbortController> {
  let map = running.get(sim)
  if (!map) running.set(sim, (map = new Map()))
  return map
}

/** Waits `seconds` unless the guest stops (halt, destroy) or the simulator closes. */
async function after(seconds: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', stop)
      resolve(true)
    }, seconds * 1000)
    const stop = (): void => {
      clearTimeout(timer)
      resolve(false)
    }
    signal.addEventListener('abort', stop, { once: true })
  })
}

/** The disk the guest boots from: the bootable one, else position 0. */
function bootDisk(sim: SimContext, vm: Rec): Rec | undefined {
  const vbds = (vm.VBDs as string[])
    .map((v) => sim.db.get('VBD', v))
    .filter((v): v is Rec => v !== undefined && v.type === 'Disk' && !v.empty)
  const vbd = vbds.find((v) => v.bootable === true) ?? vbds.find((v) => String(v.userdevice) === '0')
  return vbd ? sim.db.get('VDI', vbd.VDI) : undefined
}

/** Whether the first 64 MiB of the disk hold any data: a boot loader to find. */
async function hasData(sim: SimContext, vdi: Rec): Promise<boolean> {
  const handle = await fsp.open(sim.disks.path(String(vdi.uuid)), 'r').catch(() => undefined)
  if (!handle) return false
  try {
    const buf = Buffer.alloc(1024 * 1024)
    for (let at = 0; at < 64 * 1024 * 1024; at += buf.length) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, at)
      if (bytesRead === 0) return false
      if (buf.subarray(0, bytesRead).some((b) => b !== 0)) return true
    }
    return false
  } finally {
    await handle.close()
  }
}

/** The record xapi makes once the domain runs: empty until the agent writes. */
function emptyMetrics(sim: SimContext, vmRef: string): void {
  const metrics = sim.db.create('VM_guest_metrics', {
    os_version: {},
    PV_drivers_version: {},
    PV_drivers_up_to_date: false,
    PV_drivers_detected: false,
    networks: {},
    other: {},
    last_updated: new Date(),
    other_config: {},
    live: false,
  })
  sim.db.update('VM', vmRef, { guest_metrics: metrics })
}

/** The guest agent's report, into the VM's guest metrics. */
function report(sim: SimContext, vmRef: string, agent: string): void {
  const metrics = String(sim.db.get('VM', vmRef)?.guest_metrics ?? NULL_REF)
  if (!sim.db.has('VM_guest_metrics', metrics)) return
  const [major = '0', minor = '0', micro = '0'] = agent.split('.')
  sim.db.update('VM_guest_metrics', metrics, {
    os_version: { name: 'Debian GNU/Linux 12 (bookworm)', distro: 'debian', major: '12', minor: '0' },
    PV_drivers_version: { major, minor, micro, build: '0' },
    PV_drivers_up_to_date: true,
    PV_drivers_detected: true,
    other: { 'feature-shutdown': '1', has_vendor_device: '0' },
    last_updated: new Date(),
    live: true,
  })
}

/** A copy of a VM's guest metrics record for another VM (copy_guest_metrics); NULL when none. */
export function copyGuestMetrics(sim: SimContext, from: Rec): string {
  const metrics = sim.db.get('VM_guest_metrics', from.guest_metrics)
  if (!metrics) return NULL_REF
  const { uuid: _uuid, ...fields } = metrics
  return sim.db.create('VM_guest_metrics', structuredClone(fields))
}

function dropMetrics(sim: SimContext, vmRef: string): void {
  const vm = sim.db.get('VM', vmRef)
  const metrics = String(vm?.guest_metrics ?? NULL_REF)
  if (sim.db.has('VM_guest_metrics', metrics)) sim.db.destroy('VM_guest_metrics', metrics)
  if (vm && metrics !== NULL_REF) sim.db.update('VM', vmRef, { guest_metrics: NULL_REF })
}

/** The guest's vm-data writes, as xapi syncs them into VM.xenstore_data. */
function writeXenstore(sim: SimContext, vmRef: string, values: Record<string, string>): void {
  const vm = sim.db.get('VM', vmRef)
  if (!vm) return
  sim.db.update('VM', vmRef, {
    xenstore_data: { ...(vm.xenstore_data as Record<string, string>), ...values },
  })
}

/** The guest's life after VM.start: boot, the agent's report, the health-check script. */
async function live(sim: SimContext, vmRef: string, guest: Guest, signal: AbortSignal): Promise<void> {
  const vm = sim.db.get('VM', vmRef)
  const disk = vm && bootDisk(sim, vm)
  if (!disk || !(await hasData(sim, disk)) || sim.faults.get('guest-no-boot')) return
  if (!(await after(guest.bootSeconds, signal))) return
  if (guest.agent !== false) report(sim, vmRef, guest.agent)
  const asked = (sim.db.get('VM', vmRef)?.xenstore_data as Record<string, string> | undefined)?.[HEALTH_KEY]
  if (!guest.script || asked !== 'planned') return
  writeXenstore(sim, vmRef, { [HEALTH_KEY]: 'running' })
  if (!(await after(0.5, signal))) return
  writeXenstore(sim, vmRef, {
    [HEALTH_KEY]: guest.script,
    ...(guest.script === 'failure' ? { [HEALTH_ERROR_KEY]: 'the application check failed' } : {}),
  })
}

/** VM.start: the stale guest metrics go, an empty record comes, and the guest (if any) boots. */
export function bootGuest(sim: SimContext, vmRef: string): void {
  stopGuest(sim, vmRef)
  dropMetrics(sim, vmRef)
  emptyMetrics(sim, vmRef)
  const vm = sim.db.get('VM', vmRef)
  const guest = vm && guestOf(vm)
  if (!guest) return
  const controller = new AbortController()
  timersOf(sim).set(vmRef, controller)
  const signal = AbortSignal.any([controller.signal, sim.closing])
  void live(sim, vmRef, guest, signal).catch(() => undefined)
}

/** A VM that halts: its guest stops; its guest metrics stay, stale, as xapi keeps them. */
export function stopGuest(sim: SimContext, vmRef: string): void {
  timersOf(sim).get(vmRef)?.abort()
  timersOf(sim).delete(vmRef)
}

/** A VM that goes: its guest stops and its guest metrics go with it (xapi's GC of orphans). */
export function forgetGuest(sim: SimContext, vmRef: string): void {
  stopGuest(sim, vmRef)
  dropMetrics(sim, vmRef)
}
