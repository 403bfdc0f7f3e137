// XXH64, the checksum of XVA chunks and of the files dpxen writes. xxhash-wasm: WebAssembly
// carried inside the JavaScript, so it runs on every platform and Node line with nothing to
// compile or download (the native addon it replaces needed a prebuilt binary per platform).
import xxhash from 'xxhash-wasm'

const api = await xxhash()

export interface Xxh64 {
  update(data: Uint8Array): Xxh64
  digest(): bigint
}

/** A streaming XXH64 with seed 0, as XenServer's chunk checksums use. */
export function newXxh64(): Xxh64 {
  return api.create64(0n)
}

/** The digest as 16 lower-case hex digits. */
export function xxh64Hex(hash: Xxh64): string {
  return hash.digest().toString(16).padStart(16, '0')
}
