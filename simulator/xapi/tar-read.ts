// Reads a tar stream as whole entries (XVA entries are small: chunks of at most 1 MiB, ova.xml
// of some KiB), copying each byte at most once. Strict: headers must carry a valid checksum,
// entries must be plain files, and the stream must end with the end-of-archive marker.
import { XapiFailure } from './errors.js'

export interface TarEntry {
  header: { name: string; size: number }
  data: Buffer
}

const BLOCK = 512

class Bytes {
  #parts: Buffer[] = []
  #length = 0
  constructor(private readonly source: AsyncIterator<Buffer>) {}

  /** Exactly `n` bytes, or undefined at the end of the stream. */
  async take(n: number): Promise<Buffer | undefined> {
    while (this.#length < n) {
      const next = await this.source.next()
      if (next.done) return undefined
      if (next.value.length === 0) continue
      this.#parts.push(next.value)
      this.#length += next.value.length
    }
    const first = this.#parts[0]!
    let out: Buffer
    if (first.length >= n) {
      out = first.subarray(0, n)
      if (first.length === n) this.#parts.shift()
      else this.#parts[0] = first.subarray(n)
    } else {
      out = Buffer.allocUnsafe(n)
      let filled = 0
      while (filled < n) {
        const part = this.#parts[0]!
        const used = Math.min(part.length, n - filled)
        part.copy(out, filled, 0, used)
        filled += used
        if (used === part.length) this.#parts.shift()
        else this.#parts[0] = part.subarray(used)
      }
    }
    this.#length -= n
    return out
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
export async function* readTar(stream: AsyncIterable<Buffer>, maxEntry: number): AsyncGenerator<TarEntry> {
  const bytes = new Bytes(stream[Symbol.asyncIterator]())
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
