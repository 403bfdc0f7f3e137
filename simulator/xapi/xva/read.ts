// XVA import as xapi does it (import.ml, stream_vdi.ml recv_all_vdi): compression sniffed,
// ova.xml first, objects created, then each disk's chunks read in order with every checksum
// checked, gaps filled with zeros, the last chunk required. On failure everything created is
// removed again (unless force), but a VM replaced by restore=true stays destroyed, as in xapi.
import { randomUUID } from 'node:crypto'
import { Readable } from 'node:stream'
import { createGunzip } from 'node:zlib'
import { ByteReader, readTar, type TarEntry } from './tar-read.js'
import type { SimContext } from '../model/context.js'
import type { Rec } from '../model/db.js'
import { CHUNK } from '../model/disks.js'
import { DiskWriter } from '../model/disk-writer.js'
import { XapiFailure } from '../model/errors.js'
import { macFor, newVbdRecord, refreshVmOps } from '../model/factory.js'
import { NULL_REF, SCHEMA } from '../model/schema.js'
import { assertSrCanCreate, createVbd, createVdi, createVif, destroyVdi } from '../model/storage.js'
import { setProgress } from '../model/tasks.js'
import { addVtpm } from '../model/vtpm.js'
import { destroyVmWithDevices } from '../model/vmops.js'
import { checksumOf } from './write.js'
import { zstdDecompressor } from './zstd.js'
import { parseValueFragment } from '../model/xmlrpc.js'

type Entry = TarEntry

const MAX_OVA_XML = 64 * 1024 * 1024
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd])

export interface ImportOptions {
  srRef: string
  restore: boolean
  force: boolean
  task: string
  signal: AbortSignal
  /**
   * /import_metadata: the archive is ova.xml alone, and each disk is a VDI that exists: the one
   * this maps its uuid to (query vdi:<uuid>=<uuid>), or the one at the same SR and location.
   */
  metadata?: { vdiMap: Map<string, string> }
}

interface OvaObject {
  cls: string
  id: string
  snapshot: Rec
}

/** Whether a block is a tar header with a valid checksum (so the stream is an uncompressed tar). */
function isTarHeader(block: Buffer): boolean {
  if (block.length < 512) return false
  const stored = parseInt(block.subarray(148, 156).toString('ascii').replace(/\0.*$/s, '').trim(), 8)
  let sum = 0
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : block[i]!
  return Number.isFinite(stored) && stored === sum
}

/** Sniffs the head and reads the tar from the body itself, or through a decompressor. */
async function openArchive(body: Readable, stallMs: number, signal: AbortSignal): Promise<ByteReader> {
  const raw = new ByteReader(body, stallMs ? { stall: { afterBytes: 1024 * 1024, ms: stallMs, signal } } : {})
  const first = await raw.peek(512)
  if (isTarHeader(first)) return raw
  if (first.length === 0) throw new XapiFailure('IMPORT_ERROR_PREMATURE_EOF')
  const decompressor = first.subarray(0, 4).equals(ZSTD_MAGIC) ? zstdDecompressor() : createGunzip()
  const whole = Readable.from(raw.rest())
  whole.pipe(decompressor)
  whole.on('error', (error) => decompressor.destroy(error))
  decompressor.on('close', () => whole.destroy())
  return new ByteReader(decompressor, { owned: true, upstream: raw })
}

/** ova.xml read: its version accepted (checkVersion), its objects. */
async function readOva(sim: SimContext, data: Buffer): Promise<OvaObject[]> {
  const header = (await parseValueFragment(data.toString('utf8')).catch((e: unknown) => {
    throw new XapiFailure('IMPORT_ERROR', `ova.xml: ${e instanceof Error ? e.message : String(e)}`)
  })) as { version?: Rec; objects?: { class?: unknown; id?: unknown; snapshot?: unknown }[] }
  checkVersion(sim, header.version)
  if (!Array.isArray(header.objects)) throw new XapiFailure('IMPORT_ERROR', 'ova.xml has no objects')
  return header.objects.map((o) => ({
    cls: String(o.class),
    id: String(o.id),
    snapshot: (o.snapshot ?? {}) as Rec,
  }))
}

