// VHD streams as xapi's vhd-tool writes and reads them (export_raw_vdi / import_raw_vdi with
// format=vhd; vhd_format f.ml). Export: the footer at 0, the header at 512, a zero sector, the
// BAT at 2048, then each included 2 MiB block in ascending order as an all-0xFF sector bitmap and
// its data, and the footer again. Without a base the VHD is dynamic (type 3) and holds every
// block with data; with a base it is differencing (type 4) and holds the blocks whose content
// differs from the base's (xapi compares the VHD chains' allocations; comparing content gives
// exactly the changed blocks, a subset that applies the same way). Import: the footer, header
// and BAT checked (cookies, checksums, block size), the blocks read in file order, only the
// sectors whose bitmap bit is set written: an overlay on the existing disk.
import type { FileHandle } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { XapiFailure } from '../model/errors.js'
import type { ByteReader } from './tar-read.js'

export const VHD_BLOCK = 2 * 1024 * 1024
const SECTOR = 512
const BITMAP = VHD_BLOCK / SECTOR / 8
const BAT_OFFSET = 2048
const UNUSED = 0xffffffff

function checksum(buf: Buffer, at: number): number {
  let sum = 0
  for (let i = 0; i < buf.length; i++) if (i < at || i >= at + 4) sum += buf[i]!
  return ~sum >>> 0
}

/** Cylinders, heads, sectors per track, by the VHD specification's algorithm. */
function geometry(size: number): [number, number, number] {
  let total = Math.min(Math.floor(size / SECTOR), 65535 * 16 * 255)
  let spt: number
  let heads: number
  let cth: number
  if (total >= 65535 * 16 * 63) {
    spt = 255
    heads = 16
    cth = Math.floor(total / spt)
  } else {
    spt = 17
    cth = Math.floor(total / spt)
    heads = Math.max(4, Math.floor((cth + 1023) / 1024))
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31
      heads = 16
      cth = Math.floor(total / spt)
    }
    if (cth >= heads * 1024) {
      spt = 63
      heads = 16
      cth = Math.floor(total / spt)
    }
  }
  total = Math.floor(cth / heads)
  return [Math.min(total, 65535), heads, spt]
}

function uuidBytes(uuid: string): Buffer {
  return Buffer.from(uuid.replaceAll('-', ''), 'hex')
}

export function vhdFooter(size: number, uuid: string, differencing: boolean): Buffer {
  const f = Buffer.alloc(SECTOR)
  f.write('conectix', 0, 'latin1')
  f.writeUInt32BE(2, 8)
  f.writeUInt32BE(0x00010000, 12)
  f.writeBigUInt64BE(512n, 16)
  f.write('caml', 28, 'latin1')
  f.writeUInt32BE(0x00010000, 32)
  f.writeBigUInt64BE(BigInt(size), 40)
  f.writeBigUInt64BE(BigInt(size), 48)
  const [c, h, s] = geometry(size)
  f.writeUInt16BE(c, 56)
  f.writeUInt8(h, 58)
  f.writeUInt8(s, 59)
  f.writeUInt32BE(differencing ? 4 : 3, 60)
  uuidBytes(uuid).copy(f, 68)
  f.writeUInt32BE(checksum(f, 64), 64)
  return f
}

export function vhdHeader(blocks: number, parentUuid: string | undefined): Buffer {
  const h = Buffer.alloc(1024)
  h.write('cxsparse', 0, 'latin1')
  h.writeBigUInt64BE(0xffffffffffffffffn, 8)
  h.writeBigUInt64BE(BigInt(BAT_OFFSET), 16)
  h.writeUInt32BE(0x00010000, 24)
  h.writeUInt32BE(blocks, 28)
  h.writeUInt32BE(VHD_BLOCK, 32)
  if (parentUuid) uuidBytes(parentUuid).copy(h, 40)
  h.writeUInt32BE(checksum(h, 36), 36)
  return h
}

const batBytes = (blocks: number): number => Math.ceil((blocks * 4) / SECTOR) * SECTOR

async function readBlock(handle: FileHandle, buf: Buffer, index: number, size: number): Promise<Buffer> {
  buf.fill(0)
  const start = index * VHD_BLOCK
  await handle.read(buf, 0, Math.min(VHD_BLOCK, size - start), start)
  return buf
}

const ZERO_BLOCK = Buffer.alloc(VHD_BLOCK)

/**
 * The blocks a VHD of `disk` (against `base`, when given) holds, in ascending order, for disks
 * the store does not track (DiskStore): the ones with data, or the ones that differ from the
 * base, found by reading both.
 */
export async function includedBlocks(
  disk: FileHandle,
  base: FileHandle | undefined,
  size: number,
): Promise<number[]> {
  const blocks = Math.ceil(size / VHD_BLOCK)
  const a = Buffer.allocUnsafe(VHD_BLOCK)
  const b = Buffer.allocUnsafe(VHD_BLOCK)
  const out: number[] = []
  for (let i = 0; i < blocks; i++) {
    const data = await readBlock(disk, a, i, size)
    const other = base ? await readBlock(base, b, i, size) : ZERO_BLOCK
    if (!data.equals(other)) out.push(i)
  }
  return out
}

