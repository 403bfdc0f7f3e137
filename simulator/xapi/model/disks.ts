// Disk contents: one sparse file per VDI under <stateDir>/disks, named by VDI uuid.
import { createHash } from 'node:crypto'
import { mkdirSync, promises as fsp } from 'node:fs'
import { join } from 'node:path'

export const CHUNK = 1024 * 1024
const ZERO = Buffer.alloc(CHUNK)

export function isZero(buf: Buffer): boolean {
  return buf.length === ZERO.length ? buf.equals(ZERO) : buf.equals(ZERO.subarray(0, buf.length))
}

export class DiskStore {
  readonly dir: string
  constructor(stateDir: string) {
    this.dir = join(stateDir, 'disks')
    mkdirSync(this.dir, { recursive: true })
  }

  path(uuid: string): string {
    return join(this.dir, `${uuid}.img`)
  }

  /** Creates an all-zero disk of `size` bytes (sparse: no blocks are written). */
  async create(uuid: string, size: number): Promise<void> {
    const handle = await fsp.open(this.path(uuid), 'w')
    try {
      await handle.truncate(size)
    } finally {
      await handle.close()
    }
  }

  async remove(uuid: string): Promise<void> {
    await fsp.rm(this.path(uuid), { force: true })
  }

  /** Copies a disk chunk by chunk, skipping zero chunks so the copy stays sparse. */
  async copy(fromUuid: string, toUuid: string, size: number): Promise<void> {
    const src = await fsp.open(this.path(fromUuid), 'r')
    const dst = await fsp.open(this.path(toUuid), 'w')
    try {
      await dst.truncate(size)
      const buf = Buffer.allocUnsafe(CHUNK)
      for (let offset = 0; offset < size; offset += CHUNK) {
        const { bytesRead } = await src.read(buf, 0, Math.min(CHUNK, size - offset), offset)
        const data = buf.subarray(0, bytesRead)
        if (bytesRead > 0 && !isZero(data)) await dst.write(data, 0, bytesRead, offset)
      }
    } finally {
      await src.close()
      await dst.close()
    }
  }

  /**
   * Fills a disk with deterministic content: the share `fill` of its 1 MiB chunks hold
   * incompressible data (derived from `seed` and the chunk number), the rest stay zero.
   */
  async fill(uuid: string, size: number, fill: number, seed: string): Promise<void> {
    const handle = await fsp.open(this.path(uuid), 'r+')
    try {
      const chunks = Math.ceil(size / CHUNK)
      const buf = Buffer.allocUnsafe(CHUNK)
      for (let n = 0; n < chunks; n++) {
        if (!chunkHasData(n, fill)) continue
        const length = Math.min(CHUNK, size - n * CHUNK)
        patternChunk(buf, seed, n)
        await handle.write(buf, 0, length, n * CHUNK)
      }
    } finally {
      await handle.close()
    }
  }

  /**
   * Rewrites the share `fraction` of a disk's 1 MiB chunks (spread evenly, starting at chunk
   * `offset`) with new content derived from `seed`: what a guest changes between two backups.
   * Returns the chunk numbers changed.
   */
  async change(uuid: string, size: number, fraction: number, seed: string, offset = 0): Promise<number[]> {
    const handle = await fsp.open(this.path(uuid), 'r+')
    const changed: number[] = []
    try {
      const chunks = Math.ceil(size / CHUNK)
      const buf = Buffer.allocUnsafe(CHUNK)
      for (let i = 0; i < chunks; i++) {
        const n = (i + offset) % chunks
        if (!chunkHasData(i, fraction)) continue
        const length = Math.min(CHUNK, size - n * CHUNK)
        patternChunk(buf, `${seed}/changed`, n)
        await handle.write(buf, 0, length, n * CHUNK)
        changed.push(n)
      }
    } finally {
      await handle.close()
    }
    return changed.sort((a, b) => a - b)
  }
}

/** Spreads data chunks evenly: chunk n holds data when floor((n+1)·fill) > floor(n·fill). */
function chunkHasData(n: number, fill: number): boolean {
  return Math.floor((n + 1) * fill + 1e-9) > Math.floor(n * fill + 1e-9)
}

/** A pool of random-looking 1 MiB blocks, built once, from which data chunks are made. */
const POOL_SIZE = 16
let pool: Buffer[] | undefined

function blockPool(): Buffer[] {
  if (pool) return pool
  pool = []
  for (let b = 0; b < POOL_SIZE; b++) {
    const block = Buffer.allocUnsafe(CHUNK)
    let counter = 0
    for (let offset = 0; offset < CHUNK; offset += 64) {
      createHash('sha512').update(`dpxen-sim-block-${b}-${counter++}`).digest().copy(block, offset)
    }
    pool.push(block)
  }
  return pool
}

/** Writes chunk n's content into buf: a pool block, stamped so no two chunks are equal. */
function patternChunk(buf: Buffer, seed: string, n: number): void {
  const stamp = createHash('sha256').update(`${seed}/${n}`).digest()
  const blocks = blockPool()
  blocks[stamp.readUInt32BE(0) % blocks.length]!.copy(buf)
  // Overwrite a 32-byte stamp every 4 KiB, so equal pool blocks never yield equal chunks or sectors.
  for (let offset = 0; offset < CHUNK; offset += 4096) stamp.copy(buf, offset)
}