/** A VM the import made, the import's operation on it ended. */
function endImportOp(sim: SimContext, vm: string, task: string): void {
  const ops = { ...(sim.db.require('VM', vm).current_operations as Rec) }
  delete ops[task]
  sim.db.update('VM', vm, { current_operations: ops })
  refreshVmOps(sim, vm)
}

/**
 * The archive's entries one by one (`nextEntry`), and `guard`, which ends any wait when the body
 * breaks or the client goes: an entry stream being read when the archive breaks is not always
 * ended by the parser.
 */
function archiveEntries(sim: SimContext, body: Readable, signal: AbortSignal) {
  let archive: ByteReader | undefined
  const stall = sim.faults.get('import-stall')
  const feeding = openArchive(body, stall ? Number(stall.arg) * 1000 : 0, signal).then((reader) => {
    archive = reader
    return readTar(reader, MAX_OVA_XML)[Symbol.asyncIterator]()
  })
  feeding.catch(() => undefined)
  const broken = new Promise<never>((_resolve, reject) => {
    feeding.catch(reject)
    const gone = (): void => reject(new XapiFailure('IMPORT_ERROR_PREMATURE_EOF'))
    if (signal.aborted) gone()
    else signal.addEventListener('abort', gone, { once: true })
  })
  broken.catch(() => undefined)
  const guard = <T>(work: Promise<T>): Promise<T> => Promise.race([work, broken])
  const nextEntry = async (): Promise<Entry | undefined> => {
    const entries = await guard(feeding)
    const next = await guard(entries.next())
    return next.done ? undefined : next.value
  }
  return { nextEntry, guard, feeding, close: () => archive?.close() }
}

/** Reads an XVA from `body` into the pool; returns the refs of the VMs created. */
export async function importXva(sim: SimContext, body: Readable, options: ImportOptions): Promise<string[]> {
  const created = { vms: [] as string[], vdis: [] as string[], networks: [] as string[] }
  const { nextEntry, guard, feeding, close } = archiveEntries(sim, body, options.signal)
  try {
    const ova = await nextEntry()
    if (!ova) throw new XapiFailure('IMPORT_ERROR_PREMATURE_EOF')
    if (ova.header.name !== 'ova.xml')
      throw new XapiFailure('IMPORT_ERROR_UNEXPECTED_FILE', 'ova.xml', ova.header.name)
    const objects = await readOva(sim, ova.data)
    const plan = options.metadata ? [] : planDisks(objects)
    if (options.restore) assertCanRestore(sim, objects, options.force)

    let total = 0
    for (const disk of plan) total += disk.size
    for (const disk of plan) assertSrCanCreate(sim, options.srRef, disk.size)
    if (!options.metadata) assertSrCanCreate(sim, options.srRef, total)

    const refOf = await createObjects(sim, objects, options, created)
    let done = 0
    for (const disk of plan) {
      const vdiRef = refOf.get(disk.id)!
      const uuid = String(sim.db.require('VDI', vdiRef).uuid)
      await receiveDisk(sim, disk, uuid, nextEntry, guard, options, (bytes) => {
        done += bytes
        if (total > 0) setProgress(sim, options.task, Math.min(0.99, done / total))
      })
    }
    const trailing = await nextEntry()
    if (trailing) throw new XapiFailure('IMPORT_ERROR_UNEXPECTED_FILE', '', trailing.header.name)
    await feeding
    if (sim.faults.get('import-fail')) throw new XapiFailure('VDI_IO_ERROR', 'Device I/O errors')
    for (const vm of created.vms) endImportOp(sim, vm, options.task)
    // The result lists the VMs made, snapshots only when nothing else was imported.
    const vms = created.vms.filter((vm) => !sim.db.require('VM', vm).is_a_snapshot)
    return vms.length ? vms : created.vms
  } catch (error) {
    close()
    if (!options.force) {
      for (const vm of created.vms) await destroyVmWithDevices(sim, vm, false)
      for (const vdi of created.vdis)
        if (sim.db.has('VDI', vdi)) await destroyVdi(sim, vdi).catch(() => undefined)
    }
    throw translateError(error)
  }
}

function translateError(error: unknown): unknown {
  if (error instanceof XapiFailure) return error
  const message = error instanceof Error ? error.message : String(error)
  if (/unexpected end|premature|aborted|ECONNRESET/i.test(message))
    return new XapiFailure('IMPORT_ERROR_PREMATURE_EOF')
  return new XapiFailure('IMPORT_ERROR', message)
}

