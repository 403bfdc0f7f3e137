// Reads an XVA byte stream (a file, for a restore or `dpxen verify`) to its end while verifying
// it: the bytes as they come (maybe compressed) go into an XXH64, the decompressed tar into the
// verifier, with backpressure, so memory stays flat at any size. (An export's receiving end,
// which also writes the file, is intake.ts.)
import { Readable, type Transform } from 'node:stream'
import { createGunzip } from 'node:zlib'
import { DpxenError } from '../core/errors.js'
import { newXxh64, xxh64Hex } from '../core/xxh64.js'
import { chunksOf } from './chunks.js'
import { XvaVerifier, type XvaSummary } from './verify.js'
import { zstdDecompressor } from './zstd.js'

export type StreamCompression = 'none' | 'gzip' | 'zstd'

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd]

/** What the first bytes say: gzip, zstd, or plain. */
export function sniffCompression(head: Buffer): StreamCompression {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip'
  if (ZSTD_MAGIC.every((b, i) => head[i] === b)) return 'zstd'
  return 'none'
}

export function decompressor(kind: StreamCompression): Transform | undefined {
  if (kind === 'gzip') return createGunzip()
  if (kind === 'zstd') return zstdDecompressor()
  return undefined
}

/**
 * The one rule for a failure inside a decompressor: the decompressor is fed nothing but the
 * stored bytes, so whatever it throws means the gzip or zstd stream is corrupt (XVA_INVALID). A
 * DpxenError from the verifier it feeds passes as it is.
 */
export function corruptStream(kind: StreamCompression, error: unknown): DpxenError {
  if (error instanceof DpxenError) return error
  return new DpxenError(
    'XVA_INVALID',
    `the ${kind} stream is corrupt: ${error instanceof Error ? error.message : String(error)}`,
  )
}

export interface StreamResult {
  /** What the XVA holds: its layout was checked whole, end marker included. */
  summary: XvaSummary
  /** Whether every chunk's checksum was compared too. */
  checksumsVerified: boolean
  /** Bytes as stored (compressed if the stream was). */
  bytes: number
  /** XXH64 of the bytes as stored (16 hex digits): as strong as needed against damage, and 10x cheaper than SHA-256. */
  xxh64: string
  compression: StreamCompression
}

export interface PipeOptions {
  /** Compare every chunk's checksum on the way (the layout is always checked); on by default. */
  verify?: boolean
  signal?: AbortSignal
  onBytes?: (total: number) => void
}

/**
 * Reads `source` to its end, hashing and verifying; throws XVA_INVALID, ABORTED, or the source's
 * error. Each piece is done with before the next is asked for, so a source may reuse its buffer.
 */
export async function pipeXva(
  source: AsyncIterable<Buffer> | Readable,
  options: PipeOptions = {},
): Promise<StreamResult> {
  const verify = options.verify !== false
  const verifier = new XvaVerifier({ checksums: verify })
  const fileHash = newXxh64()
  let bytes = 0
  let unzip: Transform | undefined
  let kind: StreamCompression | undefined
  let unzipped: Promise<void> | undefined
  const iterator = (source instanceof Readable ? chunksOf(source) : source)[Symbol.asyncIterator]()
  try {
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
      const chunk = next.value
      if (options.signal?.aborted) throw new DpxenError('ABORTED', 'interrupted')
      if (chunk.length === 0) continue
      if (kind === undefined) {
        kind = sniffCompression(chunk)
        unzip = decompressor(kind)
        if (unzip) {
          const stream = unzip
          const streamKind = kind
          unzipped = (async () => {
            for await (const out of stream) verifier.push(out as Buffer)
          })().catch((error: unknown) => {
            throw corruptStream(streamKind, error)
          })
          unzipped.catch(() => undefined)
        }
      }
      bytes += chunk.length
      fileHash.update(chunk)
      if (unzip) {
        // Until the decompressor has taken the piece in: the source may reuse its buffer.
        const taken = new Promise<void>((resolve, reject) =>
          unzip!.write(chunk, (error) => (error ? reject(corruptStream(kind!, error)) : resolve())),
        )
        taken.catch(() => undefined) // a failure comes through the race
        await Promise.race([taken, unzipped!])
      } else verifier.push(chunk)
      options.onBytes?.(bytes)
    }
    if (unzip) {
      unzip.end()
      await unzipped
    }
    return {
      summary: verifier.finish(),
      checksumsVerified: verify,
      bytes,
      xxh64: xxh64Hex(fileHash),
      compression: kind ?? 'none',
    }
  } catch (error) {
    unzip?.destroy()
    await iterator.return?.()
    throw error
  }
}

/** pipeXva with every checksum compared. */
export function verifyXva(
  source: AsyncIterable<Buffer> | Readable,
  options: Omit<PipeOptions, 'verify'> = {},
): Promise<StreamResult> {
  return pipeXva(source, { ...options, verify: true })
}
