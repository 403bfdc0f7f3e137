// Building a pool: the base objects every pool has, the demo pool, and pools from a seed file.
import { readFileSync } from 'node:fs'
import type { SimContext } from './context.js'
import { GiB, MiB, macFor, newVmRecord, refreshVmOps, srCapabilities } from './factory.js'
import { parseSize } from '../faults.js'
import { NULL_REF } from './schema.js'
import { createVbd, createVdi, createVif } from './storage.js'
import { addVtpm } from './vtpm.js'
import { DEFAULT_GUEST, GUEST_KEY, type Guest } from './guest.js'
import { setPowerState } from './vmops.js'

export interface SeedSr {
  name: string
  type: string
  content_type?: string
  default?: boolean
  size?: string | number
  shared?: boolean
  /** The host (1-based) a local SR belongs to; the master when the pool has fewer hosts. */
  host?: number
}
export interface SeedDisk {
  sr: string
  size: string | number
  /** Share of 1 MiB chunks holding incompressible data; the rest are zero. */
  fill?: number
  /** Share of 1 MiB chunks the guest rewrites after each snapshot of its VM (between backups). */
  churn?: number
  name?: string
  bootable?: boolean
}
export interface SeedVm {
  name: string
  powerState?: 'Running' | 'Halted' | 'Suspended'
  disks?: SeedDisk[]
  vifs?: number
  /** A USB device passed through (a licence dongle): xapi then refuses snapshots (VM_HAS_VUSBS). */
  usb?: boolean
  /** A virtual TPM with these contents (base64), as a Windows 11 VM has. */
  vtpm?: string
  /** Make this many VMs, named `<name>-1` … `<name>-N`. */
  count?: number
  tags?: string[]
  /** Seconds from VM.start to its guest agent's first report (default 2). */
  bootSeconds?: number
  /** Whether the guest runs a guest agent (PV drivers, guest tools); default true. */
  guestAgent?: boolean
  /** A guest that runs dpxen's health-check script, answering its xenstore key so. */
  healthCheckScript?: 'success' | 'failure'
}
export interface Seed {
  srs: SeedSr[]
  vms: SeedVm[]
  templates?: string[]
}

/** The name of host k (1-based): the first keeps the single-host simulator's name. */
export function hostName(k: number): string {
  return k === 1 ? 'xenserver-sim' : `xenserver-sim-${k}`
}

function createHost(sim: Omit<SimContext, 'poolRef' | 'hostRef'>, k: number, address: string): string {
  const { db } = sim
  const metrics = db.create('host_metrics', {
    live: true,
    memory_total: 64 * GiB,
    memory_free: 60 * GiB,
    last_updated: new Date(),
  })
  const hostRef = db.create('host', {
    name_label: hostName(k),
    hostname: hostName(k),
    address,
    API_version_major: 2,
    API_version_minor: 21,
    API_version_vendor: 'XenSource',
    software_version: {
      product_version: '8.3.0',
      product_brand: 'XCP-ng',
      xapi: `${sim.settings.xapiMajor}.${sim.settings.xapiMinor}`,
      platform_name: 'XCP',
    },
    enabled: true,
    memory_overhead: 0,
    metrics,
  })
  const dom0 = db.create(
    'VM',
    newVmRecord({
      name_label: `Control domain on host: ${hostName(k)}`,
      is_control_domain: true,
      power_state: 'Running',
      resident_on: hostRef,
      domid: 0,
      domain_type: 'pv',
    }),
  )
  db.link('host', hostRef, 'resident_VMs', dom0, true)
  return hostRef
}

/**
 * Creates the pool with one host per address (the first is the master), the network and each
 * host's control domain; returns refs.
 */
export function createBase(
  sim: Omit<SimContext, 'poolRef' | 'hostRef'>,
  addresses: string[],
): { poolRef: string; hostRef: string } {
  const { db } = sim
  const hosts = addresses.map((address, i) => createHost(sim, i + 1, address))
  const hostRef = hosts[0]!
  const poolRef = db.create('pool', { name_label: 'sim-pool', master: hostRef, default_SR: NULL_REF })
  const network = db.create('network', {
    name_label: 'Pool-wide network associated with eth0',
    bridge: 'xenbr0',
    MTU: 1500,
    managed: true,
    purpose: [],
  })
  // Each host's management interface on it, with the host's address.
  for (const host of hosts) {
    const pif = db.create('PIF', {
      device: 'eth0',
      network,
      host,
      IP: String(db.require('host', host).address),
      IPv6: [],
      netmask: '255.0.0.0',
      management: true,
      currently_attached: true,
    })
    db.link('network', network, 'PIFs', pif, true)
    db.link('host', host, 'PIFs', pif, true)
  }
  return { poolRef, hostRef }
}