function checkVersion(sim: SimContext, version: Rec | undefined): void {
  const major = Number(version?.xapi_major)
  const minor = Number(version?.xapi_minor)
  if (!Number.isFinite(major) || !Number.isFinite(minor))
    throw new XapiFailure('IMPORT_ERROR', 'ova.xml has no version')
  const { xapiMajor, xapiMinor } = sim.settings
  if (major > xapiMajor || (major === xapiMajor && minor > xapiMinor))
    throw new XapiFailure('IMPORT_INCOMPATIBLE_VERSION')
  if (Number(version?.export_vsn) < 2)
    throw new XapiFailure('IMPORT_ERROR', 'unsupported export_vsn (legacy XVA)')
}

interface DiskPlan {
  id: string
  size: number
}

/** The disks the archive must carry: non-CD VBDs on non-ISO SRs, sorted by id as strings. */
function planDisks(objects: OvaObject[]): DiskPlan[] {
  const byId = new Map(objects.map((o) => [o.id, o]))
  const ids = new Set<string>()
  for (const o of objects) {
    if (o.cls !== 'VBD' || o.snapshot.type === 'CD' || o.snapshot.empty === true) continue
    const vdi = byId.get(String(o.snapshot.VDI))
    if (!vdi) throw new XapiFailure('IMPORT_ERROR_FAILED_TO_FIND_OBJECT', String(o.snapshot.VDI))
    const sr = byId.get(String(vdi.snapshot.SR))
    if (sr?.snapshot.content_type === 'iso') continue
    ids.add(vdi.id)
  }
  return [...ids]
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((id) => {
      const size = Number(byId.get(id)!.snapshot.virtual_size)
      if (!Number.isSafeInteger(size) || size < 0)
        throw new XapiFailure('IMPORT_ERROR', `bad virtual_size for ${id}`)
      return { id, size }
    })
}

/**
 * import.ml's VDI handler for a metadata import: the VDI the map names (by uuid), else the one
 * on the same SR (found by uuid) at the same location; else VDI_LOCATION_MISSING [sr; location]
 * when the SR is here, VDI_CONTENT_ID_MISSING [] when not; with force the disk is left out.
 */
function findDisks(sim: SimContext, objects: OvaObject[], options: ImportOptions): Map<string, string> {
  const byId = new Map(objects.map((o) => [o.id, o]))
  const found = new Map<string, string>()
  for (const o of objects) {
    if (o.cls !== 'VDI') continue
    const vdi = o.snapshot
    const mapped = options.metadata!.vdiMap.get(String(vdi.uuid))
    const byMap = mapped === undefined ? undefined : sim.db.refByUuid('VDI', mapped)
    if (byMap) {
      found.set(o.id, byMap)
      continue
    }
    const original = byId.get(String(vdi.SR))?.snapshot
    if (original?.content_type === 'iso') {
      // An ISO is looked for in every ISO SR by location; none found: the drive is emptied.
      const iso = sim.db
        .all('VDI')
        .find(([, r]) => r.location === vdi.location && sim.db.get('SR', r.SR)?.content_type === 'iso')
      if (iso) found.set(o.id, iso[0])
      continue
    }
    const srUuid = original?.uuid
    const sr = srUuid === undefined ? undefined : sim.db.refByUuid('SR', String(srUuid))
    const here = sr
      ? sim.db.all('VDI').find(([, r]) => r.SR === sr && r.location === vdi.location)?.[0]
      : undefined
    if (here) found.set(o.id, here)
    else if (options.force) continue
    else if (sr) throw new XapiFailure('VDI_LOCATION_MISSING', sr, String(vdi.location))
    else throw new XapiFailure('VDI_CONTENT_ID_MISSING')
  }
  return found
}

/**
 * The uuid of the VM a snapshot was taken of (import.ml get_vm_uuid_of_snap): from its VM while
 * that exists, else from the record the snapshot kept of it (snapshot_metadata).
 */
function snapshotOfUuid(sim: SimContext, snap: Rec): string | undefined {
  const of = sim.db.get('VM', snap.snapshot_of)
  if (of) return String(of.uuid)
  return /\('uuid' '([^']*)'\)/.exec(String(snap.snapshot_metadata))?.[1]
}

