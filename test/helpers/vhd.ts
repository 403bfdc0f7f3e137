// A VHD reader for the tests, written from the VHD specification and independent of both the
// simulator's writer and dpxen's verifier: footer, dynamic header, BAT, and the blocks the BAT
// names, with their sector bitmaps.
import { expect } from 'vitest'

export interface VhdImage {
  type: number
  size: number
  uuid: string
  parentUuid: string
  blockSize: number
  /** Block index → [sector bitmap, data], in BAT order. */
  blocks: Map<number, { bitmap: Buffer; data: Buffer }>
}

function sum(buf: Buffer, skip: number): number {
  let total = 0
  buf.forEach((byte, i) => {
    if (i < skip || i > skip + 3) total += byte
  })
  return ~total >>> 0
}

const hex = (b: Buffer): string => b.toString('hex')

export function readVhd(file: Buffer): VhdImage {
  const footer = file.subarray(0, 512)
  expect(footer.toString('latin1', 0, 8)).toBe('conectix')
  expect(footer.readUInt32BE(64)).toBe(sum(footer, 64))
  expect(file.subarray(file.length - 512).equals(footer)).toBe(true)
  const header = file.subarray(Number(footer.readBigUInt64BE(16)), Number(footer.readBigUInt64BE(16)) + 1024)
  expect(header.toString('latin1', 0, 8)).toBe('cxsparse')
  expect(header.readUInt32BE(36)).toBe(sum(header, 36))
  const blockSize = header.readUInt32BE(32)
  const entries = header.readUInt32BE(28)
  const batAt = Number(header.readBigUInt64BE(16))
  const bitmapBytes = Math.ceil(blockSize / 512 / 8 / 512) * 512
  const blocks = new Map<number, { bitmap: Buffer; data: Buffer }>()
  for (let i = 0; i < entries; i++) {
    const sector = file.readUInt32BE(batAt + i * 4)
    if (sector === 0xffffffff) continue
    const at = sector * 512
    blocks.set(i, {
      bitmap: file.subarray(at, at + bitmapBytes),
      data: file.subarray(at + bitmapBytes, at + bitmapBytes + blockSize),
    })
  }
  return {
    type: footer.readUInt32BE(60),
    size: Number(footer.readBigUInt64BE(48)),
    uuid: hex(footer.subarray(68, 84)),
    parentUuid: hex(header.subarray(40, 56)),
    blockSize,
    blocks,
  }
}

/** Applies a VHD's sectors (bitmap bits set) onto `disk`. */
export function applyTo(disk: Buffer, image: VhdImage): void {
  for (const [index, { bitmap, data }] of image.blocks) {
    for (let s = 0; s < image.blockSize / 512; s++) {
      if (!(bitmap[s >> 3]! & (0x80 >> (s & 7)))) continue
      const at = index * image.blockSize + s * 512
      if (at < disk.length) data.copy(disk, at, s * 512, Math.min(s * 512 + 512, disk.length - at + s * 512))
    }
  }
}