/** Plugs the SR into the host: an attached PBD, linked from both. */
export function plugSr(sim: SimContext, sr: string, host: string): void {
  const pbd = sim.db.create('PBD', { host, SR: sr, device_config: {}, currently_attached: true })
  sim.db.link('SR', sr, 'PBDs', pbd, true)
  sim.db.link('host', host, 'PBDs', pbd, true)
}

export function createSr(sim: SimContext, sr: SeedSr): string {
  const contentType = sr.content_type ?? (sr.type === 'iso' ? 'iso' : sr.type === 'udev' ? 'disk' : 'user')
  const ref = sim.db.create('SR', {
    name_label: sr.name,
    type: sr.type,
    content_type: contentType,
    shared: sr.shared ?? sr.type === 'nfs',
    physical_size:
      sr.size === undefined ? (contentType === 'iso' ? 0 : 2048 * GiB) : parseSize(String(sr.size)),
    allowed_operations: srCapabilities(sr.type).srOps,
    sm_config: {},
  })
  if (sr.default)
    sim.db.update('pool', sim.poolRef, { default_SR: ref, suspend_image_SR: ref, crash_dump_SR: ref })
  // A shared SR is plugged into every host; any other into its own: host k, or the master in a
  // pool of fewer hosts (so one seed serves a single host and a pool, as the README says).
  const hosts = sim.db.all('host').map(([host]) => host)
  const k = sr.host ?? 1
  if (!Number.isInteger(k) || k < 1)
    throw new Error(`seed: SR "${sr.name}": host must be 1 or more, not ${k}`)
  const own = hosts[k - 1] ?? hosts[0]!
  for (const host of hosts) if (sim.db.require('SR', ref).shared || host === own) plugSr(sim, ref, host)
  return ref
}

function findSr(sim: SimContext, name: string): string {
  const found = sim.db.all('SR').find(([, sr]) => sr.name_label === name)
  if (!found) throw new Error(`seed: disk on unknown SR "${name}"`)
  return found[0]
}

/** A seeded disk: made on its SR, filled, plugged at its position (the first boots). */
async function seedDisk(
  sim: SimContext,
  vmName: string,
  vm: string,
  disk: NonNullable<SeedVm['disks']>[number],
  position: number,
): Promise<void> {
  const size = parseSize(String(disk.size))
  const vdi = await createVdi(
    sim,
    {
      name_label: disk.name ?? `${vmName} ${position === 0 ? 'root' : `disk ${position}`}`,
      name_description: '',
      SR: findSr(sim, disk.sr),
      virtual_size: size,
      type: 'system',
      sharable: false,
      read_only: false,
      other_config: {},
    },
    true,
  )
  const uuid = String(sim.db.require('VDI', vdi).uuid)
  if (disk.fill) await sim.disks.fill(uuid, size, disk.fill, `${vmName}/${position}`)
  if (disk.churn) sim.disks.churn.set(uuid, disk.churn)
  createVbd(sim, {
    VM: vm,
    VDI: vdi,
    userdevice: String(position),
    bootable: disk.bootable ?? position === 0,
    mode: 'RW',
    type: 'Disk',
    empty: false,
    other_config: { owner: 'true' },
    qos_algorithm_type: '',
    qos_algorithm_params: {},
    device: `xvd${String.fromCharCode(97 + position)}`,
  })
}

export async function createVm(sim: SimContext, spec: SeedVm): Promise<string> {
  const vm = sim.db.create('VM', newVmRecord({ name_label: spec.name, tags: spec.tags ?? [] }))
  const oc = sim.db.require('VM', vm).other_config as Record<string, string>
  const seed = String(oc.mac_seed)
  const guest: Guest = {
    bootSeconds: spec.bootSeconds ?? DEFAULT_GUEST.bootSeconds,
    agent: spec.guestAgent === false ? false : DEFAULT_GUEST.agent,
    ...(spec.healthCheckScript ? { script: spec.healthCheckScript } : {}),
  }
  sim.db.update('VM', vm, { other_config: { ...oc, [GUEST_KEY]: JSON.stringify(guest) } })
  for (const [position, disk] of (spec.disks ?? []).entries())
    await seedDisk(sim, spec.name, vm, disk, position)
  createVbd(sim, {
    VM: vm,
    VDI: NULL_REF,
    userdevice: '3',
    bootable: false,
    mode: 'RO',
    type: 'CD',
    empty: true,
    other_config: {},
    qos_algorithm_type: '',
    qos_algorithm_params: {},
    device: 'xvdd',
  })
  const network = sim.db.all('network')[0]![0]
  for (let i = 0; i < (spec.vifs ?? 0); i++) {
    createVif(sim, {
      VM: vm,
      network,
      device: String(i),
      MAC: macFor(seed, String(i)),
      MTU: 1500,
      other_config: {},
    })
  }
  if (spec.usb) {
    const vusb = sim.db.create('VUSB', {
      VM: vm,
      USB_group: NULL_REF,
      attached: NULL_REF,
      currently_attached: false,
      allowed_operations: [],
      current_operations: {},
      other_config: {},
    })
    sim.db.update('VM', vm, { VUSBs: [vusb] })
  }
  if (spec.vtpm !== undefined) addVtpm(sim, vm, { contents: spec.vtpm })
  refreshVmOps(sim, vm)
  if (spec.powerState && spec.powerState !== 'Halted') setPowerState(sim, vm, spec.powerState)
  return vm
}

