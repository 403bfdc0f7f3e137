// A file writer for transfers of any size: each piece is copied into one of a few slabs
// allocated once, and a full slab goes to the disk in one write while the next one fills.
// Pieces are taken synchronously and never kept, so the reader can hand over a buffer it
// reuses for the next read; memory is the slabs, whatever the size of the file.
import { promises as fsp, type OpenMode } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'

/** How long abort() waits for writes under way. */
export const ABORT_WAIT_MS = 2000

export interface FileSinkOptions {
  flags?: OpenMode
  mode?: number
  /** Bytes per disk write. */
  slabSize?: number
  /** Slabs in all: one filling, the others being written. */
  slabs?: number
}

export class FileSink {
  readonly path: string
  #handle: FileHandle
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

  private constructor(path: string, handle: FileHandle, options: FileSinkOptions) {
    this.path = path
    this.#handle = handle
    this.#slabSize = options.slabSize ?? 4 * 1024 * 1024
    this.#free = Array.from({ length: Math.max(2, options.slabs ?? 3) }, () =>
      Buffer.allocUnsafeSlow(this.#slabSize),
    )
  }

  /** Opens (creates) the file; with flags 'wx' an existing file is an error. */
  static async open(path: string, options: FileSinkOptions = {}): Promise<FileSink> {
    const handle = await fsp.open(path, options.flags ?? 'w', options.mode ?? 0o666)
    return new FileSink(path, handle, options)
  }

  /** Bytes that can be taken now without waiting for the disk. */
  get room(): number {
    return this.#free.length * this.#slabSize + (this.#current ? this.#slabSize - this.#used : 0)
  }

  /** The first write error, if any (ENOSPC…). */
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
      .catch((error: Error) => (this.#failure ??= error))
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
    for (let done = 0; done < length;) {
      const { bytesWritten } = await this.#handle.write(slab, done, length - done, position + done)
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
      await this.#handle.sync()
    } finally {
      await this.#handle.close()
    }
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
    const close = (): Promise<void> => this.#handle.close().catch(() => undefined)
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