/** restore=true: DUPLICATE_MAC_SEED and the rules for replacing a VM with the same uuid. */
function assertCanRestore(sim: SimContext, objects: OvaObject[], force: boolean): void {
  for (const o of objects) {
    if (o.cls !== 'VM') continue
    const uuid = String(o.snapshot.uuid)
    const seed = (o.snapshot.other_config as Record<string, string> | undefined)?.mac_seed
    const existing = sim.db.refByUuid('VM', uuid)
    for (const [ref, vm] of sim.db.all('VM')) {
      const same = ref === existing || (vm.is_a_snapshot && snapshotOfUuid(sim, vm) === uuid)
      if (seed && (vm.other_config as Record<string, string>).mac_seed === seed && !same) {
        throw new XapiFailure('DUPLICATE_MAC_SEED', seed)
      }
    }
    if (!existing) continue
    const vm = sim.db.require('VM', existing)
    if (vm.power_state !== 'Halted' && !force) {
      throw new XapiFailure('VM_BAD_POWER_STATE', existing, 'halted', String(vm.power_state).toLowerCase())
    }
    const version = Number(o.snapshot.version ?? 0)
    if (Number(vm.version) >= version && !force) {
      throw new XapiFailure(
        'VM_TO_IMPORT_IS_NOT_NEWER_VERSION',
        existing,
        String(vm.version),
        String(version),
      )
    }
  }
}

/** What an import has made so far: the archive's ids mapped to new refs, and what to undo. */
interface Importing {
  sim: SimContext
  objects: OvaObject[]
  options: ImportOptions
  created: { vms: string[]; vdis: string[]; networks: string[] }
  refOf: Map<string, string>
}

/** A record's fields as the schema has them, numbers made numbers. */
function pick(cls: string, snapshot: Rec): Rec {
  const out: Rec = {}
  for (const [field, type] of Object.entries(SCHEMA[cls]!.fields)) {
    const value = snapshot[field]
    if (value === undefined) continue
    out[field] = type === 'i' ? Number(value) : type === 'f' ? Number(value) : value
  }
  return out
}

/** Creates networks, VDIs, VMs, VBDs and VIFs; returns the map from archive id to new ref. */
async function createObjects(
  sim: SimContext,
  objects: OvaObject[],
  options: ImportOptions,
  created: { vms: string[]; vdis: string[]; networks: string[] },
): Promise<Map<string, string>> {
  const at: Importing = { sim, objects, options, created, refOf: new Map() }
  importNetworks(at)
  await importDisks(at)
  importGuestMetrics(at)
  await importVms(at)
  for (const o of objects.filter((x) => x.cls === 'VBD')) importVbd(at, o.snapshot)
  for (const o of objects.filter((x) => x.cls === 'VIF')) importVif(at, o.snapshot)
  for (const o of objects.filter((x) => x.cls === 'VTPM')) importVtpm(at, o.snapshot)
  return at.refOf
}

/** Guest metrics: a record made from the archive's (import.ml), for its VM. */
function importGuestMetrics(at: Importing): void {
  for (const o of at.objects.filter((x) => x.cls === 'VM_guest_metrics')) {
    const { uuid: _uuid, ...fields } = pick('VM_guest_metrics', o.snapshot)
    at.refOf.set(o.id, at.sim.db.create('VM_guest_metrics', fields))
  }
}

/** Networks: one of the same name (or bridge) is used, else made. */
function importNetworks(at: Importing): void {
  const { sim, objects, refOf, created } = at
  for (const o of objects.filter((x) => x.cls === 'network')) {
    const want = o.snapshot
    const found =
      sim.db.all('network').find(([, n]) => n.name_label === want.name_label) ??
      sim.db.all('network').find(([, n]) => want.bridge && n.bridge === want.bridge)
    if (found) refOf.set(o.id, found[0])
    else {
      const ref = sim.db.create('network', {
        ...pick('network', want),
        uuid: randomUUID(),
        VIFs: [],
        PIFs: [],
      })
      created.networks.push(ref)
      refOf.set(o.id, ref)
    }
  }
}