function createTemplate(sim: SimContext, name: string): void {
  const ref = sim.db.create(
    'VM',
    newVmRecord({
      name_label: name,
      is_a_template: true,
      is_default_template: true,
      other_config: { default_template: 'true' },
    }),
  )
  refreshVmOps(sim, ref)
}

export const DEMO_SEED: Seed = {
  srs: [
    // In a pool of three hosts, Debian's first disk is on the third host's local SR and
    // legacy-win's on the second's: their exports, and imports into the default SR, are served
    // by members (the master answers 302).
    { name: 'Local storage', type: 'ext', default: true, size: '200GiB', host: 3 },
    { name: 'Shared Storage', type: 'nfs', size: '500GiB' },
    { name: 'Removable storage', type: 'udev', size: '32GiB', host: 2 },
    { name: 'DVD drives', type: 'udev', content_type: 'iso' },
  ],
  vms: [
    {
      name: 'Debian',
      powerState: 'Running',
      vifs: 1,
      disks: [
        { sr: 'Local storage', size: '8MiB', fill: 0.5 },
        { sr: 'Shared Storage', size: '4MiB', fill: 0.5 },
      ],
    },
    {
      name: 'vm2',
      powerState: 'Halted',
      vifs: 1,
      disks: [{ sr: 'Shared Storage', size: '6MiB', fill: 0.5 }],
    },
    {
      name: 'legacy-win',
      powerState: 'Running',
      vifs: 1,
      disks: [{ sr: 'Removable storage', size: '4MiB', fill: 0.5 }],
    },
  ],
  templates: ['Debian Bookworm 12', 'Windows Server 2022 (64-bit)', 'Other install media'],
}

export async function applySeed(sim: SimContext, seed: Seed): Promise<void> {
  for (const sr of seed.srs) createSr(sim, sr)
  for (const name of seed.templates ?? []) createTemplate(sim, name)
  for (const vm of seed.vms) {
    if (vm.count === undefined) await createVm(sim, vm)
    else for (let i = 1; i <= vm.count; i++) await createVm(sim, { ...vm, name: `${vm.name}-${i}` })
  }
}

/** Reads and checks a seed file; throws a one-line error naming the file and the problem. */
export function readSeed(file: string): Seed {
  let seed: Seed
  try {
    seed = JSON.parse(readFileSync(file, 'utf8')) as Seed
  } catch (error) {
    throw new Error(`seed file ${file}: ${error instanceof Error ? error.message : String(error)}`)
  }
  if (!Array.isArray(seed.srs) || !Array.isArray(seed.vms))
    throw new Error(`seed file ${file}: needs "srs" and "vms" lists`)
  const srNames = new Set(seed.srs.map((sr) => sr.name))
  for (const vm of seed.vms) {
    if (typeof vm.name !== 'string' || vm.name === '')
      throw new Error(`seed file ${file}: every VM needs a "name"`)
    for (const disk of vm.disks ?? []) {
      if (!srNames.has(disk.sr))
        throw new Error(`seed file ${file}: VM "${vm.name}" has a disk on unknown SR "${disk.sr}"`)
      parseSize(String(disk.size))
      if (disk.fill !== undefined && !(disk.fill >= 0 && disk.fill <= 1))
        throw new Error(`seed file ${file}: VM "${vm.name}": fill must be between 0 and 1`)
      if (disk.churn !== undefined && !(disk.churn >= 0 && disk.churn <= 1))
        throw new Error(`seed file ${file}: VM "${vm.name}": churn must be between 0 and 1`)
    }
  }
  return seed
}

export { MiB }
