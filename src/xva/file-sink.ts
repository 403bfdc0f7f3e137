// A file writer for transfers of any size: each piece is copied into one of a few slabs
// allocated once, and a full slab goes to the disk in one write while the next one fills.
// Pieces are taken synchronously and never kept, so the reader can hand over a buffer it
// reuses for the next read; memory is the slabs, whatever the size of the file.
//
// Direct writes (Linux, O_DIRECT, on request): the slabs go from this process's memory to the
// disk without passing through the page cache. A backup file is written once and read once by
// the Disk Agent, so caching it only pushes the client's own working set out of memory — and
// copying every byte into the cache was the largest part of an export's CPU (`perf`: 37–47 % of
// the hook's samples). O_DIRECT needs memory, offsets and lengths aligned to the disk's blocks:
// the slabs live in a WebAssembly.Memory (page-aligned), every write but the last is a whole
// slab, and the last is padded to DIRECT_ALIGN and the file truncated to its length. Where the
// file system refuses O_DIRECT at open or at the first write (EINVAL), the sink goes on with
// ordinary writes, silently: `direct` says which it used.
import { constants, promises as fsp } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { localIoError } from '../core/errors.js'

/** How long abort() waits for writes under way. */
export const ABORT_WAIT_MS = 2000

/** Alignment of direct writes: a multiple of every disk's logical block size (512 or 4096). */
export const DIRECT_ALIGN = 4096

/** WebAssembly's page: the unit its memory grows by. */
const WASM_PAGE = 64 * 1024

/** The one part of WebAssembly used here (its types come with TypeScript's DOM library only). */
interface Wasm {
  Memory: new (descriptor: { initial: number }) => { buffer: ArrayBuffer }
}

export interface FileSinkOptions {
  /** 'w' (default) or 'wx' (an existing file is an error). */
  flags?: 'w' | 'wx'
  mode?: number
  /** Bytes per disk write. */
  slabSize?: number
  /** Slabs in all: one filling, the others being written. */
  slabs?: number
  /** Write around the page cache where the system allows it (O_DIRECT). */
  direct?: boolean
}

/** Slabs that direct writes accept: page-aligned, from a WebAssembly.Memory; undefined if not possible. */
function alignedSlabs(count: number, size: number): Buffer[] | undefined {
  if (constants.O_DIRECT === undefined || size % DIRECT_ALIGN !== 0) return undefined
  try {
    const wasm = (globalThis as unknown as { WebAssembly?: Wasm }).WebAssembly
    if (!wasm) return undefined
    const memory = new wasm.Memory({ initial: Math.ceil((count * size) / WASM_PAGE) })
    return Array.from({ length: count }, (_, i) => Buffer.from(memory.buffer, i * size, size))
  } catch {
    // No WebAssembly (--jitless) or no address space for it (ulimit -v).
    return undefined
  }
}

const isEinval = (error: unknown): boolean => (error as { code?: string }).code === 'EINVAL'

export class FileSink {
  readonly path: string
  #handle: FileHandle
  /** Opened without O_DIRECT after a direct write was refused; every write goes there then. */
  #buffered: Promise<FileHandle> | undefined
  /** Whether direct writes are being made; false for good after a refusal. */
  #direct: boolean
  /** Whether #handle was opened with O_DIRECT. */
  readonly #handleDirect: boolean
  /** Whether any direct write went out: the last one may have carried padding. */
  #wroteDirect = false
  #slabSize: number
  #free: Buffer[]
  #current: Buffer | undefined
  #used = 0
  #position = 0
  #writing = 0
  #failure: Error | undefined
  #closed = false
  #onRoom: (() => void) | undefined
  #onIdle: (() => void) | undefined

  private constructor(path: string, handle: FileHandle, slabSize: number, slabs: Buffer[], direct: boolean) {
    this.path = path
    this.#handle = handle
    this.#slabSize = slabSize
    this.#free = slabs
    this.#direct = direct
    this.#handleDirect = direct
  }

  /** Opens (creates) the file; with flags 'wx' an existing file is an error. */
  static async open(path: string, options: FileSinkOptions = {}): Promise<FileSink> {
    const slabSize = options.slabSize ?? 4 * 1024 * 1024
    const count = Math.max(2, options.slabs ?? 3)
    const mode = options.mode ?? 0o666
    const exclusive = options.flags === 'wx'
    const aligned = options.direct ? alignedSlabs(count, slabSize) : undefined
    if (aligned) {
      const { O_WRONLY, O_CREAT, O_EXCL, O_TRUNC, O_DIRECT } = constants
      const flags = O_WRONLY | O_CREAT | (exclusive ? O_EXCL : O_TRUNC) | O_DIRECT!
      try {
        return new FileSink(path, await fsp.open(path, flags, mode), slabSize, aligned, true)
      } catch (error) {
        if (!isEinval(error)) throw error
        // The file system has no O_DIRECT. Linux may have created the file before refusing the
        // flag: it is ours, opened again below without O_EXCL.
        const handle = await fsp.open(path, 'w', mode)
        return new FileSink(path, handle, slabSize, aligned, false)
      }
    }
    const slabs = Array.from({ length: count }, () => Buffer.allocUnsafeSlow(slabSize))
    return new FileSink(path, await fsp.open(path, options.flags ?? 'w', mode), slabSize, slabs, false)
  }

