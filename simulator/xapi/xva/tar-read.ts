// Reads a tar stream as whole entries (XVA entries are small: chunks of at most 1 MiB, ova.xml
// of some KiB). Strict: headers must carry a valid checksum, entries must be plain files, and
// the stream must end with the end-of-archive marker.
//
// Fast enough not to be what limits an import: the socket's chunks are taken as they arrive
// ('data' events, no joined copies), an entry that lies within one chunk is a view of it, and
// one that straddles chunks is copied into one of two scratch buffers kept for the transfer.
import { finished, type Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { XapiFailure } from '../model/errors.js'

export interface TarEntry {
  header: { name: string; size: number }
  /** Valid until two more entries larger than SMALL have been read. */
  data: Buffer
}

const BLOCK = 512
/** Entries up to this size get a buffer of their own. */
const SMALL = 64 * 1024

export interface ReaderOptions {
  /** Bytes held before the stream is paused. */
  highWater?: number
  /** Fault import-stall: stop reading for `ms` once `afterBytes` were taken. */
  stall?: { afterBytes: number; ms: number; signal: AbortSignal }
  /** close() destroys the stream (a decompressor); otherwise it is left to its owner. */
  owned?: boolean
  /** The reader this one's stream is fed from, closed with it. */
  upstream?: ByteReader
}

/** Bytes of a stream, taken in exact amounts. */
export class ByteReader {
  #stream: Readable
  #parts: Buffer[] = []
  #length = 0
  #taken = 0
  #ended = false
  #error: Error | undefined
  #wake: (() => void) | undefined
  #highWater: number
  #stall: ReaderOptions['stall']
  #scratch: Buffer[] = [Buffer.alloc(0), Buffer.alloc(0)]
  #turn = 0
  #owned: boolean
  #upstream: ByteReader | undefined
  #onData = (chunk: Buffer): void => {
    this.#parts.push(chunk)
    this.#length += chunk.length
    if (this.#length >= this.#highWater) this.#stream.pause()
    this.#notify()
  }

  constructor(stream: Readable, options: ReaderOptions = {}) {
    this.#stream = stream
    this.#highWater = options.highWater ?? 4 * 1024 * 1024
    this.#stall = options.stall
    this.#owned = options.owned ?? false
    this.#upstream = options.upstream
    stream.on('data', this.#onData)
    finished(stream, (error) => {
      if (error) this.#error = error
      else this.#ended = true
      this.#notify()
    })
  }

  #notify(): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }

  /** Waits until `n` bytes are held; false at the end of the stream. */
  async #fill(n: number): Promise<boolean> {
    if (this.#stall && this.#taken >= this.#stall.afterBytes) {
      const { ms, signal } = this.#stall
      this.#stall = undefined
      this.#stream.pause()
      await sleep(ms, undefined, { signal }).catch(() => undefined)
    }
    while (this.#length < n) {
      if (this.#error) throw this.#error
      if (this.#ended) return false
      if (this.#stream.isPaused()) this.#stream.resume()
      await new Promise<void>((resolve) => (this.#wake = resolve))
    }
    if (this.#length < this.#highWater && this.#stream.isPaused() && !this.#ended) this.#stream.resume()
    return true
  }

  /** Up to `n` first bytes, not taken (fewer only at the end of the stream). */
  async peek(n: number): Promise<Buffer> {
    await this.#fill(n)
    const all = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts)
    this.#parts = all.length ? [all] : []
    return all.subarray(0, n)
  }

  /** Exactly `n` bytes, or undefined at the end of the stream. */
  async take(n: number): Promise<Buffer | undefined> {
    if (!(await this.#fill(n))) return undefined
    this.#taken += n
    this.#length -= n
    const first = this.#parts[0]!
    if (first.length >= n) {
      if (first.length === n) this.#parts.shift()
      else this.#parts[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    let out: Buffer
    if (n <= SMALL) out = Buffer.allocUnsafe(n)
    else {
      this.#turn ^= 1
      if (this.#scratch[this.#turn]!.length < n) this.#scratch[this.#turn] = Buffer.allocUnsafeSlow(n)
      out = this.#scratch[this.#turn]!.subarray(0, n)
    }
    for (let filled = 0; filled < n;) {
      const part = this.#parts[0]!
      const used = part.copy(out, filled, 0, n - filled)
      filled += used
      if (used === part.length) this.#parts.shift()
      else this.#parts[0] = part.subarray(used)
    }
    return out
  }

  /** The rest of the stream as it comes (to feed a decompressor). */
  async *rest(): AsyncGenerator<Buffer> {
    for (;;) {
      while (this.#parts.length) {
        const part = this.#parts.shift()!
        this.#length -= part.length
        yield part
      }
      if (!(await this.#fill(1))) return
    }
  }

  /** Stops reading; an owned stream is destroyed, another is left paused to its owner. */
  close(): void {
    this.#stream.off('data', this.#onData)
    this.#parts = []
    if (this.#owned) this.#stream.destroy()
    else this.#stream.pause()
    this.#upstream?.close()
  }
}

function octal(field: Buffer): number {
  const text = field.toString('ascii').replace(/\0.*$/s, '').trim()
  if (text === '') return 0
  if (!/^[0-7]+$/.test(text)) throw new XapiFailure('IMPORT_ERROR', 'Invalid tar header')
  return parseInt(text, 8)
}

function validHeader(block: Buffer): boolean {
  let sum = 0
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : block[i]!
  return octal(block.subarray(148, 156)) === sum
}

/** Yields each entry with its data; entries larger than `maxEntry` are refused. */
export async function* readTar(bytes: ByteReader, maxEntry: number): AsyncGenerator<TarEntry> {
  for (;;) {
    const header = await bytes.take(BLOCK)
    if (!header) throw new XapiFailure('IMPORT_ERROR_PREMATURE_EOF')
    if (header.every((b) => b === 0)) return
    if (!validHeader(header)) throw new XapiFailure('IMPORT_ERROR', 'Invalid tar header')
    const type = String.fromCharCode(header[156]!)
    if (type !== '0' && type !== '\0')
      throw new XapiFailure('IMPORT_ERROR', `Unsupported tar entry type ${type}`)
    const name = header.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '')
    const ustar = header.subarray(257, 262).toString('ascii') === 'ustar'
    const prefix = ustar ? header.subarray(345, 500).toString('utf8').replace(/\0.*$/s, '') : ''
    if (header[124]! & 0x80) throw new XapiFailure('IMPORT_ERROR', `entry ${name} is too large`)
    const size = octal(header.subarray(124, 136))
    if (size > maxEntry) throw new XapiFailure('IMPORT_ERROR', `entry ${name} is too large`)
    const data = size === 0 ? Buffer.alloc(0) : await bytes.take(size)
    if (!data) throw new XapiFailure('IMPORT_ERROR_PREMATURE_EOF')
    const pad = (BLOCK - (size % BLOCK)) % BLOCK
    if (pad && !(await bytes.take(pad))) throw new XapiFailure('IMPORT_ERROR_PREMATURE_EOF')
    yield { header: { name: prefix ? `${prefix}/${name}` : name, size }, data }
  }
}
