// XVA export as xapi writes it (export.ml, stream_vdi.ml): ova.xml first, then for each disk,
// sorted by its Ref:N id as plain strings, 1 MiB chunks each followed by its checksum entry;
// zero chunks left out except the first and the last; tar end marker.
import { createHash } from 'node:crypto'
import { promises as fsp } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import xxhash from 'xxhash-wasm'
import type { ChecksumKind, SimContext } from '../model/context.js'
import { recordToWire, type Rec } from '../model/db.js'
import { CHUNK, isZero } from '../model/disks.js'
import { TAR_END, padding, tarHeader } from './tar.js'
import { printValue, type Wire } from '../model/xmlrpc.js'

/** xapi numbers export objects from one process-wide counter, so ids are neither small nor per-export. */
let nextId = 1000

const { h64Raw } = await xxhash()

export interface ExportOptions {
  checksum: ChecksumKind
  /** Emit xapi's zero-length keep-alive chunk entries. */
  keepalive: boolean
  /** Pause this long after the first data chunk (fault export-stall). */
  stallMs: number
  signal: AbortSignal
  onProgress?: (done: number, total: number) => void
  /**
   * The consumer is done with each chunk before it pulls the next (it wrote it and waited for
   * the socket to drain): the chunk buffer is then reused, and an export allocates nothing per
   * MiB. Without it (compression holds on to its input) every chunk is a new buffer.
   */
  reuseBuffers?: boolean
}

export function checksumOf(kind: ChecksumKind, data: Buffer): string {
  if (kind === 'sha1') return createHash('sha1').update(data).digest('hex')
  return h64Raw(data, 0n).toString(16).toUpperCase().padStart(16, '0')
}

export function checksumSuffix(kind: ChecksumKind): string {
  return kind === 'sha1' ? '.checksum' : '.xxhash'
}

interface ExportPlan {
  ovaXml: string
  disks: { id: string; uuid: string; size: number }[]
}

/** One object of ova.xml: its record with every ref renamed to its archive id (or NULL). */
function wireObject(
  sim: SimContext,
  cls: string,
  ref: string,
  ids: Map<string, string>,
  keepPowerState: boolean,
): Wire {
  if (cls === 'VTPM') return vtpmObject(sim, ref, ids)
  const rewrite = (value: unknown): unknown => {
    if (typeof value === 'string' && value.startsWith('OpaqueRef:')) return ids.get(value) ?? 'OpaqueRef:NULL'
    if (Array.isArray(value)) {
      return value
        .filter((v) => typeof v !== 'string' || !v.startsWith('OpaqueRef:') || ids.has(v))
        .map(rewrite)
    }
    return value
  }
  const rec: Rec = {}
  for (const [field, value] of Object.entries(sim.db.require(cls, ref))) rec[field] = rewrite(value)
  rec.allowed_operations = []
  rec.current_operations = {}
  if (cls === 'VM') {
    Object.assign(rec, {
      power_state: keepPowerState ? rec.power_state : 'Halted',
      is_a_snapshot: false,
      snapshot_of: 'OpaqueRef:NULL',
      snapshot_time: new Date(0),
      parent: 'OpaqueRef:NULL',
      resident_on: 'OpaqueRef:NULL',
      snapshots: [],
      children: [],
    })
  }
  if (cls === 'VBD' || cls === 'VIF') rec.currently_attached = false
  if (cls === 'SR') rec.PBDs = []
  return { class: cls, id: ids.get(ref)!, snapshot: recordToWire(cls, rec) }
}

/**
 * Builds ova.xml for a VM and lists the disks to stream, with refs rewritten to Ref:N ids. An
 * XVA says Halted; /export_metadata keeps the power state (export.ml preserve_power_state).
 */
