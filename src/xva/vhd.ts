// VHD streams (export_raw_vdi?format=vhd, with or without base=) checked as they come, piece by
// piece, with nothing held but the footer, the header and the BAT: cookies, checksums, versions,
// block size, every block the BAT names present where it says (its sector bitmap read), and the
// stream ending with a copy of the first footer and nothing after it. A stream cut short, or
// with xapi's error page written into the body, can never pass for a whole one.
import { DpxenError } from '../core/errors.js'
import type { Verifier } from './check.js'

const SECTOR = 512
const UNUSED = 0xffffffff

export interface VhdSummary {
  /** 3 dynamic (a whole disk), 4 differencing (the blocks changed since the base). */
  type: 3 | 4
  virtualSize: number
  blockSize: number
  /** Blocks the VHD holds. */
  blocks: number
  /** The footer's unique id (dashed uuid) and, for a differencing VHD, the parent's. */
  uuid: string
  parentUuid?: string
}

function invalid(reason: string): DpxenError {
  return new DpxenError('XVA_INVALID', `not a valid VHD stream: ${reason}`)
}

function checksumOk(buf: Buffer, at: number): boolean {
  let sum = 0
  for (let i = 0; i < buf.length; i++) if (i < at || i >= at + 4) sum += buf[i]!
  return ~sum >>> 0 === buf.readUInt32BE(at)
}

