// A streaming XVA verifier. It reads the tar stream as it arrives and checks what xapi's
// importer checks, and a little more: ova.xml first; then for each disk (in Ref-id string
// order) its chunks with names strictly increasing, each followed by a matching checksum entry
// (.xxhash XXH64 or .checksum SHA-1); gaps and zero-length keep-alive entries handled as xapi
// does; the last chunk reaching the disk's size exactly; the tar end marker. Memory stays flat.
import { createHash, type Hash } from 'node:crypto'
import { DpxenError } from '../core/errors.js'
import { parseValue } from '../core/xml-parse.js'
import { newXxh64, type Xxh64 } from '../core/xxh64.js'
import type { Verifier } from './check.js'

const BLOCK = 512
const MAX_CHUNK = 1024 * 1024
const MAX_OVA_XML = 64 * 1024 * 1024
const ZERO_BLOCK = Buffer.alloc(BLOCK)

export interface XvaDisk {
  id: string
  virtualSize: number
  /** Data bytes carried (chunks present). */
  dataBytes: number
  chunks: number
  /** From ova.xml: what the VBD and VDI said. */
  userdevice: string
  bootable: boolean
  mode: string
  name: string
  srName: string
  srUuid: string
}

export interface XvaSummary {
  vm: {
    name: string
    uuid: string
    isTemplate: boolean
    powerState: string
    version: string
    otherConfig: Record<string, string>
  }
  vifs: { device: string; mac: string; network: string }[]
  disks: XvaDisk[]
  /** The vTPMs the file carries, with their contents (base64; a secret: never logged). */
  vtpms: { contents: string }[]
  checksum: 'xxhash' | 'sha1' | 'none'
  /** Bytes of the uncompressed tar stream. */
  tarBytes: number
  xapiVersion: string
}

type Rec = Record<string, unknown>

function invalid(message: string): DpxenError {
  return new DpxenError('XVA_INVALID', message)
}

function parseOctal(field: Buffer, what: string): number {
  if (field[0]! & 0x80) throw invalid(`${what}: size in base-256 form (too large for an XVA entry)`)
  const text = field.toString('ascii').replace(/\0.*$/s, '').trim()
  if (text === '') return 0
  if (!/^[0-7]+$/.test(text)) throw invalid(`${what}: bad octal number "${text}"`)
  return parseInt(text, 8)
}

function headerName(header: Buffer): string {
  const name = header.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '')
  const ustar = header.subarray(257, 262).toString('ascii') === 'ustar'
  const prefix = ustar ? header.subarray(345, 500).toString('utf8').replace(/\0.*$/s, '') : ''
  return prefix ? `${prefix}/${name}` : name
}

function checkHeaderSum(header: Buffer, offset: number): void {
  const stored = parseOctal(header.subarray(148, 156), `tar header at byte ${offset}`)
  let unsigned = 0
  let signed = 0
  for (let i = 0; i < BLOCK; i++) {
    const byte = i >= 148 && i < 156 ? 32 : header[i]!
    unsigned += byte
    signed += byte > 127 ? byte - 256 : byte
  }
  if (stored !== unsigned && stored !== signed)
    throw invalid(`tar header at byte ${offset} has a bad checksum (not a tar stream, or corrupt)`)
}

interface DiskState {
  plan: { id: string; size: number }
  offset: number
  lastName?: string
  lastNumber: number
  firstChunkLength?: number
  dataBytes: number
  chunks: number
}

type Entry =
  | { kind: 'ova'; parts: Buffer[]; size: number }
  | {
      kind: 'chunk'
      name: string
      number: number
      size: number
      xxh: Xxh64 | undefined
      sha: Hash | undefined
    }
  | { kind: 'sum'; name: string; type: 'xxhash' | 'sha1'; parts: Buffer[] }

/** An object of ova.xml: its class, id and record. */
type OvaObject = { class?: string; id?: string; snapshot?: Rec }