/** Disks: found for a metadata import, else made empty, their data to come. */
async function importDisks(at: Importing): Promise<void> {
  const { sim, options, refOf, created, objects } = at
  const byId = new Map(objects.map((o) => [o.id, o]))
  if (options.metadata) for (const [id, ref] of findDisks(sim, objects, options)) refOf.set(id, ref)
  for (const disk of options.metadata ? [] : planDisks(objects)) {
    const snap = byId.get(disk.id)!.snapshot
    const ref = await createVdi(sim, {
      name_label: String(snap.name_label ?? ''),
      name_description: String(snap.name_description ?? ''),
      SR: options.srRef,
      virtual_size: disk.size,
      type: String(snap.type ?? 'user'),
      sharable: Boolean(snap.sharable),
      read_only: Boolean(snap.read_only),
      other_config: (snap.other_config as Rec) ?? {},
      xenstore_data: {},
      sm_config: {},
      tags: (snap.tags as string[]) ?? [],
    })
    created.vdis.push(ref)
    refOf.set(disk.id, ref)
  }
}

/** VMs: halted, a new uuid unless restored (an existing one replaced then, as xapi's Replace). */
async function importVms(at: Importing): Promise<void> {
  const { sim, options, refOf, created, objects } = at
  for (const o of objects.filter((x) => x.cls === 'VM')) {
    const existing = options.restore ? sim.db.refByUuid('VM', String(o.snapshot.uuid)) : undefined
    if (existing) {
      // xapi's Replace: the old VM's VIFs, VBDs and record go first; its VDIs stay.
      await destroyVmWithDevices(sim, existing, false)
    }
    const fields = pick('VM', o.snapshot)
    const otherConfig = { ...((fields.other_config as Record<string, string>) ?? {}) }
    if (!options.restore) otherConfig.mac_seed = randomUUID()
    const ref = sim.db.create('VM', {
      ...fields,
      uuid: options.restore ? String(o.snapshot.uuid) : randomUUID(),
      other_config: otherConfig,
      version: options.restore ? Number(fields.version ?? 0) + 1 : 0,
      power_state: 'Halted',
      resident_on: NULL_REF,
      affinity: NULL_REF,
      snapshot_of: NULL_REF,
      parent: NULL_REF,
      VBDs: [],
      VIFs: [],
      VTPMs: [],
      VUSBs: [],
      snapshots: [],
      children: [],
      consoles: [],
      current_operations: { [options.task]: 'import' },
      allowed_operations: [],
      domid: -1,
      guest_metrics: refOf.get(String(fields.guest_metrics)) ?? NULL_REF,
    })
    created.vms.push(ref)
    refOf.set(o.id, ref)
  }
}

/** A VBD, onto the VM and disk made for its ids (empty when no disk was). */
function importVbd(at: Importing, s: Rec): void {
  const { sim, refOf } = at
  const vm = refOf.get(String(s.VM))
  if (!vm) return
  const vdi = refOf.get(String(s.VDI))
  createVbd(sim, {
    ...newVbdRecord({}),
    VM: vm,
    VDI: vdi ?? NULL_REF,
    device: String(s.device ?? ''),
    userdevice: String(s.userdevice),
    bootable: Boolean(s.bootable),
    mode: String(s.mode ?? 'RW'),
    type: String(s.type ?? 'Disk'),
    empty: vdi === undefined,
    unpluggable: s.unpluggable !== false,
    other_config: (s.other_config as Rec) ?? {},
    qos_algorithm_type: String(s.qos_algorithm_type ?? ''),
    qos_algorithm_params: (s.qos_algorithm_params as Rec) ?? {},
  })
}

/** A VIF: the MAC kept by a restore, else derived from the VM's seed. */
function importVif(at: Importing, s: Rec): void {
  const { sim, options, refOf } = at
  const vm = refOf.get(String(s.VM))
  const network = refOf.get(String(s.network))
  if (!vm || !network) return
  const seed = String(
    (sim.db.require('VM', vm).other_config as Record<string, string>).mac_seed ?? randomUUID(),
  )
  createVif(sim, {
    VM: vm,
    network,
    device: String(s.device),
    MAC: options.restore && s.MAC ? String(s.MAC) : macFor(seed, String(s.device)),
    MTU: Number(s.MTU ?? 1500),
    MAC_autogenerated: !options.restore,
    other_config: (s.other_config as Rec) ?? {},
  })
}