/** Writes the VHD stream of `disk` holding `included`; `write` must respect backpressure. */
export async function writeVhd(
  disk: FileHandle,
  options: {
    size: number
    uuid: string
    parentUuid?: string
    included: number[]
    signal: AbortSignal
    /** Pause this long after the first block (fault export-stall). */
    stallMs?: number
  },
  write: (data: Buffer) => Promise<void>,
): Promise<void> {
  const { size, included } = options
  const blocks = Math.ceil(size / VHD_BLOCK)
  const footer = vhdFooter(size, options.uuid, options.parentUuid !== undefined)
  const bat = Buffer.alloc(batBytes(blocks), 0xff)
  let sector = (BAT_OFFSET + bat.length) / SECTOR
  for (const i of included) {
    bat.writeUInt32BE(sector, i * 4)
    sector += (SECTOR + VHD_BLOCK) / SECTOR
  }
  await write(Buffer.concat([footer, vhdHeader(blocks, options.parentUuid), Buffer.alloc(SECTOR), bat]))
  const bitmap = Buffer.alloc(SECTOR, 0xff)
  const buf = Buffer.allocUnsafe(VHD_BLOCK)
  for (const [n, i] of included.entries()) {
    options.signal.throwIfAborted()
    await write(bitmap)
    await write(await readBlock(disk, buf, i, size))
    if (n === 0 && options.stallMs) await sleep(options.stallMs, undefined, { signal: options.signal })
  }
  await write(footer)
}

/** The expected length of the stream `writeVhd` writes. */
export function vhdLength(size: number, blocks: number): number {
  return BAT_OFFSET + batBytes(Math.ceil(size / VHD_BLOCK)) + blocks * (SECTOR + VHD_BLOCK) + SECTOR
}

function ioError(reason: string): XapiFailure {
  return new XapiFailure('VDI_IO_ERROR', `Device I/O errors: ${reason}`)
}

/**
 * Reads a VHD stream of `length` bytes and writes the sectors it holds onto `disk` (`size`
 * bytes), as vhd-tool serve does: strictly forward, so blocks must come in file order.
 */
export async function applyVhd(
  reader: ByteReader,
  length: number,
  disk: FileHandle,
  size: number,
  onWrite: (offset: number, length: number) => void,
): Promise<void> {
  let at = 0
  const take = async (n: number): Promise<Buffer> => {
    const data = await reader.take(n)
    if (!data) throw ioError('premature end of data')
    at += n
    return data
  }
  const skipTo = async (offset: number): Promise<void> => {
    if (offset < at) throw ioError(`block at ${offset} is behind the reader (${at})`)
    while (at < offset) await take(Math.min(offset - at, VHD_BLOCK))
  }
  const footer = Buffer.from(await take(SECTOR))
  if (footer.toString('latin1', 0, 8) !== 'conectix') throw ioError('footer cookie')
  if (footer.readUInt32BE(64) !== checksum(footer, 64)) throw ioError('footer checksum')
  const type = footer.readUInt32BE(60)
  if (type !== 3 && type !== 4) throw ioError(`disk type ${type}`)
  if (Number(footer.readBigUInt64BE(48)) > size) throw ioError('the image is larger than the VDI')
  await skipTo(Number(footer.readBigUInt64BE(16)))
  const header = Buffer.from(await take(1024))
  if (header.toString('latin1', 0, 8) !== 'cxsparse') throw ioError('header cookie')
  if (header.readUInt32BE(36) !== checksum(header, 36)) throw ioError('header checksum')
  if (header.readBigUInt64BE(8) !== 0xffffffffffffffffn) throw ioError('header data_offset')
  const blockSize = header.readUInt32BE(32)
  if (blockSize !== VHD_BLOCK) throw ioError(`block size ${blockSize}`)
  const entries = header.readUInt32BE(28)
  await skipTo(Number(header.readBigUInt64BE(16)))
  const bat = Buffer.from(await take(batBytes(entries)))
  const used: { index: number; offset: number }[] = []
  for (let i = 0; i < entries; i++) {
    const sector = bat.readUInt32BE(i * 4)
    if (sector !== UNUSED) used.push({ index: i, offset: sector * SECTOR })
  }
  used.sort((x, y) => x.offset - y.offset)
  for (const { index, offset } of used) {
    if (index * VHD_BLOCK >= size) throw ioError('a block beyond the end of the VDI')
    await skipTo(offset)
    const bitmap = Buffer.from(await take(BITMAP))
    const data = await take(VHD_BLOCK)
    await writeSectors(disk, bitmap, data, index * VHD_BLOCK, size, onWrite)
  }
  if (length - SECTOR < at) throw ioError('the footer overlaps the data')
  await skipTo(length - SECTOR)
  const tail = await take(SECTOR)
  if (!tail.equals(footer)) throw ioError('the trailing footer differs from the first')
}

/** Writes each run of set bits of `bitmap` (MSB first, a bit a sector) from `data`. */
async function writeSectors(
  disk: FileHandle,
  bitmap: Buffer,
  data: Buffer,
  base: number,
  size: number,
  onWrite: (offset: number, length: number) => void,
): Promise<void> {
  const sectors = VHD_BLOCK / SECTOR
  const bit = (s: number): boolean => (bitmap[s >> 3]! & (0x80 >> (s & 7))) !== 0
  for (let s = 0; s < sectors;) {
    if (!bit(s)) {
      s++
      continue
    }
    let e = s
    while (e < sectors && bit(e)) e++
    const from = base + s * SECTOR
    const to = Math.min(base + e * SECTOR, size)
    if (to > from) {
      await disk.write(data, s * SECTOR, to - from, from)
      onWrite(from, to - from)
    }
    s = e
  }
}
