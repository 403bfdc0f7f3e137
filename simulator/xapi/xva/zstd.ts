// zstd for xapi-sim's exports and imports (use_compression=zstd), with nothing to compile: Node's
// own zlib for exports where the running Node has it (22.15 and later); before that, exports are
// valid zstd frames made of raw (stored) blocks, which every zstd decoder reads. Imports are read
// with fzstd (plain JavaScript). A real host compresses; a client must read both the same way.
import { Transform } from 'node:stream'
import * as zlib from 'node:zlib'
import { Decompress } from 'fzstd'

type Zlib = typeof zlib & {
  createZstdCompress?: () => Transform
}
const node = zlib as Zlib

/** The largest block a frame with a 128 KiB window may carry (RFC 8878 §3.1.1.2). */
const MAX_BLOCK = 128 * 1024
/** Magic number, then a frame header: no content size, no checksum, a 2^17-byte window. */
const FRAME_HEAD = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3])

function blockHead(size: number, last: boolean): Buffer {
  const value = (size << 3) | (last ? 1 : 0) // block type 0: raw
  return Buffer.from([value & 0xff, (value >> 8) & 0xff, (value >> 16) & 0xff])
}

export function zstdCompressor(): Transform {
  if (typeof node.createZstdCompress === 'function') return node.createZstdCompress()
  let started = false
  const start = (stream: Transform): void => {
    if (!started) stream.push(FRAME_HEAD)
    started = true
  }
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      start(this)
      for (let at = 0; at < chunk.length; at += MAX_BLOCK) {
        const block = chunk.subarray(at, at + MAX_BLOCK)
        this.push(Buffer.concat([blockHead(block.length, false), block]))
      }
      done()
    },
    flush(done) {
      start(this)
      this.push(blockHead(0, true))
      done()
    },
  })
}

/**
 * Imports are read with fzstd on every Node: Node's own decoder stops after the first frame,
 * and xapi (zstd -d) reads every frame of a stream.
 */
export function zstdDecompressor(): Transform {
  const pending: Uint8Array[] = []
  const decoder = new Decompress((data) => pending.push(data))
  const feed = (stream: Transform, chunk: Uint8Array, final: boolean): void => {
    decoder.push(chunk, final)
    for (const data of pending.splice(0)) if (data.length) stream.push(data)
  }
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      try {
        feed(this, new Uint8Array(chunk), false) // a copy: fzstd may keep a part for later
        done()
      } catch (error) {
        done(error as Error)
      }
    },
    flush(done) {
      try {
        feed(this, new Uint8Array(0), true)
        done()
      } catch (error) {
        done(error as Error)
      }
    },
  })
}
