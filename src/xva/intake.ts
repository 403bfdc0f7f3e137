// The receiving end of an export: each piece of the stream, as it comes off the socket, is
// counted, hashed (XXH64 of the file, for the manifest), checked (plain XVA: synchronously;
// gzip/zstd: through the decompressor) and copied into the file's slabs, all before the
// reader reuses its buffer. The check always covers the layout and the tar end marker, so a
// cut-off export can never pass for a whole one; `verify` adds every chunk's checksum. push() says when to stop reading; the wake callback says when to
// go on.
import type { Transform } from 'node:stream'
import { DpxenError } from '../core/errors.js'
import type { Intake } from '../core/intake.js'
import { newXxh64, xxh64Hex } from '../core/xxh64.js'
import type { FileSink } from './file-sink.js'
import {
  corruptStream,
  decompressor,
  sniffCompression,
  type StreamCompression,
  type StreamResult,
} from './pipe.js'
import { XvaVerifier } from './verify.js'

export class XvaIntake implements Intake<StreamResult> {
  #sink: FileSink
  /** The largest piece push() may be given. */
  #maxPiece: number
  #wake: () => void
  #verifier: XvaVerifier
  #verify: boolean
  #hash = newXxh64()
  #bytes = 0
  #kind: StreamCompression | undefined
  #unzip: Transform | undefined
  #unzipped: Promise<void> | undefined
  #unzipFull = false
  #unzipError: unknown
  #waiting = false

  constructor(sink: FileSink, options: { verify: boolean; maxPiece: number; wake: () => void }) {
    this.#sink = sink
    this.#verify = options.verify
    this.#verifier = new XvaVerifier({ checksums: options.verify })
    this.#maxPiece = options.maxPiece
    this.#wake = options.wake
  }

  get bytes(): number {
    return this.#bytes
  }

  /** Takes a piece (not kept after the call); false: stop reading until the wake callback. */
  push(piece: Buffer): boolean {
    if (this.#unzipError !== undefined) throw this.#corrupt(this.#unzipError)
    if (this.#kind === undefined) this.#start(piece)
    this.#bytes += piece.length
    this.#hash.update(piece)
    this.#sink.take(piece)
    if (this.#unzip) {
      if (!this.#unzip.write(Buffer.from(piece))) {
        this.#unzipFull = true
        this.#unzip.once('drain', () => {
          this.#unzipFull = false
          this.#maybeWake()
        })
      }
    } else this.#verifier.push(piece)
    if (this.#canTake()) return true
    this.#waiting = true
    if (this.#sink.room < this.#maxPiece) this.#sink.onRoom(() => this.#maybeWake())
    return false
  }

  #canTake(): boolean {
    return !this.#unzipFull && this.#sink.room >= this.#maxPiece
  }

  #maybeWake(): void {
    if (!this.#waiting) return
    if (this.#sink.failure) {
      this.#waiting = false
      this.#wake()
      return
    }
    if (!this.#canTake()) {
      if (this.#sink.room < this.#maxPiece) this.#sink.onRoom(() => this.#maybeWake())
      return
    }
    this.#waiting = false
    this.#wake()
  }

  #start(head: Buffer): void {
    this.#kind = sniffCompression(head)
    const unzip = decompressor(this.#kind)
    if (!unzip) return
    this.#unzip = unzip
    this.#unzipped = (async () => {
      for await (const out of unzip) this.#verifier.push(out as Buffer)
    })()
    // A failure is thrown by the next push, or by finish().
    this.#unzipped.catch((error: unknown) => {
      this.#unzipError = error
      this.#unzipFull = false
      this.#maybeWake()
    })
  }

  /** After the last piece: what the XVA holds (complete), the file written, flushed and closed. */
  async finish(): Promise<StreamResult> {
    try {
      if (this.#unzip) {
        this.#unzip.end()
        await this.#unzipped
      }
    } catch (error) {
      throw this.#corrupt(error)
    }
    const summary = this.#verifier.finish()
    await this.#sink.close()
    return {
      summary,
      checksumsVerified: this.#verify,
      bytes: this.#bytes,
      xxh64: xxh64Hex(this.#hash),
      compression: this.#kind ?? 'none',
    }
  }

  #corrupt(error: unknown): DpxenError {
    return corruptStream(this.#kind ?? 'none', error)
  }

  /** Stops after a failure: the decompressor goes, the file is closed (the caller removes it). */
  async abort(): Promise<void> {
    this.#unzip?.destroy()
    await this.#sink.abort()
  }
}
