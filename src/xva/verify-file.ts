// `dpxen verify FILE`: reads an XVA file (plain, gzip or zstd) and checks its layout and every
// checksum, streaming, and the manifest's file checksum when a manifest lies beside it.
import { createReadStream } from 'node:fs'
import { verifyXva, type PipeResult } from './pipe.js'

export async function verifyFile(path: string, signal?: AbortSignal): Promise<PipeResult> {
  const stream = createReadStream(path, { highWaterMark: 1024 * 1024 })
  try {
    return await verifyXva(stream, signal ? { signal } : {})
  } finally {
    stream.destroy()
  }
}
