// The one check of every stream dpxen keeps or reads back: an export as it comes off the socket
// (intake.ts puts a StreamCheck in front of the file), and a file on disk before a restore or
// under `dpxen verify` (checkFile, below). Either way the bytes as stored are counted and hashed
// (XXH64, for the manifest) and go to a format's Verifier (XvaVerifier, VhdVerifier), through a
// decompressor first when an XVA was exported with gzip or zstd. Memory stays flat at any size:
// a verifier keeps nothing of a piece, and the decompressor is fed with backpressure.
import type { Transform } from 'node:stream'
import { createGunzip } from 'node:zlib'
import { DpxenError } from '../core/errors.js'
import { openRegularFile, SmallFileError } from '../core/small-file.js'
import { newXxh64, xxh64Hex } from '../core/xxh64.js'
import { zstdDecompressor } from './zstd.js'

/** What checks one format, piece by piece (XvaVerifier, VhdVerifier). */
export interface Verifier<S> {
  /** Takes the next piece, valid only during the call; throws XVA_INVALID at the first fault. */
  push(piece: Buffer): void
  /** After the last piece: what the stream held, or throws saying where it stopped. */
  finish(): S
}

/** A stream taken whole: nothing in it to check beyond its bytes (the pool database). */
export const bytesOnly: () => Verifier<undefined> = () => ({ push: () => undefined, finish: () => undefined })

export type StreamCompression = 'none' | 'gzip' | 'zstd'

/** What a checked stream was. */
export interface Checked<S> {
  /** What the verifier found: the stream was whole. */
  summary: S
  /** Bytes as stored (compressed if the stream was). */
  bytes: number
  /** XXH64 of the bytes as stored (16 hex digits): as strong as needed against damage, and 10x cheaper than SHA-256. */
  xxh64: string
  compression: StreamCompression
}

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd]

/** What the first bytes say: gzip, zstd, or plain. */
export function sniffCompression(head: Buffer): StreamCompression {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip'
  if (ZSTD_MAGIC.every((b, i) => head[i] === b)) return 'zstd'
  return 'none'
}

function decompressor(kind: StreamCompression): Transform | undefined {
  if (kind === 'gzip') return createGunzip()
  if (kind === 'zstd') return zstdDecompressor()
  return undefined
}

/**
 * The one rule for a failure inside a decompressor: it is fed nothing but the stored bytes, so
 * whatever it throws means the gzip or zstd stream is corrupt (XVA_INVALID). A DpxenError from
 * the verifier it feeds passes as it is.
 */
function corruptStream(kind: StreamCompression, error: unknown): DpxenError {
  if (error instanceof DpxenError) return error
  return new DpxenError(
    'XVA_INVALID',
    `the ${kind} stream is corrupt: ${error instanceof Error ? error.message : String(error)}`,
  )
}

/**
 * A verifier behind the bytes as stored. push() is synchronous; it answers false while the
 * decompressor has not taken in what it was given, and onReady() says when to go on. A
 * decompressor's failure is thrown by the next push(), or by finish().
 */
export class StreamCheck<S> {
  readonly #verifier: Verifier<S>
  readonly #compressed: boolean
  #hash = newXxh64()
  #bytes = 0
  #kind: StreamCompression | undefined
  #unzip: Transform | undefined
  #unzipped: Promise<void> | undefined
  #full = false
  #failure: DpxenError | undefined
  #onReady: (() => void) | undefined

  /** `compressed`: the stream may be gzip or zstd (an XVA), told by its first bytes. */
  constructor(verifier: Verifier<S>, options: { compressed?: boolean } = {}) {
    this.#verifier = verifier
    this.#compressed = options.compressed === true
  }

  get bytes(): number {
    return this.#bytes
  }

  /** Whether push() may be called now. */
  get ready(): boolean {
    return !this.#full
  }

