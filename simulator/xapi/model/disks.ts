// Disk contents: one sparse file per VDI under <stateDir>/disks, named by VDI uuid.
import { createHash } from 'node:crypto'
import { mkdirSync, promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { CbtLogs } from './cbt.js'

export const CHUNK = 1024 * 1024
const ZERO = Buffer.alloc(CHUNK)

export function isZero(buf: Buffer): boolean {
  return buf.length === ZERO.length ? buf.equals(ZERO) : buf.equals(ZERO.subarray(0, buf.length))
}

/** The unit of change tracking: a VHD block, as xapi's VHD-based SRs allocate them. */
export const TRACK_BLOCK = 2 * 1024 * 1024

export class DiskStore {
  readonly dir: string
  /**
   * Block-level change tracking: per disk, the write generation of each 2 MiB block that was
   * ever written (a VHD's allocated blocks). A snapshot or copy takes its source's map, so two
   * disks differ exactly in the blocks whose generations differ. Kept in memory: a disk of an
   * earlier simulator process is not tracked, and its deltas are found by comparing content.
   */
  #generations = new Map<string, Map<number, number>>()
  #clock = 0
  /** Changed block tracking's logs (VDI.enable_cbt), fed by the same writes. */
  readonly cbt = new CbtLogs()
  /** Seed `churn`: the share of a disk's chunks its guest rewrites after each snapshot. */
  readonly churn = new Map<string, number>()
  constructor(stateDir: string) {
    this.dir = join(stateDir, 'disks')
    mkdirSync(this.dir, { recursive: true })
  }

  path(uuid: string): string {
    return join(this.dir, `${uuid}.img`)
  }

  /** Records a write of `length` bytes at `offset` of the disk. */
  touch(uuid: string, offset: number, length: number): void {
    this.cbt.touch(uuid, offset, length)
    const map = this.#generations.get(uuid)
    if (!map || length <= 0) return
    const generation = ++this.#clock
    for (let b = Math.floor(offset / TRACK_BLOCK); b <= Math.floor((offset + length - 1) / TRACK_BLOCK); b++)
      map.set(b, generation)
  }

  /** The blocks ever written (all of them in order), or undefined when the disk is not tracked. */
  allocated(uuid: string): number[] | undefined {
    const map = this.#generations.get(uuid)
    return map ? [...map.keys()].sort((a, b) => a - b) : undefined
  }

  /** The blocks in which two disks differ (written since one was copied from the other), if both are tracked. */
  changed(uuid: string, baseUuid: string): number[] | undefined {
    const a = this.#generations.get(uuid)
    const b = this.#generations.get(baseUuid)
    if (!a || !b) return undefined
    const out = new Set<number>()
    for (const [block, generation] of a) if (b.get(block) !== generation) out.add(block)
    for (const block of b.keys()) if (!a.has(block)) out.add(block)
    return [...out].sort((x, y) => x - y)
  }

  /** Creates an all-zero disk of `size` bytes (sparse: no blocks are written). */
  async create(uuid: string, size: number): Promise<void> {
    this.#generations.set(uuid, new Map())
    const handle = await fsp.open(this.path(uuid), 'w')
    try {
      await handle.truncate(size)
    } finally {
      await handle.close()
    }
  }

  async remove(uuid: string): Promise<void> {
    this.cbt.remove(uuid)
    await this.removeData(uuid)
  }

  /** The disk's data gone, its CBT log kept (VDI.data_destroy). */
  async removeData(uuid: string): Promise<void> {
    this.churn.delete(uuid)
    this.#generations.delete(uuid)
    await fsp.rm(this.path(uuid), { force: true })
  }

  /**
   * Copies a disk (a snapshot, a clone, VDI.copy) as a VHD-based SR does, in constant time: the
   * copy shares the file (a hard link) until either side is written, when `writable()` gives the
   * written side a file of its own. The cost of a snapshot is then paid by the guest's next
   * write, not by the snapshot, as on a real host.
   */
  async copy(fromUuid: string, toUuid: string, size: number): Promise<void> {
    const from = this.#generations.get(fromUuid)
    if (from) this.#generations.set(toUuid, new Map(from))
    else this.#generations.delete(toUuid)
    await fsp.rm(this.path(toUuid), { force: true })
    if ((await fsp.stat(this.path(fromUuid))).size === size)
      await fsp.link(this.path(fromUuid), this.path(toUuid))
    else await this.#sparseCopy(this.path(fromUuid), this.path(toUuid), size)
  }

  /** Before a disk is written: its own file, if it still shares one with a copy. */
  async writable(uuid: string): Promise<void> {
    const path = this.path(uuid)
    const { nlink, size } = await fsp.stat(path)
    if (nlink <= 1) return
    const own = `${path}.own`
    await this.#sparseCopy(path, own, size)
    await fsp.rename(own, path)
  }

  /** Grows (or cuts) a disk to `size` bytes; its blocks keep their change generations. */
  async resize(uuid: string, size: number): Promise<void> {
    this.cbt.resize(uuid, size)
    await this.writable(uuid)
    const handle = await fsp.open(this.path(uuid), 'r+')
    try {
      await handle.truncate(size)
    } finally {
      await handle.close()
    }
  }

  /** Copies chunk by chunk, skipping zero chunks so the copy stays sparse. */
  async #sparseCopy(from: string, to: string, size: number): Promise<void> {
    const src = await fsp.open(from, 'r')
    const dst = await fsp.open(to, 'w')
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
    await this.writable(uuid)
    const handle = await fsp.open(this.path(uuid), 'r+')
    try {
      const chunks = Math.ceil(size / CHUNK)
      const buf = Buffer.allocUnsafe(CHUNK)
      for (let n = 0; n < chunks; n++) {
        if (!chunkHasData(n, fill)) continue
        const length = Math.min(CHUNK, size - n * CHUNK)
        patternChunk(buf, seed, n)
        await handle.write(buf, 0, length, n * CHUNK)
        this.touch(uuid, n * CHUNK, length)
      }
    } finally {
      await handle.close()
    }
  }

  /**
   * Rewrites the share `fraction` of a disk's 1 MiB chunks (spread evenly in runs of `run`
   * chunks, starting at chunk `offset`) with new content derived from `seed`: what a guest
   * changes between two backups. Returns the chunk numbers changed.
   */
  async change(
    uuid: string,
    size: number,
    fraction: number,
    seed: string,
    offset = 0,
    run = 1,
  ): Promise<number[]> {
    await this.writable(uuid)
    const handle = await fsp.open(this.path(uuid), 'r+')
    const changed: number[] = []
    try {
      const chunks = Math.ceil(size / CHUNK)
      const buf = Buffer.allocUnsafe(CHUNK)
      for (let i = 0; i < chunks; i++) {
        const n = (i + offset) % chunks
        if (!chunkHasData(Math.floor(i / run), fraction)) continue
        const length = Math.min(CHUNK, size - n * CHUNK)
        patternChunk(buf, `${seed}/changed`, n)
        await handle.write(buf, 0, length, n * CHUNK)
        this.touch(uuid, n * CHUNK, length)
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
