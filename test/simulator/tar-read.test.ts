// xapi-sim's tar reader: entries straddling socket chunks come out whole and intact, each valid
// for as long as the import needs it; truncation and damage are refused as xapi refuses them.
import { randomBytes } from 'node:crypto'
import { PassThrough } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { ByteReader, readTar } from '../../simulator/xapi/xva/tar-read.js'
import { pack, sha256 } from '../helpers/xva.js'

/** A stream that delivers `data` in pieces of `piece` bytes. */
function feed(data: Buffer, piece: number): PassThrough {
  const stream = new PassThrough({ highWaterMark: piece })
  void (async () => {
    for (let i = 0; i < data.length; i += piece) {
      if (!stream.write(data.subarray(i, i + piece))) await new Promise((r) => stream.once('drain', r))
    }
    stream.end()
  })()
  return stream
}

describe('xapi-sim tar reader', () => {
  it.each([1000, 65_536, 300_001])(
    'reads every entry intact from pieces of %i bytes, the data valid until two more large entries',
    async (piece) => {
      const files = Array.from({ length: 12 }, (_, i) => ({
        name: `Ref:1/${String(i).padStart(8, '0')}`,
        data: randomBytes(i % 3 === 0 ? 100 : 1024 * 1024 - i),
      }))
      const archive = await pack(files)
      const seen: { name: string; data: Buffer }[] = []
      for await (const entry of readTar(new ByteReader(feed(archive, piece)), 64 << 20)) {
        seen.push({ name: entry.header.name, data: entry.data })
        // The import writes a chunk after reading its checksum entry: the one before must hold.
        if (seen.length >= 2) {
          const before = seen[seen.length - 2]!
          expect(sha256(before.data), before.name).toBe(sha256(files[seen.length - 2]!.data))
        }
      }
      expect(seen.map((s) => s.name)).toEqual(files.map((f) => f.name))
      expect(sha256(seen.at(-1)!.data)).toBe(sha256(files.at(-1)!.data))
    },
  )

  it('refuses a stream cut short and a damaged header', async () => {
    const archive = await pack([{ name: 'ova.xml', data: randomBytes(5000) }])
    const cut = readTar(new ByteReader(feed(archive.subarray(0, 3000), 700)), 1 << 20)
    await expect(cut.next()).rejects.toMatchObject({ code: 'IMPORT_ERROR_PREMATURE_EOF' })
    const damaged = Buffer.from(archive)
    damaged[10] = damaged[10]! ^ 0xff
    const bad = readTar(new ByteReader(feed(damaged, 4096)), 1 << 20)
    await expect(bad.next()).rejects.toMatchObject({ code: 'IMPORT_ERROR' })
  })
})