  /** Takes a piece (not kept after the call); false: wait for onReady before the next. */
  push(piece: Buffer): boolean {
    if (this.#failure) throw this.#failure
    if (this.#kind === undefined) this.#start(piece)
    this.#bytes += piece.length
    this.#hash.update(piece)
    if (!this.#unzip) {
      this.#verifier.push(piece)
      return true
    }
    // Copied: the decompressor works on it after the caller has reused its buffer.
    if (this.#unzip.write(Buffer.from(piece))) return true
    this.#full = true
    this.#unzip.once('drain', () => this.#wake())
    return false
  }

  /** Calls `wake` once, when push() may be called again (or has a failure to throw). */
  onReady(wake: () => void): void {
    if (this.ready) queueMicrotask(wake)
    else this.#onReady = wake
  }

  #wake(): void {
    this.#full = false
    const wake = this.#onReady
    this.#onReady = undefined
    wake?.()
  }

  #start(head: Buffer): void {
    this.#kind = this.#compressed ? sniffCompression(head) : 'none'
    const unzip = decompressor(this.#kind)
    if (!unzip) return
    this.#unzip = unzip
    this.#unzipped = (async () => {
      for await (const out of unzip) this.#verifier.push(out as Buffer)
    })()
    this.#unzipped.catch((error: unknown) => {
      this.#failure = corruptStream(this.#kind!, error)
      this.#wake()
    })
  }

  /** After the last piece: what the verifier found, the bytes and their hash. */
  async finish(): Promise<Checked<S>> {
    if (this.#failure) throw this.#failure
    if (this.#unzip) {
      this.#unzip.end()
      await this.#unzipped!.catch((error: unknown) => {
        throw corruptStream(this.#kind!, error)
      })
    }
    return {
      summary: this.#verifier.finish(),
      bytes: this.#bytes,
      xxh64: xxh64Hex(this.#hash),
      compression: this.#kind ?? 'none',
    }
  }

  /** Stops after a failure; never throws. */
  abort(): void {
    this.#unzip?.destroy()
  }
}

/** Checks a stream to its end; each piece is done with before the next is asked for, so a source may reuse its buffer. */
export async function checkStream<S>(
  source: AsyncIterable<Buffer>,
  verifier: Verifier<S>,
  options: { compressed?: boolean; signal?: AbortSignal; onBytes?: (bytes: number) => void } = {},
): Promise<Checked<S>> {
  const check = new StreamCheck(verifier, options)
  try {
    for await (const piece of source) {
      if (options.signal?.aborted) throw new DpxenError('ABORTED', 'interrupted')
      if (piece.length === 0) continue
      if (!check.push(piece)) await new Promise<void>((resolve) => check.onReady(resolve))
      options.onBytes?.(check.bytes)
    }
    return await check.finish()
  } catch (error) {
    check.abort()
    throw error
  }
}

/** Bytes per read of a file. */
const READ_SIZE = 1024 * 1024

/** The file, if it is a regular one: a FIFO or a device in a staging folder is refused, never waited on. */
export async function openFile(path: string) {
  try {
    return await openRegularFile(path)
  } catch (error) {
    if (error instanceof SmallFileError) throw new DpxenError('XVA_INVALID', `${path}: not a regular file`)
    throw error
  }
}

/**
 * The file's bytes, each piece valid until the next is asked for. One buffer, allocated once, is
 * read into again and again: an fs read stream makes a new Buffer for every read, and V8 lets
 * tens of MiB of them pile up before it collects them (the restore hook's peak RSS came from there).
 */
async function* pieces(path: string): AsyncGenerator<Buffer> {
  const handle = await openFile(path)
  try {
    const buffer = Buffer.allocUnsafeSlow(READ_SIZE)
    for (let position = 0; ;) {
      const { bytesRead } = await handle.read(buffer, 0, READ_SIZE, position)
      if (bytesRead === 0) return
      position += bytesRead
      yield buffer.subarray(0, bytesRead)
    }
  } finally {
    await handle.close()
  }
}

/** Checks a file on disk as its export was checked; `onBytes` is told the bytes read so far. */
export function checkFile<S>(
  path: string,
  verifier: Verifier<S>,
  options: { compressed?: boolean; signal?: AbortSignal; onBytes?: (bytes: number) => void } = {},
): Promise<Checked<S>> {
  return checkStream(pieces(path), verifier, options)
}