function uuidOf(bytes: Buffer): string {
  const h = bytes.toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

/** A region of the stream to collect whole before the plan goes on. */
interface Region {
  start: number
  length: number
}

/**
 * The most entries a block table may claim: a 2040 GiB disk (the most `format=vhd` exports) in
 * 2 MiB blocks, with room to spare. Its table is read whole, so a header claiming more (a
 * damaged or hostile file) is refused before anything is collected.
 */
export const MAX_TABLE_ENTRIES = 4 * 1024 * 1024

/** The sectors of the blocks a BAT names, in stream order, with their indexes: sorted once. */
function blocksInOrder(bat: Buffer, entries: number): { sector: Float64Array; index: Uint32Array } {
  const used: number[] = []
  let sorted = true
  for (let i = 0; i < entries; i++) {
    const sector = bat.readUInt32BE(i * 4)
    if (sector === UNUSED) continue
    if (used.length && sector < bat.readUInt32BE(used[used.length - 1]! * 4)) sorted = false
    used.push(i)
  }
  // xapi writes blocks in table order; a table that is not is sorted once: O(n log n), never more.
  if (!sorted) used.sort((a, b) => bat.readUInt32BE(a * 4) - bat.readUInt32BE(b * 4))
  const index = Uint32Array.from(used)
  const sector = Float64Array.from(used, (i) => bat.readUInt32BE(i * 4))
  return { sector, index }
}

/**
 * Checks a VHD stream piece by piece in one pass: linear in its length and its blocks, holding
 * only the footer, the header, the block table and the structure being read. The structures
 * are asked for in stream order by a plan (a generator given each one's bytes); each must lie
 * after the one before, so overlapping or out-of-place blocks are refused.
 */
export class VhdVerifier implements Verifier<VhdSummary> {
  #pos = 0
  #plan: Generator<Region, void, Buffer>
  #region: Region | undefined
  #parts: Buffer[] = []
  #collected = 0
  #summary: Partial<VhdSummary> = {}
  /** Where the stream must end: known once the BAT is read. */
  #end: number | undefined

  constructor() {
    this.#plan = this.#structures()
    this.#region = this.#plan.next().value ?? undefined
  }

  *#structures(): Generator<Region, void, Buffer> {
    const footer = Buffer.from(yield { start: 0, length: SECTOR })
    this.#onFooter(footer)
    const header = yield { start: Number(footer.readBigUInt64BE(16)), length: 1024 }
    const { entries, batOffset } = this.#onHeader(header)
    const batBytes = Math.ceil((entries * 4) / SECTOR) * SECTOR
    const bat = yield { start: batOffset, length: batBytes }
    const blockSize = this.#summary.blockSize!
    const bitmapBytes = Math.ceil(blockSize / SECTOR / 8 / SECTOR) * SECTOR
    const { sector, index } = blocksInOrder(bat, entries)
    this.#summary.blocks = sector.length
    // A VHD without blocks closes right after its BAT.
    const last = sector.length ? sector[sector.length - 1]! * SECTOR + bitmapBytes + blockSize : this.#pos
    this.#end = last + SECTOR
    for (let k = 0; k < sector.length; k++) {
      const bitmap = yield { start: sector[k]! * SECTOR, length: bitmapBytes }
      if (bitmap.every((b) => b === 0)) throw invalid(`block ${index[k]} has an empty sector bitmap`)
    }
    const tail = yield { start: last, length: SECTOR }
    if (!tail.equals(footer)) throw invalid('the closing footer differs from the first')
  }

  #onFooter(footer: Buffer): void {
    if (footer.toString('latin1', 0, 8) !== 'conectix')
      throw invalid(
        footer.toString('latin1', 0, 5) === 'HTTP/' ? 'the host wrote an error page' : 'no footer cookie',
      )
    if (!checksumOk(footer, 64)) throw invalid('footer checksum')
    const type = footer.readUInt32BE(60)
    if (type !== 3 && type !== 4) throw invalid(`disk type ${type} (not dynamic or differencing)`)
    this.#summary.type = type
    this.#summary.virtualSize = Number(footer.readBigUInt64BE(48))
    this.#summary.uuid = uuidOf(footer.subarray(68, 84))
  }

  #onHeader(header: Buffer): { entries: number; batOffset: number } {
    if (header.toString('latin1', 0, 8) !== 'cxsparse') throw invalid('no header cookie')
    if (!checksumOk(header, 36)) throw invalid('header checksum')
    const blockSize = header.readUInt32BE(32)
    if (blockSize < SECTOR || (blockSize & (blockSize - 1)) !== 0) throw invalid(`block size ${blockSize}`)
    const entries = header.readUInt32BE(28)
    if (entries === 0) throw invalid('an empty block table')
    if (entries > MAX_TABLE_ENTRIES)
      throw invalid(
        `a block table of ${entries} entries, more than any exported disk has (${MAX_TABLE_ENTRIES})`,
      )
    if (entries * blockSize < this.#summary.virtualSize!) throw invalid('the BAT does not cover the disk')
    this.#summary.blockSize = blockSize
    if (this.#summary.type === 4) this.#summary.parentUuid = uuidOf(header.subarray(40, 56))
    return { entries, batOffset: Number(header.readBigUInt64BE(16)) }
  }

  /** Takes the next piece of the stream (not kept after the call). */
  push(piece: Buffer): void {
    let at = 0
    while (at < piece.length) {
      const region = this.#region
      if (!region)
        throw invalid(
          this.#end === undefined ? 'data where nothing is expected' : 'data after the closing footer',
        )
      if (this.#collected === 0 && region.start < this.#pos)
        throw invalid(`a structure at ${region.start} lies behind ${this.#pos}`)
      if (this.#pos < region.start) {
        const skip = Math.min(region.start - this.#pos, piece.length - at)
        this.#pos += skip
        at += skip
        continue
      }
      const take = Math.min(region.length - this.#collected, piece.length - at)
      this.#parts.push(Buffer.from(piece.subarray(at, at + take)))
      this.#collected += take
      this.#pos += take
      at += take
      if (this.#collected === region.length) {
        const data = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts)
        this.#parts = []
        this.#collected = 0
        this.#region = this.#plan.next(data).value ?? undefined
      }
    }
  }

  /** After the last piece: the VHD was whole, or this throws saying where it stopped. */
  finish(): VhdSummary {
    if (this.#region)
      throw invalid(
        `it ends after ${this.#pos} bytes${this.#end === undefined ? ', before its block table' : ` of ${this.#end}`}`,
      )
    return this.#summary as VhdSummary
  }
}
