// The simulator's disk writer: chunks land at their offsets whatever their alignment, around
// the page cache where the system allows it, and a write error comes back.
import { createHash, randomBytes } from 'node:crypto'
import { constants, existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { DiskWriter } from '../../simulator/xapi/model/disk-writer.js'
import { tempDir } from '../helpers/hooks.js'

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex')
const SLAB = 64 * 1024

describe('DiskWriter', () => {
  it('writes chunks at their offsets, aligned or not, larger than a slab or not, the rest left as it was', async () => {
    const path = join(tempDir(), 'disk.img')
    const size = 10 * SLAB + 1000 // an odd size: the last chunk is not whole blocks
    writeFileSync(path, Buffer.alloc(0))
    truncateSync(path, size)
    const expected = Buffer.alloc(size)
    const chunks: [number, Buffer][] = [
      [0, randomBytes(SLAB)],
      [3 * SLAB, randomBytes(SLAB)], // a gap before it stays zero
      [4 * SLAB, randomBytes(SLAB)],
      [5 * SLAB + 512, randomBytes(700)], // not whole 4 KiB blocks
      [6 * SLAB, randomBytes(3 * SLAB)], // larger than a slab
      [10 * SLAB, randomBytes(1000)], // the odd end
    ]
    const writer = await DiskWriter.open(path, SLAB, 2)
    if (constants.O_DIRECT !== undefined) expect(writer.direct).toBe(true)
    for (const [offset, data] of chunks) {
      data.copy(expected, offset)
      await writer.write(data, offset)
      data.fill(0xee) // the writer copied it: the caller may reuse its buffer at once
    }
    await writer.close()
    await writer.close() // once only
    const written = readFileSync(path)
    expect(written.length).toBe(size)
    expect(sha(written)).toBe(sha(expected))
  })

  it.skipIf(!existsSync('/dev/full'))('reports a failing write at the next write or at close', async () => {
    const writer = await DiskWriter.open('/dev/full', SLAB, 2)
    const data = Buffer.alloc(SLAB, 1)
    const outcome = (async () => {
      for (let i = 0; i < 8; i++) await writer.write(data, i * SLAB)
      await writer.close()
    })()
    await expect(outcome).rejects.toMatchObject({ code: 'ENOSPC' })
  })
})
