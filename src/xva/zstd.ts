// zstd decompression as a stream with backpressure: Node's own zlib where the running Node has
// it (22.15 and later; one decoder per frame), fzstd (plain JavaScript) before that. Neither needs a compiler or a
// platform build, so the package installs anywhere Node runs.
// fzstd does not check a frame's content checksum: damage inside a block is caught by the
// XVA's own chunk checksums, which the verifier checks behind the decompressor.
import { Transform } from 'node:stream'
import * as zlib from 'node:zlib'
import { Decompress } from 'fzstd'
import { ZstdFrames } from './zstd-frames.js'

type ZlibWithZstd = typeof zlib & { createZstdDecompress?: () => Transform }

/** Which implementation `zstdDecompressor()` uses on this Node. */
export function zstdImplementation(): 'node' | 'fzstd' {
  return typeof (zlib as ZlibWithZstd).createZstdDecompress === 'function' ? 'node' : 'fzstd'
}

/** A Transform from zstd frames (one or several, concatenated) to their content. */
export function zstdDecompressor(options: { portable?: boolean } = {}): Transform {
  const native = (zlib as ZlibWithZstd).createZstdDecompress
  if (!options.portable && typeof native === 'function') return framewise(() => native())
  return portableDecompressor()
}

/**
 * Node's decoder, a new one for each frame (it stops at the end of the first and drops the
 * rest): the frames are found from their headers (zstd-frames.ts).
 */
function framewise(create: () => Transform): Transform {
  const frames = new ZstdFrames()
  let current: { decoder: Transform; ended: Promise<void> } | undefined
  const open = (out: Transform): Transform => {
    const decoder = create()
    decoder.on('data', (data: Buffer) => out.push(data))
    const ended = new Promise<void>((resolve, reject) => {
      decoder.once('end', resolve)
      decoder.once('error', reject)
    })
    ended.catch(() => undefined)
    current = { decoder, ended }
    return decoder
  }
  const write = (decoder: Transform, part: Buffer): Promise<void> =>
    new Promise((resolve, reject) => decoder.write(part, (error) => (error ? reject(error) : resolve())))
  const close = async (): Promise<void> => {
    const { decoder, ended } = current!
    current = undefined
    decoder.end()
    await ended
  }
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      const feed = async (out: Transform): Promise<void> => {
        let from = 0
        for (const end of frames.feed(chunk)) {
          await write(current?.decoder ?? open(out), chunk.subarray(from, end))
          await close()
          from = end
        }
        if (from < chunk.length) await write(current?.decoder ?? open(out), chunk.subarray(from))
      }
      feed(this).then(() => done(), done)
    },
    flush(done) {
      if (!frames.atBoundary) return done(new Error('the zstd stream ends inside a frame'))
      ;(current ? close() : Promise.resolve()).then(() => done(), done)
    },
  })
}

function portableDecompressor(): Transform {
  const step = (final: boolean, chunk: Uint8Array, done: (error?: Error) => void): void => {
    try {
      decoder.push(chunk, final)
      done()
    } catch (error) {
      done(error as Error)
    }
  }
  const stream = new Transform({
    // A copy: fzstd keeps an incomplete block's bytes for the next push, and a reader may reuse
    // its buffer once this callback has run.
    transform: (chunk: Buffer, _encoding, done) => step(false, new Uint8Array(chunk), done),
    flush: (done) => step(true, new Uint8Array(0), done),
  })
  // fzstd hands out each block in a buffer of its own, so pushing it without a copy is safe.
  const decoder = new Decompress((data) => {
    if (data.length > 0) stream.push(Buffer.from(data.buffer, data.byteOffset, data.length))
  })
  return stream
}
