// A file writer for transfers of any size: each chunk is copied into one of a few slabs
// allocated once, and a full slab goes to the disk in one write while the next one fills.
// fs.WriteStream keeps every received chunk alive until its turn to be written; at several
// hundred MB/s those chunks outlived V8's young generation and the collector spent a quarter
// of the export's CPU on them. Here a chunk is garbage as soon as it is copied.
import { promises as fsp, type OpenMode } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { Writable } from 'node:stream'

export interface FileSinkOptions {
  flags?: OpenMode
  mode?: number
  /** Bytes per disk write. */
  slabSize?: number
  /** Slabs in all: one filling, the others being written. */
  slabs?: number
}

export class FileSink extends Writable {
  readonly path: string
  #handle: FileHandle
  #slabSize: number
  #free: Buffer[]
  #current: Buffer | undefined
  #used = 0
  #position = 0
  #writing = 0
  #failure: Error | undefined
  /** A write that waits for a free slab. */
  #waiting: (() => void) | undefined
  #idle: (() => void) | undefined

  private constructor(path: string, handle: FileHandle, options: FileSinkOptions) {
    super({ highWaterMark: 64 * 1024 })
    this.path = path
    this.#handle = handle
    this.#slabSize = options.slabSize ?? 2 * 1024 * 1024
    this.#free = Array.from({ length: Math.max(2, options.slabs ?? 4) }, () =>
      Buffer.allocUnsafeSlow(this.#slabSize),
    )
  }

  /** Opens (creates) the file; with flags 'wx' an existing file is an error. */
  static async open(path: string, options: FileSinkOptions = {}): Promise<FileSink> {
    const handle = await fsp.open(path, options.flags ?? 'w', options.mode ?? 0o666)
    return new FileSink(path, handle, options)
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#copy(chunk, 0, callback)
  }

  #copy(chunk: Buffer, offset: number, callback: (error?: Error | null) => void): void {
    while (offset < chunk.length) {
      if (this.#failure) return callback(this.#failure)
      if (!this.#current) {
        const slab = this.#free.pop()
        if (!slab) {
          // Every slab is on its way to the disk: continue when one comes back.
          this.#waiting = () => this.#copy(chunk, offset, callback)
          return
        }
        this.#current = slab
      }
      const copied = chunk.copy(this.#current, this.#used, offset)
      this.#used += copied
      offset += copied
      if (this.#used === this.#slabSize) this.#flush()
    }
    callback(this.#failure)
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
        const waiting = this.#waiting
        this.#waiting = undefined
        waiting?.()
        if (this.#writing === 0) this.#idle?.()
      })
  }

  async #writeAll(slab: Buffer, length: number, position: number): Promise<void> {
    for (let done = 0; done < length;) {
      const { bytesWritten } = await this.#handle.write(slab, done, length - done, position + done)
      done += bytesWritten
    }
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#flush()
    const finish = (): void => {
      this.#idle = undefined
      callback(this.#failure)
    }
    if (this.#writing === 0) finish()
    else this.#idle = finish
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const close = (): void => {
      this.#handle.close().then(
        () => callback(error),
        (closeError: Error) => callback(error ?? closeError),
      )
    }
    // Writes still under way finish first: the descriptor is closed only once nothing uses it.
    if (this.#writing === 0) close()
    else this.#idle = close
  }
}
