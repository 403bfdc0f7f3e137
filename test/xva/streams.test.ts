// The slab file writer of a transfer: exact bytes at any piece size, pieces copied, errors reported.
import { createHash, randomBytes } from 'node:crypto'
import {
  constants,
  existsSync,
  promises as fsp,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it, vi } from 'vitest'
import { FileSink } from '../../src/xva/file-sink.js'
import { tempDir } from '../helpers/hooks.js'

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex')

describe('FileSink', () => {
  async function fill(sink: FileSink, data: Buffer, piece: number): Promise<void> {
    for (let i = 0; i < data.length; i += piece) {
      const part = data.subarray(i, i + piece)
      while (sink.room < part.length) await new Promise<void>((resolve) => sink.onRoom(resolve))
      sink.take(part)
      // The caller may reuse its buffer at once: the sink must have copied it.
      part.fill(0)
    }
  }

  it.each([
    ['pieces smaller than a slab', 777],
    ['pieces straddling slabs', 4000],
    ['pieces of exactly a slab', 4096],
  ])('writes exactly the bytes given (%s), and closes the file', async (_what, piece) => {
    const dir = tempDir()
    const data = randomBytes(300_000)
    const expected = sha(data)
    const sink = await FileSink.open(join(dir, 'out'), { slabSize: 4096, slabs: 2 })
    await fill(sink, data, piece)
    await sink.close()
    expect(sha(readFileSync(join(dir, 'out')))).toBe(expected)
  })

  describe('direct writes (O_DIRECT)', () => {
    const linux = constants.O_DIRECT !== undefined
    const slab = 64 * 1024

    /** Replaces FileHandle.prototype.write while `run` runs. */
    async function withWrite(
      replace: (write: (...args: unknown[]) => Promise<unknown>) => (...args: unknown[]) => Promise<unknown>,
      run: () => Promise<void>,
    ): Promise<void> {
      const probe = await fsp.open(join(tempDir(), 'probe'), 'w')
      const proto = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<unknown> }
      await probe.close()
      const write = proto.write
      proto.write = replace(write)
      try {
        await run()
      } finally {
        proto.write = write
      }
    }

    it.runIf(linux).each([
      ['a whole number of slabs', 4 * slab],
      ['a last slab of whole blocks', 3 * slab + 8192],
      ['a last slab ending inside a block', 3 * slab + 5000],
      ['less than a block', 100],
      ['nothing', 0],
    ])('writes exactly the bytes given, %s, around the page cache', async (_what, size) => {
      const path = join(tempDir(), 'out')
      const data = randomBytes(size)
      const expected = sha(data)
      const sink = await FileSink.open(path, { slabSize: slab, slabs: 3, direct: true, flags: 'wx' })
      expect(sink.direct).toBe(true)
      await fill(sink, data, 10_000)
      await sink.close()
      // Padding of the last write cut off: the file is exactly the data.
      expect(statSync(path).size).toBe(size)
      expect(sha(readFileSync(path))).toBe(expected)
    })

    it('is not used unless asked for, nor with slabs that are not whole blocks', async () => {
      const dir = tempDir()
      const plain = await FileSink.open(join(dir, 'a'), { slabSize: slab })
      expect(plain.direct).toBe(false)
      await plain.close()
      const odd = await FileSink.open(join(dir, 'b'), { slabSize: 5000, direct: true })
      expect(odd.direct).toBe(false)
      await fill(odd, randomBytes(12_345), 3000)
      await odd.close()
      expect(statSync(join(dir, 'b')).size).toBe(12_345)
    })

    it.runIf(linux)(
      'goes on with ordinary writes when the file system refuses a direct write (EINVAL)',
      async () => {
        const path = join(tempDir(), 'out')
        const data = randomBytes(5 * slab + 777)
        const expected = sha(data)
        let refused = 0
        await withWrite(
          (write) =>
            async function (this: unknown, ...args: unknown[]) {
              // The first two writes (both direct, under way together) are refused as misaligned.
              if (refused < 2) {
                refused++
                throw Object.assign(new Error('EINVAL: invalid argument, write'), { code: 'EINVAL' })
              }
              return write.apply(this, args)
            },
          async () => {
            const sink = await FileSink.open(path, { slabSize: slab, slabs: 3, direct: true })
            await fill(sink, data, 20_000)
            await sink.close()
            expect(sink.direct).toBe(false)
          },
        )
        expect(refused).toBe(2)
        expect(sha(readFileSync(path))).toBe(expected)
      },
    )

    it.runIf(linux)(
      'opens the file again for ordinary writes where O_DIRECT is refused at open',
      async () => {
        const path = join(tempDir(), 'out')
        const open = fsp.open
        // As Linux does on a file system without O_DIRECT: the file is created, then EINVAL.
        fsp.open = async (file, flags, mode) => {
          if (typeof flags === 'number' && flags & constants.O_DIRECT!) {
            await (await open(file, 'w', mode)).close()
            throw Object.assign(new Error('EINVAL: invalid argument, open'), { code: 'EINVAL' })
          }
          return open(file, flags, mode)
        }
        try {
          const data = randomBytes(2 * slab + 10)
          const expected = sha(data)
          const sink = await FileSink.open(path, { slabSize: slab, direct: true, flags: 'wx', mode: 0o600 })
          expect(sink.direct).toBe(false)
          await fill(sink, data, 8000)
          await sink.close()
          expect(sha(readFileSync(path))).toBe(expected)
          expect(statSync(path).mode & 0o777).toBe(0o600)
        } finally {
          fsp.open = open
        }
      },
    )

    it.runIf(linux)("still refuses an existing file with flags 'wx'", async () => {
      const path = join(tempDir(), 'out')
      writeFileSync(path, 'keep')
      await expect(FileSink.open(path, { flags: 'wx', direct: true, slabSize: slab })).rejects.toMatchObject({
        code: 'EEXIST',
      })
      expect(readFileSync(path, 'utf8')).toBe('keep')
    })
  })

  it('refuses a piece larger than its room or a slab instead of growing', async () => {
    const sink = await FileSink.open(join(tempDir(), 'out'), { slabSize: 1024, slabs: 2 })
    expect(sink.room).toBe(2048)
    expect(() => sink.take(Buffer.alloc(1025))).toThrow(RangeError)
    sink.take(Buffer.alloc(1000))
    sink.take(Buffer.alloc(1000))
    expect(sink.room).toBe(48)
    expect(() => sink.take(Buffer.alloc(49))).toThrow(RangeError)
    await sink.abort()
  })

  it("refuses an existing file with flags 'wx' and leaves it alone", async () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'out'), 'keep')
    await expect(FileSink.open(join(dir, 'out'), { flags: 'wx' })).rejects.toMatchObject({ code: 'EEXIST' })
    expect(readFileSync(join(dir, 'out'), 'utf8')).toBe('keep')
  })

  it('reports a failing disk write: from take, and from close', async () => {
    if (!existsSync('/dev/full')) return
    const sink = await FileSink.open('/dev/full', { slabSize: 1024, slabs: 2 })
    sink.take(Buffer.alloc(1024))
    sink.take(Buffer.alloc(1024))
    await new Promise<void>((resolve) => sink.onRoom(resolve))
    const full = {
      code: 'LOCAL_IO',
      message: expect.stringMatching(/^the staging folder is full \(ENOSPC\) writing \/dev\/full: /),
    }
    expect(sink.failure).toMatchObject(full)
    expect(() => sink.take(Buffer.alloc(1))).toThrow(/ENOSPC/)
    await expect(sink.close()).rejects.toMatchObject(full)
  })

  /** The files this process has open (Linux). */
  const openFiles = (): string[] =>
    readdirSync('/proc/self/fd').flatMap((fd) => {
      try {
        return [readlinkSync(`/proc/self/fd/${fd}`)]
      } catch {
        return []
      }
    })

  it.skipIf(!existsSync('/proc/self/fd'))(
    'abort does not wait for a write that hangs, and closes the file only once that write is over',
    async () => {
      const dir = tempDir()
      const path = join(dir, 'out')
      // A disk that does not answer (a stuck network share): every write waits for release().
      const probe = await fsp.open(join(dir, 'probe'), 'w')
      const proto = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<unknown> }
      await probe.close()
      const write = proto.write
      let release!: () => void
      const released = new Promise<void>((resolve) => (release = resolve))
      proto.write = async function (this: unknown, ...args: unknown[]) {
        await released
        return write.apply(this, args)
      }
      try {
        const sink = await FileSink.open(path, { slabSize: 1024, slabs: 2 })
        sink.take(Buffer.alloc(1024, 7)) // a full slab: its write starts, and hangs
        const started = performance.now()
        await sink.abort(50)
        expect(performance.now() - started).toBeLessThan(1000)
        // Still open: no other file may get its descriptor while the write can still land.
        expect(openFiles()).toContain(realpathSync(path))
        release()
        await vi.waitFor(() => expect(openFiles()).not.toContain(realpathSync(path)))
        expect(readFileSync(path)).toEqual(Buffer.alloc(1024, 7))
      } finally {
        proto.write = write
      }
    },
  )
})
