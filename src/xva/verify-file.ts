// Verifying a file (before a restore, `dpxen verify`): reads an XVA file (plain, gzip or zstd)
// and checks its layout and every checksum, streaming. One buffer, allocated once, is read into
// again and again: an fs read stream makes a new Buffer for every read, and V8 lets tens of MiB
// of them pile up before it collects them (the restore hook's peak RSS came from there).
import { DpxenError } from '../core/errors.js'
import { openRegularFile, SmallFileError } from '../core/small-file.js'
import { newXxh64, xxh64Hex } from '../core/xxh64.js'
import { verifyXva, type StreamResult } from './pipe.js'
import { VhdVerifier, type VhdStreamResult } from './vhd.js'
import { XvaVerifier, type XvaSummary } from './verify.js'

/** Bytes per read. */
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

/** The file's bytes, each piece valid until the next is asked for (pipeXva is done with it by then). */
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

/** Verifies the file; `onBytes` is told the bytes read so far (for progress lines). */
export async function verifyFile(
  path: string,
  signal?: AbortSignal,
  onBytes?: (bytes: number) => void,
): Promise<StreamResult> {
  return verifyXva(pieces(path), { ...(signal ? { signal } : {}), ...(onBytes ? { onBytes } : {}) })
}

/** Pushes the file through a verifier and hashes it: what the verifier says, the bytes, the XXH64. */
async function throughVerifier<S>(
  path: string,
  verifier: { push(piece: Buffer): void; finish(): S },
  signal?: AbortSignal,
): Promise<{ summary: S; bytes: number; xxh64: string }> {
  const hash = newXxh64()
  let bytes = 0
  for await (const piece of pieces(path)) {
    signal?.throwIfAborted()
    verifier.push(piece)
    hash.update(piece)
    bytes += piece.length
  }
  return { summary: verifier.finish(), bytes, xxh64: xxh64Hex(hash) }
}

/**
 * Reads a VM's metadata file (a tar of ova.xml alone, as /export_metadata sends it): its layout
 * checked as an XVA's, the VM it describes returned, its bytes hashed.
 */
export function verifyMetadataFile(
  path: string,
  signal?: AbortSignal,
): Promise<{ summary: XvaSummary; bytes: number; xxh64: string }> {
  return throughVerifier(path, new XvaVerifier({ metadataOnly: true }), signal)
}

/** Verifies a VHD file (structure, every block present, closing footer) and hashes it. */
export function verifyVhdFile(path: string, signal?: AbortSignal): Promise<VhdStreamResult> {
  return throughVerifier(path, new VhdVerifier(), signal)
}