/** The disks ova.xml describes (not CDs, empty drives or ISOs), each once. */
function ovaDisks(objects: OvaObject[], byId: Map<string, OvaObject>): XvaDisk[] {
  const disks: XvaDisk[] = []
  for (const o of objects) {
    const vbd = o.snapshot ?? {}
    if (o.class !== 'VBD' || vbd.type === 'CD' || vbd.empty === true) continue
    const vdiObj = byId.get(String(vbd.VDI))
    if (!vdiObj) throw invalid(`ova.xml: VBD ${o.id} points at ${String(vbd.VDI)}, which is not in the file`)
    const vdi = vdiObj.snapshot ?? {}
    const sr = byId.get(String(vdi.SR))?.snapshot ?? {}
    if (sr.content_type === 'iso') continue
    const size = Number(vdi.virtual_size)
    if (!Number.isSafeInteger(size) || size < 0)
      throw invalid(`ova.xml: disk ${vdiObj.id} has a bad virtual_size`)
    if (disks.some((d) => d.id === vdiObj.id)) continue
    disks.push({
      id: String(vdiObj.id),
      virtualSize: size,
      dataBytes: 0,
      chunks: 0,
      userdevice: String(vbd.userdevice ?? ''),
      bootable: vbd.bootable === true,
      mode: String(vbd.mode ?? 'RW'),
      name: String(vdi.name_label ?? ''),
      srName: String(sr.name_label ?? ''),
      srUuid: String(sr.uuid ?? ''),
    })
  }
  return disks
}

export class XvaVerifier implements Verifier<XvaSummary> {
  /** The header being collected: copied, since a pushed buffer may be reused once push returns. */
  #header = Buffer.alloc(BLOCK)
  #pendingBytes = 0
  /** Bytes left of the current entry's data, then of its padding. */
  #dataLeft = 0
  #padLeft = 0
  #entry: Entry | undefined
  #offset = 0
  #entries = 0
  #ended = false
  #ovaSeen = false
  #summary: Omit<XvaSummary, 'tarBytes' | 'checksum'> | undefined
  #plan: { id: string; size: number }[] = []
  #disk: DiskState | undefined
  #diskIndex = -1
  #lastChunk: { name: string; sum: string; type?: 'xxhash' | 'sha1' } | undefined
  #checksumKind: XvaSummary['checksum'] = 'none'
  #diskResults: { dataBytes: number; chunks: number }[] = []
  /** Whether each chunk's data is hashed and compared with its checksum entry. */
  readonly #checksums: boolean
  /** A VM's metadata (/export_metadata): ova.xml names disks the archive does not carry. */
  readonly #metadataOnly: boolean

  /**
   * With `checksums: false` the layout is still checked in full (ova.xml, every entry, every
   * disk reaching its size, the end marker): only hashing the chunks is left out.
   */
  constructor(options: { checksums?: boolean; metadataOnly?: boolean } = {}) {
    this.#checksums = options.checksums !== false
    this.#metadataOnly = options.metadataOnly === true
  }

