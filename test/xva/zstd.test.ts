// zstd without a native addon: Node's zlib where it has zstd (22.15+), fzstd before. Both are
// fed real zstd from Debian's zstd command (compressed blocks, several frames), in small pieces
// through one reused buffer, as a file reader hands them over.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, expect, it } from 'vitest'
import { zstdCompressor, zstdDecompressor as simDecompressor } from '../../simulator/xapi/xva/zstd.js'
import { zstdDecompressor, zstdImplementation } from '../../src/xva/zstd.js'
import { unzstd } from '../helpers/xva.js'

/** Half random, half repeated: zstd makes compressed and RLE blocks of it. */
const content = Buffer.concat([randomBytes(700_000), Buffer.alloc(900_000, 0x41), randomBytes(300_000)])
const cli = (data: Buffer): Buffer => execFileSync('zstd', ['-c', '-q', '-3'], { input: data })

/** Reads `data` in pieces of `size` through one buffer that is overwritten for every piece. */
function reusedPieces(data: Buffer, size: number): Readable {
  const buffer = Buffer.alloc(size)
  let at = 0
  return new Readable({
    highWaterMark: 0,
    read() {
      if (at >= data.length) return void this.push(null)
      const n = data.copy(buffer, 0, at, at + size)
      at += n
      this.push(buffer.subarray(0, n))
    },
  })
}

async function decode(stream: Readable, decoder: ReturnType<typeof zstdDecompressor>): Promise<Buffer> {
  const out: Buffer[] = []
  await pipeline(
    stream,
    decoder,
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        out.push(Buffer.from(chunk))
        done()
      },
    }),
  )
  return Buffer.concat(out)
}

/** The frames with their first block's type set to 3 (reserved, RFC 8878 §3.1.1.2.2). */
function reservedBlock(frames: Buffer): Buffer {
  const fhd = frames[4]!
  const single = (fhd >> 5) & 1
  const header = 5 + (single ? 0 : 1) + [0, 1, 2, 4][fhd & 3]! + [single, 2, 4, 8][fhd >> 6]!
  const bad = Buffer.from(frames)
  bad[header] = bad[header]! | 0b110
  return bad
}

describe('zstd', () => {
  const frames = Buffer.concat([cli(content), cli(content.subarray(0, 100_000))])
  const whole = Buffer.concat([content, content.subarray(0, 100_000)])

  it.each([1000, 4096, 1 << 20])('fzstd decodes real zstd frames fed in %i-byte pieces', async (size) => {
    expect(frames.length).toBeLessThan(whole.length)
    const decoded = await decode(reusedPieces(frames, size), zstdDecompressor({ portable: true }))
    expect(decoded.equals(whole)).toBe(true)
  })

  it(`the default decoder (${zstdImplementation()} on node ${process.version}) decodes them too`, async () => {
    const decoded = await decode(reusedPieces(frames, 65536), zstdDecompressor())
    expect(decoded.equals(whole)).toBe(true)
  })

  it.each([
    ['cut short', frames.subarray(0, frames.length - 1000)],
    ['with a block of the reserved type', reservedBlock(frames)],
  ])('fzstd fails on a stream %s, never ends it quietly', async (_name, bad) => {
    await expect(decode(reusedPieces(bad, 4096), zstdDecompressor({ portable: true }))).rejects.toThrow()
  })

  it("xapi-sim's exports decode with the zstd command, its imports read the command's output", async () => {
    const made = await decode(
      Readable.from([content.subarray(0, 400_000), content.subarray(400_000)]),
      zstdCompressor(),
    )
    expect(made.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))).toBe(true)
    expect(unzstd(made).equals(content)).toBe(true)
    const read = await decode(reusedPieces(frames, 3000), simDecompressor())
    expect(read.equals(whole)).toBe(true)
  })
})
