// Moves an XVA byte stream to its destination while verifying it: the bytes as they come (maybe
// compressed) go to the file and into a SHA-256; the decompressed tar goes into the verifier.
// Both sides keep backpressure, so memory stays flat at any size.
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import type { FileHandle } from 'node:fs/promises'
import type { Transform } from 'node:stream'
import { createGunzip } from 'node:zlib'
import { DecompressStream } from 'zstd-napi'
import { DpxenError } from '../errors.js'
import { XvaVerifier, type XvaSummary } from './verify.js'

export type StreamCompression = 'none' | 'gzip' | 'zstd'

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd]

/** What the first bytes say: gzip, zstd, or plain. */
export function sniffCompression(head: Buffer): StreamCompression {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip'
  if (ZSTD_MAGIC.every((b, i) => head[i] === b)) return 'zstd'
  return 'none'
}

function decompressor(kind: StreamCompression): Transform | undefined {
  if (kind === 'gzip') return createGunzip()
  if (kind === 'zstd') return new DecompressStream()
  return undefined
}

export interface PipeResult {
  summary: XvaSummary
  /** Bytes as stored (compressed if the stream was). */
  bytes: number
  sha256: string
  compression: StreamCompression
}

export interface PipeOptions {
  /** Where the bytes go (a file opened for writing), if anywhere. */
  file?: FileHandle
  signal?: AbortSignal
  onBytes?: (total: number) => void
}

/** Reads `source` to its end, writing and verifying; throws XVA_INVALID, ABORTED, or the source's error. */
export async function pipeXva(source: AsyncIterable<Buffer>, options: PipeOptions = {}): Promise<PipeResult> {
  const verifier = new XvaVerifier()
  const sha = createHash('sha256')
  let bytes = 0
  let unzip: Transform | undefined
  let kind: StreamCompression | undefined
  let unzipped: Promise<void> | undefined
  const iterator = source[Symbol.asyncIterator]()
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
          unzipped = (async () => {
            for await (const out of stream) await verifier.push(out as Buffer)
          })()
          unzipped.catch(() => undefined)
        }
      }
      bytes += chunk.length
      sha.update(chunk)
      const writing = options.file ? options.file.write(chunk) : undefined
      if (unzip) {
        if (!unzip.write(chunk)) await Promise.race([once(unzip, 'drain'), unzipped!])
      } else await verifier.push(chunk)
      if (writing) await writing
      options.onBytes?.(bytes)
    }
    if (unzip) {
      unzip.end()
      await unzipped
    }
    return { summary: verifier.finish(), bytes, sha256: sha.digest('hex'), compression: kind ?? 'none' }
  } catch (error) {
    unzip?.destroy()
    await iterator.return?.()
    if (error instanceof DpxenError) throw error
    if (unzip && /incorrect header|invalid|unexpected end|zstd|decompress/i.test(String(error))) {
      throw new DpxenError(
        'XVA_INVALID',
        `the ${kind} stream is corrupt: ${error instanceof Error ? error.message : String(error)}`,
      )
    }
    throw error
  }
}
