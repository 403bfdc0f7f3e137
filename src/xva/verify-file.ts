// The files of a backup checked on disk (before a restore, `dpxen verify`, a metadata file just
// written) by the same check and verifiers as their exports: check.ts's checkFile.
import { checkFile, type Checked } from './check.js'
import { VhdVerifier, type VhdSummary } from './vhd.js'
import { XvaVerifier, type XvaSummary } from './verify.js'

/** An XVA file (plain, gzip or zstd), its layout and every checksum; `onBytes` is told the bytes read so far. */
export function verifyFile(
  path: string,
  signal?: AbortSignal,
  onBytes?: (bytes: number) => void,
): Promise<Checked<XvaSummary>> {
  return checkFile(path, new XvaVerifier(), {
    compressed: true,
    ...(signal ? { signal } : {}),
    ...(onBytes ? { onBytes } : {}),
  })
}

/** A VM's metadata file (a tar of ova.xml alone, as /export_metadata sends it): the VM it describes. */
export function verifyMetadataFile(path: string, signal?: AbortSignal): Promise<Checked<XvaSummary>> {
  return checkFile(path, new XvaVerifier({ metadataOnly: true }), signal ? { signal } : {})
}

/** A VHD file: structure, every block present, closing footer. */
export function verifyVhdFile(path: string, signal?: AbortSignal): Promise<Checked<VhdSummary>> {
  return checkFile(path, new VhdVerifier(), signal ? { signal } : {})
}
