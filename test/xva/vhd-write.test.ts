// dpxen's VHD writer (src/xva/vhd-write.ts), read back by readers that are not it: qemu-img
// (Debian's qemu-utils) for a whole disk, the tests' own VHD reader for a delta applied over its
// base, and dpxen's VhdVerifier on the way (through the one intake every VHD export goes through).
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { CheckedIntake } from '../../src/xva/intake.js'
import { FileSink } from '../../src/xva/file-sink.js'
import { VhdVerifier } from '../../src/xva/vhd.js'
import { blocksOfBitmap, vhdLength, writeVhd, VHD_BLOCK, type VhdPlan } from '../../src/xva/vhd-write.js'
import { tempDir } from '../helpers/hooks.js'
import { applyTo, readVhd } from '../helpers/vhd.js'

const PIECE = 256 * 1024
const signal = new AbortController().signal

/** A disk of `blocks` 2 MiB blocks (the last one `tail` bytes short), every other block random, the rest zero. */
function diskImage(blocks: number, tail = 0): Buffer {
  const disk = Buffer.alloc(blocks * VHD_BLOCK - tail)
  for (let b = 0; b < blocks; b += 2)
    randomBytes(Math.min(VHD_BLOCK, disk.length - b * VHD_BLOCK)).copy(disk, b * VHD_BLOCK)
  return disk
}

const readFrom =
  (disk: Buffer) =>
  async (block: number, into: Buffer): Promise<void> => {
    disk.copy(into, 0, block * VHD_BLOCK, Math.min(disk.length, (block + 1) * VHD_BLOCK))
  }

async function write(plan: VhdPlan, disk: Buffer, slabs = 4) {
  const path = join(tempDir(), 'disk.vhd')
  const sink = await FileSink.open(path, { flags: 'wx', mode: 0o600, slabSize: PIECE, slabs, direct: false })
  const result = await writeVhd(
    plan,
    (wake) => new CheckedIntake(sink, new VhdVerifier(), { maxPiece: PIECE, wake }),
    readFrom(disk),
    { signal, maxPiece: PIECE },
  )
  return { path, result }
}

describe('VHD writer', () => {
  it('a dynamic VHD of the blocks with data: qemu-img turns it back into the disk, byte for byte', async () => {
    const disk = diskImage(5, 4096)
    const blocks = [0, 2, 4]
    const { path, result } = await write(
      { size: disk.length, uuid: '11111111-2222-3333-4444-555555555555', blocks },
      disk,
      2, // two small slabs: the writer is stopped and woken
    )
    expect(result.summary).toMatchObject({ type: 3, virtualSize: disk.length, blocks: 3 })
    expect(result.bytes).toBe(vhdLength({ size: disk.length, blocks }))
    const raw = join(tempDir(), 'disk.raw')
    // By the footer's size, not the CHS geometry (qemu does that only for creators it knows).
    const image = `json:${JSON.stringify({ driver: 'vpc', force_size_calc: 'current_size', file: { driver: 'file', filename: path } })}`
    execFileSync('qemu-img', ['convert', '-O', 'raw', image, raw])
    expect(readFileSync(raw).equals(disk)).toBe(true)
  })

  it('a differencing VHD of the changed blocks, applied over its base, is the new disk', async () => {
    const base = diskImage(6)
    const now = Buffer.from(base)
    randomBytes(VHD_BLOCK).copy(now, 3 * VHD_BLOCK)
    randomBytes(1000).copy(now, 5 * VHD_BLOCK + 70_000)
    const parentUuid = '99999999-8888-7777-6666-555555555555'
    const { path, result } = await write(
      { size: now.length, uuid: '11111111-2222-3333-4444-555555555555', parentUuid, blocks: [5, 3] },
      now,
    )
    expect(result.summary).toMatchObject({ type: 4, parentUuid, blocks: 2 })
    const image = readVhd(readFileSync(path))
    expect([...image.blocks.keys()].sort()).toEqual([3, 5])
    const rebuilt = Buffer.from(base)
    applyTo(rebuilt, image)
    expect(rebuilt.equals(now)).toBe(true)
  })

  it('a read that fails leaves the intake aborted and says why', async () => {
    const disk = diskImage(2)
    const path = join(tempDir(), 'disk.vhd')
    const sink = await FileSink.open(path, { flags: 'wx', mode: 0o600, direct: false })
    await expect(
      writeVhd(
        { size: disk.length, uuid: '11111111-2222-3333-4444-555555555555', blocks: [0, 1] },
        (wake) => new CheckedIntake(sink, new VhdVerifier(), { maxPiece: PIECE, wake }),
        async (block) => {
          if (block === 1) throw new Error('the NBD connection was cut')
        },
        { signal, maxPiece: PIECE },
      ),
    ).rejects.toThrow('the NBD connection was cut')
  })

  it.each([
    ['one 64 KiB bit', [0x80], 1, [0]],
    ['bits 31 and 32: the last of block 0, the first of block 1', [0, 0, 0, 0x01, 0x80], 3, [0, 1]],
    ['a bit past the disk is ignored', [0, 0, 0, 0, 0, 0, 0, 0, 0x80], 2, []],
  ])('blocksOfBitmap: %s', (_what, bytes, blocks, expected) => {
    expect(blocksOfBitmap(Buffer.from(bytes), blocks * VHD_BLOCK)).toEqual(expected)
  })
})