  /**
   * Feeds bytes of the (uncompressed) tar stream. Throws XVA_INVALID at the first problem.
   * Nothing of `chunk` is kept after the call: the caller may reuse it.
   */
  push(chunk: Buffer): void {
    let buf = chunk
    while (buf.length > 0) {
      if (this.#ended) {
        // After the end marker only zero padding may follow.
        if (buf.some((b) => b !== 0)) throw invalid(`data after the tar end marker at byte ${this.#offset}`)
        this.#offset += buf.length
        return
      }
      if (this.#dataLeft > 0) {
        const take = Math.min(this.#dataLeft, buf.length)
        this.#feed(buf.subarray(0, take))
        this.#dataLeft -= take
        this.#offset += take
        buf = buf.subarray(take)
        if (this.#dataLeft === 0) this.#endEntry()
        continue
      }
      if (this.#padLeft > 0) {
        const take = Math.min(this.#padLeft, buf.length)
        this.#padLeft -= take
        this.#offset += take
        buf = buf.subarray(take)
        continue
      }
      // Collect a 512-byte header (it may span chunks).
      const need = BLOCK - this.#pendingBytes
      const take = Math.min(need, buf.length)
      buf.copy(this.#header, this.#pendingBytes, 0, take)
      this.#pendingBytes += take
      buf = buf.subarray(take)
      if (this.#pendingBytes < BLOCK) return
      this.#pendingBytes = 0
      this.#startEntry(this.#header)
      this.#offset += BLOCK
    }
  }

  #feed(data: Buffer): void {
    const entry = this.#entry!
    if (entry.kind === 'chunk') {
      entry.xxh?.update(data)
      entry.sha?.update(data)
    } else entry.parts.push(Buffer.from(data))
  }

  #startEntry(header: Buffer): void {
    if (header.equals(ZERO_BLOCK)) {
      if (this.#lastChunk) throw invalid(`chunk ${this.#lastChunk.name} has no checksum entry`)
      this.#finishDisk()
      if (this.#diskIndex + 1 < this.#plan.length) {
        throw invalid(`the archive ends before disk ${this.#plan[this.#diskIndex + 1]!.id} (truncated?)`)
      }
      if (!this.#ovaSeen) throw invalid('the archive has no ova.xml')
      this.#ended = true
      return
    }
    checkHeaderSum(header, this.#offset)
    const type = String.fromCharCode(header[156]!)
    const name = headerName(header)
    if (type !== '0' && type !== '\0')
      throw invalid(`entry "${name}" is not a plain file (tar type "${type}")`)
    const size = parseOctal(header.subarray(124, 136), `entry "${name}"`)
    this.#entries++
    this.#dataLeft = size
    this.#padLeft = (BLOCK - (size % BLOCK)) % BLOCK
    if (!this.#ovaSeen) {
      if (name !== 'ova.xml') throw invalid(`the first entry is "${name}", not ova.xml (not an XVA)`)
      if (size > MAX_OVA_XML) throw invalid(`ova.xml is ${size} bytes, more than an XVA has`)
      this.#entry = { kind: 'ova', parts: [], size }
    } else if (this.#lastChunk) {
      const { name: chunkName } = this.#lastChunk
      const sumType =
        name === `${chunkName}.xxhash` ? 'xxhash' : name === `${chunkName}.checksum` ? 'sha1' : undefined
      if (!sumType) throw invalid(`chunk ${chunkName} is followed by "${name}", not its checksum entry`)
      if (this.#checksumKind !== 'none' && this.#checksumKind !== sumType)
        throw invalid(`mixed checksum kinds at ${name}`)
      if (size !== (sumType === 'xxhash' ? 16 : 40)) throw invalid(`checksum entry ${name} has ${size} bytes`)
      this.#entry = { kind: 'sum', name, type: sumType, parts: [] }
    } else {
      this.#startChunk(name, size)
    }
    if (size === 0) this.#endEntry()
  }

  #startChunk(name: string, size: number): void {
    const match = /^(Ref:[^/]+)\/(\d+)$/.exec(name)
    if (!match) throw invalid(`unexpected entry "${name}" (expected a disk chunk such as Ref:12/00000000)`)
    const [, id, digits] = match as unknown as [string, string, string]
    if (this.#disk?.plan.id !== id) {
      this.#finishDisk()
      const next = this.#plan[this.#diskIndex + 1]
      if (!next || next.id !== id) {
        throw invalid(
          `chunk ${name} belongs to no disk expected here (expected ${next ? `${next.id}/…` : 'the end of the archive'})`,
        )
      }
      this.#diskIndex++
      this.#disk = { plan: next, offset: 0, lastNumber: -1, dataBytes: 0, chunks: 0 }
    }
    const disk = this.#disk!
    if (disk.lastName !== undefined && !(digits > disk.lastName))
      throw invalid(`chunk ${name} comes after ${id}/${disk.lastName} (out of order)`)
    if (size > MAX_CHUNK) throw invalid(`chunk ${name} is ${size} bytes, more than 1 MiB`)
    const number = Number(digits)
    const gap = number - disk.lastNumber - 1
    const firstLength = disk.firstChunkLength ?? size
    const start = disk.offset + gap * firstLength
    if (start + size > disk.plan.size)
      throw invalid(`chunk ${name} reaches past the end of the disk (${disk.plan.size} bytes)`)
    // Only the digest the archive uses (both until its first checksum entry says which).
    const kind = this.#checksums ? this.#checksumKind : undefined
    this.#entry = {
      kind: 'chunk',
      name,
      number,
      size,
      xxh: kind === undefined || kind === 'sha1' ? undefined : newXxh64(),
      sha: kind === undefined || kind === 'xxhash' ? undefined : createHash('sha1'),
    }
  }

  #endEntry(): void {
    const entry = this.#entry!
    this.#entry = undefined
    if (entry.kind === 'ova') {
      this.#readOva(Buffer.concat(entry.parts).toString('utf8'))
      this.#ovaSeen = true
      return
    }
    if (entry.kind === 'chunk') {
      const disk = this.#disk!
      const gap = entry.number - disk.lastNumber - 1
      disk.firstChunkLength ??= entry.size
      disk.offset += gap * disk.firstChunkLength + entry.size
      disk.lastName = entry.name.split('/')[1]
      disk.lastNumber = entry.number
      disk.dataBytes += entry.size
      disk.chunks++
      this.#lastChunk = {
        name: entry.name,
        sum: '',
      }
      // Keep both digests until we know which kind the archive uses.
      this.#lastDigests = {
        xxhash: entry.xxh ? entry.xxh.digest().toString(16).toUpperCase().padStart(16, '0') : '',
        sha1: entry.sha ? entry.sha.digest('hex') : '',
      }
      return
    }
    const text = Buffer.concat(entry.parts).toString('ascii')
    const expected = this.#lastDigests![entry.type]
    if (this.#checksums && text !== expected)
      throw invalid(`bad checksum for chunk ${this.#lastChunk!.name} (the data is corrupt)`)
    this.#checksumKind = entry.type
    this.#lastChunk = undefined
  }

  #lastDigests: { xxhash: string; sha1: string } | undefined

  #finishDisk(): void {
    const disk = this.#disk
    if (!disk) return
    if (disk.offset !== disk.plan.size) {
      throw invalid(
        `disk ${disk.plan.id} ends at byte ${disk.offset} of ${disk.plan.size} (its last chunk is missing)`,
      )
    }
    this.#diskResults.push({ dataBytes: disk.dataBytes, chunks: disk.chunks })
    this.#disk = undefined
  }

  #readOva(xml: string): void {
    let header: { version?: Rec; objects?: OvaObject[] }
    try {
      header = parseValue(xml) as typeof header
    } catch (error) {
      throw invalid(`ova.xml cannot be read: ${error instanceof Error ? error.message : String(error)}`)
    }
    if (!header || !Array.isArray(header.objects) || !header.version)
      throw invalid('ova.xml has no version or objects')
    const byId = new Map(header.objects.map((o) => [String(o.id), o]))
    const vms = header.objects.filter((o) => o.class === 'VM')
    if (vms.length !== 1) throw invalid(`ova.xml describes ${vms.length} VMs; dpxen handles one VM per file`)
    const vm = vms[0]!.snapshot ?? {}
    const disks = ovaDisks(header.objects, byId)
    disks.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    this.#plan = this.#metadataOnly ? [] : disks.map((d) => ({ id: d.id, size: d.virtualSize }))
    const vifs = header.objects
      .filter((o) => o.class === 'VIF')
      .map((o) => {
        const vif = o.snapshot ?? {}
        return {
          device: String(vif.device ?? ''),
          mac: String(vif.MAC ?? ''),
          network: String(byId.get(String(vif.network))?.snapshot?.name_label ?? ''),
        }
      })
    this.#summary = {
      vm: {
        name: String(vm.name_label ?? ''),
        uuid: String(vm.uuid ?? ''),
        isTemplate: vm.is_a_template === true,
        powerState: String(vm.power_state ?? ''),
        version: String(vm.version ?? '0'),
        otherConfig: Object.fromEntries(
          Object.entries((vm.other_config ?? {}) as Rec).map(([k, v]) => [k, String(v)]),
        ),
      },
      vifs,
      disks,
      vtpms: header.objects
        .filter((o) => o.class === 'VTPM')
        .map((o) => ({ contents: String(o.snapshot?.["vTPM'_content"] ?? '') })),
      xapiVersion: `${String(header.version.xapi_major ?? '')}.${String(header.version.xapi_minor ?? '')}`,
    }
  }

  /** Ends the stream: checks that the archive was complete and returns what it holds. */
  finish(): XvaSummary {
    if (this.#dataLeft > 0 || this.#pendingBytes > 0)
      throw invalid(`the archive is cut off at byte ${this.#offset} (truncated)`)
    if (!this.#ended) {
      if (this.#entries === 0) throw invalid('the file is empty or not a tar archive')
      throw invalid(`the archive has no tar end marker at byte ${this.#offset} (truncated)`)
    }
    const summary = this.#summary!
    return {
      ...summary,
      disks: summary.disks.map((d, i) => ({ ...d, ...this.#diskResults[i]! })),
      checksum: this.#checksumKind,
      tarBytes: this.#offset,
    }
  }
}