export function planExport(sim: SimContext, vmRef: string, keepPowerState = false): ExportPlan {
  const ids = new Map<string, string>()
  const objects: { cls: string; ref: string }[] = []
  const add = (cls: string, ref: string): void => {
    if (ids.has(ref) || !sim.db.has(cls, ref)) return
    ids.set(ref, `Ref:${nextId++}`)
    objects.push({ cls, ref })
  }
  const vm = sim.db.require('VM', vmRef)
  add('VM', vmRef)
  const disks: ExportPlan['disks'] = []
  const vbds = (vm.VBDs as string[]).filter((r) => sim.db.has('VBD', r))
  for (const vbd of vbds) add('VBD', vbd)
  for (const vif of vm.VIFs as string[]) add('VIF', vif)
  for (const vif of vm.VIFs as string[]) add('network', String(sim.db.get('VIF', vif)?.network))
  for (const vbdRef of vbds) {
    const vbd = sim.db.require('VBD', vbdRef)
    if (vbd.empty) continue
    add('VDI', String(vbd.VDI))
  }
  for (const vbdRef of vbds) {
    const vdi = sim.db.get('VDI', sim.db.require('VBD', vbdRef).VDI)
    if (vdi) add('SR', String(vdi.SR))
  }
  const vtpms = ((vm.VTPMs as string[] | undefined) ?? []).filter((r) => sim.db.has('VTPM', r))
  for (const vtpm of vtpms) add('VTPM', vtpm)
  // export.ml adds the VM's guest metrics: the imported VM shows what the guest last reported.
  add('VM_guest_metrics', String(vm.guest_metrics))
  for (const vbdRef of vbds) {
    const vbd = sim.db.require('VBD', vbdRef)
    const vdi = sim.db.get('VDI', vbd.VDI)
    const sr = vdi && sim.db.get('SR', vdi.SR)
    if (!vdi || !sr || vbd.type === 'CD' || sr.content_type === 'iso') continue
    disks.push({ id: ids.get(String(vbd.VDI))!, uuid: String(vdi.uuid), size: Number(vdi.virtual_size) })
  }
  disks.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))

  const wireObjects = objects.map(({ cls, ref }) => wireObject(sim, cls, ref, ids, keepPowerState))
  const { xapiMajor, xapiMinor } = sim.settings
  const header: Wire = {
    version: {
      hostname: 'localhost',
      date: '2025-06-30',
      product_version: '8.3.0',
      product_brand: 'XCP-ng',
      build_number: 'release/yangtze/master/58',
      xapi_major: String(xapiMajor),
      xapi_minor: String(xapiMinor),
      export_vsn: '2',
    },
    objects: wireObjects,
  }
  return { ovaXml: printValue(header), disks }
}

/**
 * A vTPM as export.ml make_vtpm writes it: not the API record but importexport.ml's vtpm' type,
 * its fields named as rpc_of_vtpm' names them, the contents (base64) included.
 */
function vtpmObject(sim: SimContext, ref: string, ids: Map<string, string>): Wire {
  const v = sim.db.require('VTPM', ref)
  return {
    class: 'VTPM',
    id: ids.get(ref)!,
    snapshot: {
      "vTPM'_VM": ids.get(String(v.VM)) ?? 'OpaqueRef:NULL',
      "vTPM'_uuid": String(v.uuid),
      "vTPM'_is_unique": Boolean(v.is_unique),
      "vTPM'_is_protected": Boolean(v.is_protected),
      "vTPM'_content": String(v.contents),
    },
  }
}

/** Yields the XVA tar stream; pulling drives it, so the consumer's backpressure holds. */
export async function* writeXva(
  sim: SimContext,
  vmRef: string,
  options: ExportOptions,
): AsyncGenerator<Buffer> {
  const plan = planExport(sim, vmRef)
  const ova = Buffer.from(plan.ovaXml)
  yield Buffer.concat([tarHeader('ova.xml', ova.length), ova, padding(ova.length)])
  const total = plan.disks.reduce((sum, d) => sum + d.size, 0)
  let done = 0
  let stalled = false
  const suffix = checksumSuffix(options.checksum)
  // Chunk data is yielded as is (no copy); headers and the checksum entry are small.
  const entry = (name: string, data: Buffer): Buffer[] => {
    const sum = Buffer.from(checksumOf(options.checksum, data))
    const trailer = Buffer.concat([
      padding(data.length),
      tarHeader(name + suffix, sum.length),
      sum,
      padding(sum.length),
    ])
    return data.length ? [tarHeader(name, data.length), data, trailer] : [tarHeader(name, 0), trailer]
  }
  // One buffer, refilled for each chunk: a 1 MiB allocation per chunk kept V8's helper threads
  // busy collecting them (half the simulator's CPU on an export).
  const shared = options.reuseBuffers ? Buffer.allocUnsafeSlow(CHUNK) : undefined
  for (const disk of plan.disks) {
    const handle = await fsp.open(sim.disks.path(disk.uuid), 'r')
    try {
      const chunks = Math.max(1, Math.ceil(disk.size / CHUNK))
      let number = 0
      for (let i = 0; i < chunks; i++) {
        options.signal.throwIfAborted()
        if (options.keepalive && i > 0 && i % 2 === 1) {
          yield* entry(`${disk.id}/${String(number).padStart(8, '0')}`, Buffer.alloc(0))
          number++
        }
        const length = Math.min(CHUNK, disk.size - i * CHUNK)
        const buf = shared ? shared.subarray(0, length) : Buffer.allocUnsafe(length)
        const { bytesRead } = await handle.read(buf, 0, length, i * CHUNK)
        buf.fill(0, bytesRead)
        const keep = i === 0 || i === chunks - 1 || !isZero(buf)
        if (keep) yield* entry(`${disk.id}/${String(number).padStart(8, '0')}`, buf)
        number++
        done += length
        options.onProgress?.(done, total)
        if (keep && options.stallMs > 0 && !stalled) {
          stalled = true
          await sleep(options.stallMs, undefined, { signal: options.signal })
        }
      }
    } finally {
      await handle.close()
    }
  }
  yield TAR_END
}
