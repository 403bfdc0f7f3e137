// A VHD written from a disk's blocks, laid out as xapi's vhd-tool streams export_raw_vdi with
// format=vhd (so a restore imports it as it imports the host's own): the footer at 0, the
// dynamic header at 512, a zero sector, the block table at 2048, then each block held, in
// ascending order, as an all-set sector bitmap and its 2 MiB, and the footer again. Without a
// parent it is a dynamic VHD (type 3) of the whole disk; with one, a differencing VHD (type 4)
// of the blocks changed since the parent. Incremental runs with changed block tracking write
// these from blocks read over NBD. The bytes go into an Intake (intake.ts: the file's slabs,
// the hash, and the same VhdVerifier every VHD export passes), with its backpressure.
import type { Intake } from '../core/intake.js'

/** A VHD block: what vhd-tool writes, and what CBT's 64 KiB bits are grouped into. */
export const VHD_BLOCK = 2 * 1024 * 1024
const SECTOR = 512
const TABLE_AT = 2048

export interface VhdPlan {
  /** The disk's virtual size in bytes. */
  size: number
  /** The VHD's own id (the exported snapshot disk's uuid, as xapi writes it). */
  uuid: string
  /** For a differencing VHD: the parent's uuid (the base disk's). */
  parentUuid?: string
  /** The blocks it holds (index = offset / 2 MiB), each once. */
  blocks: number[]
}

function checksum(buf: Buffer, at: number): number {
  let sum = 0
  for (let i = 0; i < buf.length; i++) if (i < at || i >= at + 4) sum += buf[i]!
  return ~sum >>> 0
}

/** Cylinders, heads and sectors per track, by the VHD specification's algorithm. */
function geometry(size: number): [number, number, number] {
  const total = Math.min(Math.floor(size / SECTOR), 65535 * 16 * 255)
  if (total >= 65535 * 16 * 63) return [Math.min(Math.floor(total / 255 / 16), 65535), 16, 255]
  let spt = 17
  let cth = Math.floor(total / spt)
  let heads = Math.max(4, Math.floor((cth + 1023) / 1024))
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
  return [Math.min(Math.floor(cth / heads), 65535), heads, spt]
}

const uuidBytes = (uuid: string): Buffer => Buffer.from(uuid.replaceAll('-', ''), 'hex')

function footer(plan: VhdPlan): Buffer {
  const f = Buffer.alloc(SECTOR)
  f.write('conectix', 0, 'latin1')
  f.writeUInt32BE(2, 8) // features: reserved
  f.writeUInt32BE(0x00010000, 12) // format version 1.0
  f.writeBigUInt64BE(BigInt(SECTOR), 16) // the dynamic header's offset
  f.write('dpxn', 28, 'latin1') // creator application
  f.writeUInt32BE(0x00010000, 32)
  f.writeBigUInt64BE(BigInt(plan.size), 40)
  f.writeBigUInt64BE(BigInt(plan.size), 48)
  const [c, h, s] = geometry(plan.size)
  f.writeUInt16BE(c, 56)
  f.writeUInt8(h, 58)
  f.writeUInt8(s, 59)
  f.writeUInt32BE(plan.parentUuid ? 4 : 3, 60)
  uuidBytes(plan.uuid).copy(f, 68)
  f.writeUInt32BE(checksum(f, 64), 64)
  return f
}

function header(entries: number, parentUuid: string | undefined): Buffer {
  const h = Buffer.alloc(1024)
  h.write('cxsparse', 0, 'latin1')
  h.writeBigUInt64BE(0xffffffffffffffffn, 8) // no next structure
  h.writeBigUInt64BE(BigInt(TABLE_AT), 16)
  h.writeUInt32BE(0x00010000, 24)
  h.writeUInt32BE(entries, 28)
  h.writeUInt32BE(VHD_BLOCK, 32)
  if (parentUuid) uuidBytes(parentUuid).copy(h, 40)
  h.writeUInt32BE(checksum(h, 36), 36)
  return h
}

/** The bytes the VHD of `plan` takes. */
export function vhdLength(plan: Pick<VhdPlan, 'size' | 'blocks'>): number {
  const entries = Math.ceil(plan.size / VHD_BLOCK)
  return (
    TABLE_AT + Math.ceil((entries * 4) / SECTOR) * SECTOR + plan.blocks.length * (SECTOR + VHD_BLOCK) + SECTOR
  )
}

/**
 * Writes the VHD of `plan` into the intake `open` makes (it is given the wake callback that
 * resumes a write it stopped), reading each block's 2 MiB with `read` (the last block of a disk
 * whose size is not a multiple of 2 MiB is zero-filled past the end). `maxPiece` is the largest
 * piece the intake takes at once. Returns what the intake's finish() says; aborts it on failure.
 */
export async function writeVhd<R>(
  plan: VhdPlan,
  open: (wake: () => void) => Intake<R>,
  read: (block: number, into: Buffer) => Promise<void>,
  options: { signal: AbortSignal; maxPiece: number },
): Promise<R> {
  const entries = Math.ceil(plan.size / VHD_BLOCK)
  const blocks = [...plan.blocks].sort((a, b) => a - b)
  if (blocks.some((b, i) => !Number.isInteger(b) || b < 0 || b >= entries || b === blocks[i - 1]))
    throw new RangeError(`blocks must be distinct whole numbers below ${entries}`)
  const table = Buffer.alloc(Math.ceil((entries * 4) / SECTOR) * SECTOR, 0xff)
  let sector = (TABLE_AT + table.length) / SECTOR
  for (const b of blocks) {
    table.writeUInt32BE(sector, b * 4)
    sector += (SECTOR + VHD_BLOCK) / SECTOR
  }
  let resume: (() => void) | undefined
  const intake = open(() => resume?.())
  const push = async (data: Buffer): Promise<void> => {
    for (let at = 0; at < data.length; at += options.maxPiece) {
      if (!intake.push(data.subarray(at, at + options.maxPiece)))
        await new Promise<void>((resolve) => (resume = resolve))
    }
  }
  try {
    const foot = footer(plan)
    await push(Buffer.concat([foot, header(entries, plan.parentUuid), Buffer.alloc(SECTOR), table]))
    const bitmap = Buffer.alloc(SECTOR, 0xff)
    const data = Buffer.alloc(VHD_BLOCK)
    for (const b of blocks) {
      options.signal.throwIfAborted()
      data.fill(0)
      await read(b, data)
      await push(bitmap)
      await push(data)
    }
    await push(foot)
    return await intake.finish()
  } catch (error) {
    await intake.abort()
    throw error
  }
}

/** The blocks a changed-block bitmap names (one bit per 64 KiB, MSB first): the 2 MiB blocks holding them. */
export function blocksOfBitmap(bitmap: Buffer, size: number): number[] {
  const perBlock = VHD_BLOCK / (64 * 1024)
  const out = new Set<number>()
  const bits = Math.min(bitmap.length * 8, Math.ceil(size / (64 * 1024)))
  for (let i = 0; i < bits; i++) if (bitmap[i >> 3]! & (0x80 >> (i & 7))) out.add(Math.floor(i / perBlock))
  return [...out].sort((a, b) => a - b)
}