/** A vTPM with its contents; a restore keeps its uuid. */
function importVtpm(at: Importing, s: Rec): void {
  const { sim, options, refOf } = at
  const vm = refOf.get(String(s["vTPM'_VM"]))
  if (!vm) throw new XapiFailure('IMPORT_ERROR', `Failed to find VTPM's VM: ${String(s["vTPM'_VM"])}`)
  const uuid = String(s["vTPM'_uuid"] ?? '')
  // import.ml VTPM precheck: a full restore keeps the uuid, and refuses one that exists.
  if (options.restore && uuid && sim.db.refByUuid('VTPM', uuid))
    throw new XapiFailure('IMPORT_ERROR', `A VTPM with UUID ${uuid} already exists`)
  addVtpm(sim, vm, {
    contents: String(s["vTPM'_content"] ?? ''),
    isUnique: s["vTPM'_is_unique"] === true,
    isProtected: s["vTPM'_is_protected"] === true,
    ...(options.restore && uuid ? { uuid } : {}),
  })
}

/** The checksum entry after chunk `name` (.xxhash or .checksum), matching its data unless forced. */
function checkChunkSum(sumEntry: Entry | undefined, name: string, data: Buffer, force: boolean): void {
  if (!sumEntry) throw new XapiFailure('IMPORT_ERROR_PREMATURE_EOF')
  const kind =
    sumEntry.header.name === `${name}.xxhash`
      ? 'xxhash'
      : sumEntry.header.name === `${name}.checksum`
        ? 'sha1'
        : undefined
  if (!kind) throw new XapiFailure('IMPORT_ERROR', `Found unsupported checksum file: ${sumEntry.header.name}`)
  if (sumEntry.data.toString('ascii') !== checksumOf(kind, data) && !force)
    throw new XapiFailure('IMPORT_ERROR_SOME_CHECKSUMS_FAILED')
}

/** Reads one disk's entries: `<id>/<n>` data then its checksum entry, names strictly increasing. */
async function receiveDisk(
  sim: SimContext,
  disk: DiskPlan,
  uuid: string,
  nextEntry: () => Promise<Entry | undefined>,
  guard: <T>(work: Promise<T>) => Promise<T>,
  options: ImportOptions,
  progress: (bytes: number) => void,
): Promise<void> {
  await sim.disks.writable(uuid)
  const writer = await DiskWriter.open(sim.disks.path(uuid), CHUNK)
  let firstChunkLength: number | undefined
  let offset = 0
  let last: string | undefined
  let lastNumber = -1
  try {
    while (offset < disk.size || (disk.size === 0 && last === undefined)) {
      options.signal.throwIfAborted()
      const entry = await nextEntry()
      if (!entry) throw new XapiFailure('IMPORT_ERROR_PREMATURE_EOF')
      const name = entry.header.name
      const prefix = `${disk.id}/`
      const suffix = name.slice(prefix.length)
      if (!name.startsWith(prefix) || !/^\d+$/.test(suffix)) {
        throw new XapiFailure('IMPORT_ERROR_UNEXPECTED_FILE', `${prefix}<chunk>`, name)
      }
      if (last !== undefined && !(suffix > last)) {
        throw new XapiFailure('IMPORT_ERROR_UNEXPECTED_FILE', `${prefix}(after ${last})`, name)
      }
      const data = entry.data
      if (data.length > 16 * 1024 * 1024) throw new XapiFailure('IMPORT_ERROR', `chunk ${name} is too large`)
      const number = Number(suffix)
      firstChunkLength ??= data.length
      const gap = number - lastNumber - 1
      offset += gap * firstChunkLength
      if (offset + data.length > disk.size)
        throw new XapiFailure('IMPORT_ERROR', `chunk ${name} goes past the end of the disk`)
      checkChunkSum(await nextEntry(), name, data, options.force)
      if (data.length) {
        await writer.write(data, offset)
        sim.disks.touch(uuid, offset, data.length)
      }
      offset += data.length
      progress(data.length + gap * firstChunkLength)
      last = suffix
      lastNumber = number
      if (disk.size === 0) break
    }
    await writer.close()
  } finally {
    await writer.close().catch(() => undefined)
  }
}