  /** Whether the file is being written around the page cache (O_DIRECT). */
  get direct(): boolean {
    return this.#direct
  }

  /** Bytes that can be taken now without waiting for the disk. */
  get room(): number {
    return this.#free.length * this.#slabSize + (this.#current ? this.#slabSize - this.#used : 0)
  }

  /** The first write error, if any (LOCAL_IO: ENOSPC…). */
  get failure(): Error | undefined {
    return this.#failure
  }

  /** Called once, the next time a slab comes back from the disk. */
  onRoom(callback: () => void): void {
    this.#onRoom = callback
  }

  /**
   * Copies `piece` in; it must fit in `room` and be no larger than a slab (so that waiting for
   * room always ends). Throws the first write error.
   */
  take(piece: Buffer): void {
    if (this.#failure) throw this.#failure
    if (piece.length > Math.min(this.room, this.#slabSize))
      throw new RangeError(`FileSink: a piece of ${piece.length} bytes, room for ${this.room}`)
    for (let offset = 0; offset < piece.length;) {
      this.#current ??= this.#free.pop()!
      const copied = piece.copy(this.#current, this.#used, offset)
      this.#used += copied
      offset += copied
      if (this.#used === this.#slabSize) this.#flush()
    }
  }

  #flush(): void {
    const slab = this.#current
    const length = this.#used
    if (!slab || length === 0) return
    this.#current = undefined
    this.#used = 0
    const position = this.#position
    this.#position += length
    this.#writing++
    void this.#writeAll(slab, length, position)
      .catch((error: unknown) => (this.#failure ??= localIoError(this.path, error)))
      .finally(() => {
        this.#writing--
        this.#free.push(slab)
        const onRoom = this.#onRoom
        this.#onRoom = undefined
        onRoom?.()
        if (this.#writing === 0) this.#onIdle?.()
      })
  }

  async #writeAll(slab: Buffer, length: number, position: number): Promise<void> {
    if (this.#direct) {
      // A direct write is whole blocks: the last slab is padded (the padding cut off at close).
      const padded = Math.ceil(length / DIRECT_ALIGN) * DIRECT_ALIGN
      slab.fill(0, length, padded)
      try {
        const { bytesWritten } = await this.#handle.write(slab, 0, padded, position)
        this.#wroteDirect = true
        if (bytesWritten >= length) return
        // Short (the disk is full): the rest goes as an ordinary write, and fails there.
        return await this.#writeBuffered(slab, bytesWritten, length, position)
      } catch (error) {
        if (!isEinval(error)) throw error
        this.#direct = false
      }
    }
    await this.#writeBuffered(slab, 0, length, position)
  }

  /** Writes through the page cache: on the handle itself, or on a second one if it is direct. */
  async #writeBuffered(slab: Buffer, from: number, length: number, position: number): Promise<void> {
    const handle = this.#handleDirect ? await (this.#buffered ??= fsp.open(this.path, 'r+')) : this.#handle
    for (let done = from; done < length;) {
      const { bytesWritten } = await handle.write(slab, done, length - done, position + done)
      done += bytesWritten
    }
  }

  #idle(): Promise<void> {
    if (this.#writing === 0) return Promise.resolve()
    return new Promise((resolve) => (this.#onIdle = resolve))
  }

  /** Writes what is left, flushes the file to the disk (fsync), closes it; throws the first write error. */
  async close(): Promise<void> {
    this.#flush()
    await this.#idle()
    this.#closed = true
    try {
      if (this.#failure) throw this.#failure
      // The last direct write's padding goes; fsync covers the file whichever handle wrote it.
      if (this.#wroteDirect) await this.#handle.truncate(this.#position)
      await this.#handle.sync()
    } catch (error) {
      throw localIoError(this.path, error)
    } finally {
      await this.#closeHandles()
    }
  }

  async #closeHandles(): Promise<void> {
    const buffered = this.#buffered
    this.#buffered = undefined
    await Promise.all([
      this.#handle.close(),
      buffered?.then((handle) => handle.close()).catch(() => undefined),
    ])
  }

  /**
   * Stops, never throws; the caller removes the file. Waits up to `waitMs` for writes under way,
   * then closes the file. A write that hangs longer (a stuck network share) is left to finish on
   * its own and the file is closed after it: the cleanup that follows (starting a stopped VM,
   * destroying a snapshot) must not wait for the disk. The descriptor stays open until then,
   * so that no other file can be given its number while the write may still land.
   */
  async abort(waitMs = ABORT_WAIT_MS): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#current = undefined
    const close = (): Promise<void> => this.#closeHandles().catch(() => undefined)
    let timer: NodeJS.Timeout | undefined
    const idle = await Promise.race([
      this.#idle().then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(resolve, waitMs, false))),
    ])
    clearTimeout(timer)
    if (idle) return close()
    this.#onIdle = () => void close()
  }
}
