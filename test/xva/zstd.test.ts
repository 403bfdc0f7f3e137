// zstd without a native addon: Node's zlib where it has zstd (22.15+), fzstd before. Both are
// fed real zstd from Debian's zstd command (compressed blocks, several frames), in small pieces
// through one reused buffer, as a file reader hands them over.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import type { Transform } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { zstdCompressor, zstdDecompressor as simDecompressor } from '../../simulator/xapi/xva/zstd.js'
import { zstdDecompressor, zstdImplementation } from '../../src/xva/zstd.js'
import { ZstdFrames } from '../../src/xva/zstd-frames.js'
import { unzstd } from '../helpers/xva.js'

/** Half random, half repeated: zstd makes compressed and RLE blocks of it. */
const content = Buffer.concat([randomBytes(700_000), Buffer.alloc(900_000, 0x41), randomBytes(300_000)])
const cli = (data: Buffer): Buffer => execFileSync('zstd', ['-c', '-q', '-3'], { input: data })

/**
 * Feeds `data` to `decoder` in pieces of `size` through one buffer, overwritten for the next
 * piece as soon as the decoder's write callback says it has taken the previous one (as
 * dpxen's readers do), and collects what comes out.
 */
async function decode(data: Buffer, size: number, decoder: Transform): Promise<Buffer> {
  const out: Buffer[] = []
  const collected = (async () => {
    for await (const chunk of decoder) out.push(Buffer.from(chunk as Buffer))
  })()
  collected.catch(() => undefined)
  const buffer = Buffer.alloc(size)
  for (let at = 0; at < data.length; at += size) {
    const n = data.copy(buffer, 0, at, at + size)
    await Promise.race([
      new Promise<void>((resolve, reject) =>
        decoder.write(buffer.subarray(0, n), (error) => (error ? reject(error) : resolve())),
      ),
      collected,
    ])
  }
  decoder.end()
  await collected
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
    const decoded = await decode(frames, size, zstdDecompressor({ portable: true }))
    expect(decoded.equals(whole)).toBe(true)
  })

  it(`the default decoder (${zstdImplementation()} on node ${process.version}) decodes them too`, async () => {
    const decoded = await decode(frames, 65536, zstdDecompressor())
    expect(decoded.equals(whole)).toBe(true)
  })

  it.each([
    ['cut short', frames.subarray(0, frames.length - 1000)],
    ['with a block of the reserved type', reservedBlock(frames)],
  ])('fzstd fails on a stream %s, never ends it quietly', async (_name, bad) => {
    await expect(decode(bad, 4096, zstdDecompressor({ portable: true }))).rejects.toThrow()
  })

  it("xapi-sim's exports decode with the zstd command, its imports read the command's output", async () => {
    const made = await decode(content, 400_000, zstdCompressor())
    expect(made.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))).toBe(true)
    expect(unzstd(made).equals(content)).toBe(true)
    const read = await decode(frames, 3000, simDecompressor())
    expect(read.equals(whole)).toBe(true)
  })

  it('finds where each frame ends from the headers alone, fed whole or a byte at a time', () => {
    const one = cli(content)
    const two = cli(content.subarray(0, 100_000))
    const skippable = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, 5, 0, 0, 0]), Buffer.alloc(5, 9)])
    const stream = Buffer.concat([one, skippable, two])
    const expected = [one.length, one.length + skippable.length, stream.length]
    expect(new ZstdFrames().feed(stream)).toEqual(expected)
    const slow = new ZstdFrames()
    const ends: number[] = []
    for (let i = 0; i < stream.length; i++)
      for (const end of slow.feed(stream.subarray(i, i + 1))) ends.push(i + end)
    expect(ends).toEqual(expected)
    expect(slow.atBoundary).toBe(true)
    const cut = new ZstdFrames()
    cut.feed(stream.subarray(0, stream.length - 3))
    expect(cut.atBoundary).toBe(false)
    expect(() => new ZstdFrames().feed(Buffer.from('HTTP/1.1 500'))).toThrow(/bad magic/)
  })
})
