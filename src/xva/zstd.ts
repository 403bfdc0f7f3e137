// zstd decompression as a stream with backpressure: Node's own zlib where the running Node has
// it (22.15 and later), fzstd (plain JavaScript) before that. Neither needs a compiler or a
// platform build, so the package installs anywhere Node runs.
// fzstd does not check a frame's content checksum: damage inside a block is caught by the
// XVA's own chunk checksums, which the verifier checks behind the decompressor.
import { Transform } from 'node:stream'
import * as zlib from 'node:zlib'
import { Decompress } from 'fzstd'

type ZlibWithZstd = typeof zlib & { createZstdDecompress?: () => Transform }

/** Which implementation `zstdDecompressor()` uses on this Node. */
export function zstdImplementation(): 'node' | 'fzstd' {
  return typeof (zlib as ZlibWithZstd).createZstdDecompress === 'function' ? 'node' : 'fzstd'
}

/** A Transform from zstd frames (one or several, concatenated) to their content. */
export function zstdDecompressor(options: { portable?: boolean } = {}): Transform {
  const native = (zlib as ZlibWithZstd).createZstdDecompress
  if (!options.portable && typeof native === 'function') return native()
  return portableDecompressor()
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
