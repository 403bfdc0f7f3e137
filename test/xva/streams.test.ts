// The two stream helpers of a transfer: the chunk reader (no joined copies, backpressure kept)
// and the slab file writer (exact bytes at any chunk size, errors reported, nothing left open).
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { describe, expect, it } from 'vitest'
import { chunksOf } from '../../src/xva/chunks.js'
import { FileSink } from '../../src/xva/file-sink.js'
import { tempDir } from '../helpers/hooks.js'

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex')

describe('chunksOf', () => {
  it('hands over each chunk as it was pushed, never a joined copy', async () => {
    const stream = new PassThrough()
    const pushed = [randomBytes(1000), randomBytes(70_000), randomBytes(3)]
    for (const chunk of pushed) stream.write(chunk)
    stream.end()
    const got: Buffer[] = []
    for await (const chunk of chunksOf(stream)) got.push(chunk)
    expect(got.map((c) => c.length)).toEqual([1000, 70_000, 3])
    expect(Buffer.concat(got).equals(Buffer.concat(pushed))).toBe(true)
  })

  it('pauses the stream while a high-water mark of bytes waits, and resumes it when read', async () => {
    let produced = 0
    const stream = new Readable({
      read() {
        produced += 1024
        this.push(produced > 64 * 1024 ? null : Buffer.alloc(1024, 1))
      },
    })
    const reader = chunksOf(stream, 8 * 1024)[Symbol.asyncIterator]()
    await reader.next()
    await new Promise((resolve) => setTimeout(resolve, 50))
    // Not read on: production stopped near the mark (plus the stream's own buffer).
    expect(produced).toBeLessThan(8 * 1024 + stream.readableHighWaterMark + 2048)
    expect(stream.isPaused()).toBe(true)
    let total = 1024
    for (let next = await reader.next(); !next.done; next = await reader.next()) total += next.value.length
    expect(total).toBe(64 * 1024)
  })

  it("rejects with the stream's error, and with a premature close", async () => {
    const failing = new PassThrough()
    const reading = (async () => {
      for await (const chunk of chunksOf(failing)) void chunk
    })()
    failing.write(Buffer.alloc(10))
    failing.destroy(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))
    await expect(reading).rejects.toMatchObject({ code: 'ECONNRESET' })

    const closing = new PassThrough()
    const reading2 = (async () => {
      for await (const chunk of chunksOf(closing)) void chunk
    })()
    closing.destroy()
    await expect(reading2).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' })
  })

  it('destroys the stream when the reader stops early', async () => {
    const stream = new PassThrough()
    stream.write(Buffer.alloc(10))
    for await (const chunk of chunksOf(stream)) {
      expect(chunk.length).toBe(10)
      break
    }
    expect(stream.destroyed).toBe(true)
  })
})

describe('FileSink', () => {
  it.each([
    ['chunks smaller than a slab', 777],
    ['chunks larger than a slab', 70_001],
    ['chunks of exactly a slab', 4096],
  ])('writes exactly the bytes given (%s)', async (_what, piece) => {
    const dir = tempDir()
    const data = randomBytes(300_000)
    const sink = await FileSink.open(join(dir, 'out'), { slabSize: 4096, slabs: 2 })
    for (let i = 0; i < data.length; i += piece) {
      if (!sink.write(data.subarray(i, i + piece))) await new Promise((r) => sink.once('drain', r))
    }
    sink.end()
    await finished(sink)
    expect(sha(readFileSync(join(dir, 'out')))).toBe(sha(data))
    expect(sink.destroyed).toBe(true)
  })

  it("refuses an existing file with flags 'wx' and leaves it alone", async () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'out'), 'keep')
    await expect(FileSink.open(join(dir, 'out'), { flags: 'wx' })).rejects.toMatchObject({ code: 'EEXIST' })
    expect(readFileSync(join(dir, 'out'), 'utf8')).toBe('keep')
  })

  it('reports a failing disk write as a stream error', async () => {
    if (!existsSync('/dev/full')) return
    const sink = await FileSink.open('/dev/full', { slabSize: 1024, slabs: 2 })
    const errored = new Promise<Error>((resolve) => sink.once('error', resolve))
    for (let i = 0; i < 10 && !sink.destroyed; i++) sink.write(Buffer.alloc(1024))
    sink.end()
    expect(await errored).toMatchObject({ code: 'ENOSPC' })
  })
})
