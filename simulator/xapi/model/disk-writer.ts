// Writes an imported disk's chunks at their offsets: around the page cache (O_DIRECT) where the
// system allows it (a real host's storage is not this machine's page cache either), a few writes
// under way while the next chunk is read. Each chunk is copied into one of a few page-aligned
// slabs (a WebAssembly.Memory: O_DIRECT needs aligned memory, which Buffer allocations are not),
// so the caller may reuse its buffer at once. A chunk whose offset or length is not whole 4 KiB
// blocks (the end of a disk of odd size) goes through the page cache on a second descriptor; so
// does everything where the file system refuses O_DIRECT (EINVAL), or where there is no O_DIRECT
// (Windows). The aligned memory is made as in dpxen's FileSink, not imported from it: the
// simulator stands apart from the client it tests.
//
// Why: through the page cache, the simulator's import was CPU-bound in the kernel, and on a
// virtual machine that hands freed memory back to its host the cost of that copy varied
// threefold with how long the machine had been idle, which made the import figures of
// `npm run bench` measure the machine, not the client.
import { constants, promises as fsp } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'

const ALIGN = 4096
const WASM_PAGE = 64 * 1024

interface Wasm {
  Memory: new (descriptor: { initial: number }) => { buffer: ArrayBuffer }
}

export class DiskWriter {
  #direct: FileHandle | undefined
  #buffered: FileHandle
  #slabs: Buffer[]
  #free: number[]
  #waiting: (() => void)[] = []
  #writes = new Set<Promise<void>>()
  #failure: Error | undefined
  #closed = false

  private constructor(direct: FileHandle | undefined, buffered: FileHandle, slabs: Buffer[]) {
    this.#direct = direct
    this.#buffered = buffered
    this.#slabs = slabs
    this.#free = slabs.map((_, i) => i)
  }

  /** Opens an existing disk file for writing; `slabSize` is the largest chunk written directly. */
  static async open(path: string, slabSize: number, slabs = 3): Promise<DiskWriter> {
    const buffered = await fsp.open(path, 'r+')
    const memory = slabSize % ALIGN === 0 ? alignedMemory(slabs * slabSize) : undefined
    let direct: FileHandle | undefined
    if (memory && constants.O_DIRECT !== undefined) {
      direct = await fsp.open(path, constants.O_WRONLY | constants.O_DIRECT).catch(() => undefined)
    }
    const pieces = direct
      ? Array.from({ length: slabs }, (_, i) => Buffer.from(memory!, i * slabSize, slabSize))
      : Array.from({ length: slabs }, () => Buffer.allocUnsafeSlow(slabSize))
    return new DiskWriter(direct, buffered, pieces)
  }

  /** Whether writes go around the page cache. */
  get direct(): boolean {
    return this.#direct !== undefined
  }

  /** Copies `data` and starts writing it at `offset`; waits only for a free slab. Throws the first write error. */
  async write(data: Buffer, offset: number): Promise<void> {
    if (this.#failure) throw this.#failure
    if (data.length > this.#slabs[0]!.length) {
      // Larger than a slab (xapi accepts chunks up to 16 MiB): written as it is, through the cache.
      await this.#settle()
      await writeAll(this.#buffered, data, data.length, offset)
      return
    }
    while (this.#free.length === 0) await new Promise<void>((resolve) => this.#waiting.push(resolve))
    if (this.#failure) throw this.#failure
    const index = this.#free.pop()!
    const slab = this.#slabs[index]!
    data.copy(slab)
    const aligned = offset % ALIGN === 0 && data.length % ALIGN === 0
    const write = this.#writeSlab(slab, data.length, offset, aligned)
      .catch((error: Error) => void (this.#failure ??= error))
      .finally(() => {
        this.#writes.delete(write)
        this.#free.push(index)
        this.#waiting.shift()?.()
      })
    this.#writes.add(write)
  }

  async #writeSlab(slab: Buffer, length: number, offset: number, aligned: boolean): Promise<void> {
    if (this.#direct && aligned) {
      try {
        const { bytesWritten } = await this.#direct.write(slab, 0, length, offset)
        if (bytesWritten === length) return
        return await writeAll(
          this.#buffered,
          slab.subarray(bytesWritten),
          length - bytesWritten,
          offset + bytesWritten,
        )
      } catch (error) {
        if ((error as { code?: string }).code !== 'EINVAL') throw error
        // Alignment stricter than 4 KiB: the page cache from now on.
        const direct = this.#direct
        this.#direct = undefined
        await direct?.close().catch(() => undefined)
      }
    }
    await writeAll(this.#buffered, slab, length, offset)
  }

  async #settle(): Promise<void> {
    while (this.#writes.size) await Promise.all(this.#writes)
    if (this.#failure) throw this.#failure
  }

  /** Waits for every write; closes the file; throws the first write error. Once only: later calls do nothing. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    try {
      await this.#settle()
    } finally {
      await Promise.all([this.#direct?.close(), this.#buffered.close()])
    }
  }
}

function alignedMemory(bytes: number): ArrayBuffer | undefined {
  const wasm = (globalThis as unknown as { WebAssembly?: Wasm }).WebAssembly
  try {
    return wasm ? new wasm.Memory({ initial: Math.ceil(bytes / WASM_PAGE) }).buffer : undefined
  } catch {
    return undefined
  }
}

async function writeAll(handle: FileHandle, data: Buffer, length: number, offset: number): Promise<void> {
  for (let done = 0; done < length;) {
    const { bytesWritten } = await handle.write(data, done, length - done, offset + done)
    done += bytesWritten
  }
}
