// VHD streams (export_raw_vdi?format=vhd, with or without base=) checked as they come, piece by
// piece, with nothing held but the footer, the header and the BAT: cookies, checksums, versions,
// block size, every block the BAT names present where it says (its sector bitmap read), and the
// stream ending with a copy of the first footer and nothing after it. A stream cut short, or
// with xapi's error page written into the body, can never pass for a whole one.
import { DpxenError } from '../core/errors.js'
import { newXxh64, xxh64Hex } from '../core/xxh64.js'
import type { FileSink } from './file-sink.js'

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

/** A region of the stream to collect whole, and what to do with it. */
interface Want {
  start: number
  length: number
  then: (data: Buffer) => void
}

export class VhdVerifier {
  #pos = 0
  #wants: Want[] = []
  #parts: Buffer[] = []
  #footer: Buffer | undefined
  #summary: Partial<VhdSummary> = {}
  #entries = 0
  /** Where the stream must end: known once the BAT is read. */
  #end: number | undefined
  #done = false

  constructor() {
    this.#want(0, SECTOR, (f) => this.#onFooter(f))
  }

  #want(start: number, length: number, then: (data: Buffer) => void): void {
    if (start < this.#pos) throw invalid(`a structure at ${start} lies behind ${this.#pos}`)
    this.#wants.push({ start, length, then })
    this.#wants.sort((a, b) => a.start - b.start)
  }

  #onFooter(footer: Buffer): void {
    if (footer.toString('latin1', 0, 8) !== 'conectix')
      throw invalid(
        footer.toString('latin1', 0, 5) === 'HTTP/' ? 'the host wrote an error page' : 'no footer cookie',
      )
    if (!checksumOk(footer, 64)) throw invalid('footer checksum')
    const type = footer.readUInt32BE(60)
    if (type !== 3 && type !== 4) throw invalid(`disk type ${type} (not dynamic or differencing)`)
    this.#footer = Buffer.from(footer)
    this.#summary.type = type
    this.#summary.virtualSize = Number(footer.readBigUInt64BE(48))
    this.#summary.uuid = uuidOf(footer.subarray(68, 84))
    this.#want(Number(footer.readBigUInt64BE(16)), 1024, (h) => this.#onHeader(h))
  }

  #onHeader(header: Buffer): void {
    if (header.toString('latin1', 0, 8) !== 'cxsparse') throw invalid('no header cookie')
    if (!checksumOk(header, 36)) throw invalid('header checksum')
    const blockSize = header.readUInt32BE(32)
    if (blockSize < SECTOR || (blockSize & (blockSize - 1)) !== 0) throw invalid(`block size ${blockSize}`)
    this.#entries = header.readUInt32BE(28)
    if (this.#entries * blockSize < this.#summary.virtualSize!)
      throw invalid('the BAT does not cover the disk')
    this.#summary.blockSize = blockSize
    if (this.#summary.type === 4) this.#summary.parentUuid = uuidOf(header.subarray(40, 56))
    const batBytes = Math.ceil((this.#entries * 4) / SECTOR) * SECTOR
    this.#want(Number(header.readBigUInt64BE(16)), batBytes, (bat) => this.#onBat(bat))
  }

  #onBat(bat: Buffer): void {
    const blockSize = this.#summary.blockSize!
    const bitmapBytes = Math.ceil(blockSize / SECTOR / 8 / SECTOR) * SECTOR
    let end = this.#pos // the BAT's end: a VHD without blocks closes right after it
    let blocks = 0
    for (let i = 0; i < this.#entries; i++) {
      const sector = bat.readUInt32BE(i * 4)
      if (sector === UNUSED) continue
      blocks++
      const start = sector * SECTOR
      this.#want(start, bitmapBytes, (bitmap) => {
        if (bitmap.every((b) => b === 0)) throw invalid(`block ${i} has an empty sector bitmap`)
      })
      end = Math.max(end, start + bitmapBytes + blockSize)
    }
    this.#summary.blocks = blocks
    this.#end = end + SECTOR
    this.#want(end, SECTOR, (tail) => {
      if (!tail.equals(this.#footer!)) throw invalid('the closing footer differs from the first')
      this.#done = true
    })
  }

  /** Takes the next piece of the stream (not kept after the call). */
  push(piece: Buffer): void {
    let at = 0
    while (at < piece.length) {
      if (this.#done) throw invalid('data after the closing footer')
      const want = this.#wants[0]
      if (!want) throw invalid('data where nothing is expected')
      if (this.#pos < want.start) {
        const skip = Math.min(want.start - this.#pos, piece.length - at)
        this.#pos += skip
        at += skip
        continue
      }
      const take = Math.min(want.start + want.length - this.#pos, piece.length - at)
      this.#parts.push(Buffer.from(piece.subarray(at, at + take)))
      this.#pos += take
      at += take
      if (this.#pos === want.start + want.length) {
        this.#wants.shift()
        const data = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts)
        this.#parts = []
        want.then(data)
      }
    }
  }

  /** After the last piece: the VHD was whole, or this throws saying where it stopped. */
  finish(): VhdSummary {
    if (!this.#done)
      throw invalid(
        `it ends after ${this.#pos} bytes${this.#end === undefined ? ', before its block table' : ` of ${this.#end}`}`,
      )
    return this.#summary as VhdSummary
  }
}

export interface VhdStreamResult {
  summary: VhdSummary
  bytes: number
  xxh64: string
}

/** The receiving end of a VHD export: counted, hashed, checked, and copied into the file. */
export class VhdIntake {
  #sink: FileSink
  #maxPiece: number
  #wake: () => void
  #verifier = new VhdVerifier()
  #hash = newXxh64()
  #bytes = 0
  #waiting = false

  constructor(sink: FileSink, options: { maxPiece: number; wake: () => void }) {
    this.#sink = sink
    this.#maxPiece = options.maxPiece
    this.#wake = options.wake
  }

  get bytes(): number {
    return this.#bytes
  }

  push(piece: Buffer): boolean {
    this.#verifier.push(piece)
    this.#bytes += piece.length
    this.#hash.update(piece)
    this.#sink.take(piece)
    if (this.#sink.room >= this.#maxPiece) return true
    this.#waiting = true
    this.#sink.onRoom(() => this.#maybeWake())
    return false
  }

  #maybeWake(): void {
    if (!this.#waiting) return
    if (!this.#sink.failure && this.#sink.room < this.#maxPiece) {
      this.#sink.onRoom(() => this.#maybeWake())
      return
    }
    this.#waiting = false
    this.#wake()
  }

  async finish(): Promise<VhdStreamResult> {
    const summary = this.#verifier.finish()
    await this.#sink.close()
    return { summary, bytes: this.#bytes, xxh64: xxh64Hex(this.#hash) }
  }

  async abort(): Promise<void> {
    await this.#sink.abort()
  }
}
