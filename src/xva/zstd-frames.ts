// Where each zstd frame of a stream ends (RFC 8878 §3.1), found from the headers alone: frame
// header, then block headers (a block's stored size is its size, 1 for an RLE block), the
// checksum if the frame has one; skippable frames are passed over. Node's zlib zstd decoder
// stops at the end of the first frame and drops the rest without a word, so dpxen gives it one
// frame at a time.

const MAGIC = 0xfd2fb528
const SKIPPABLE = 0x184d2a50 // 0x184D2A50 to 0x184D2A5F

type State =
  | { kind: 'magic' }
  | { kind: 'skippable-size' }
  | { kind: 'frame-header' }
  | { kind: 'block-header' }
  | { kind: 'skip'; left: number; then: 'block-header' | 'checksum' | 'frame-end' }

export class ZstdFrames {
  #state: State = { kind: 'magic' }
  #head: number[] = []
  #checksum = false
  #last = false

  /** Takes the next bytes; returns the offsets in `chunk` just after each frame that ends in it. */
  feed(chunk: Uint8Array): number[] {
    const ends: number[] = []
    let at = 0
    while (at < chunk.length) {
      const state = this.#state
      if (state.kind === 'skip') {
        const n = Math.min(state.left, chunk.length - at)
        at += n
        state.left -= n
        if (state.left === 0) this.#after(state.then, at, ends)
        continue
      }
      this.#head.push(chunk[at++]!)
      this.#header(at, ends)
    }
    return ends
  }

  /** Whether the bytes so far end exactly at a frame boundary. */
  get atBoundary(): boolean {
    return this.#state.kind === 'magic' && this.#head.length === 0
  }

  #after(then: 'block-header' | 'checksum' | 'frame-end', at: number, ends: number[]): void {
    if (then === 'block-header') this.#state = { kind: 'block-header' }
    else if (then === 'checksum') this.#state = { kind: 'skip', left: 4, then: 'frame-end' }
    else {
      ends.push(at)
      this.#state = { kind: 'magic' }
    }
  }

  #header(at: number, ends: number[]): void {
    const head = this.#head
    const state = this.#state
    if (state.kind === 'magic' && head.length === 4) {
      const magic = (head[0]! | (head[1]! << 8) | (head[2]! << 16) | (head[3]! << 24)) >>> 0
      this.#head = []
      if (magic === MAGIC) this.#state = { kind: 'frame-header' }
      else if ((magic & 0xfffffff0) >>> 0 === SKIPPABLE) this.#state = { kind: 'skippable-size' }
      else throw new Error('not a zstd frame (bad magic number)')
    } else if (state.kind === 'skippable-size' && head.length === 4) {
      const size = (head[0]! | (head[1]! << 8) | (head[2]! << 16) | (head[3]! << 24)) >>> 0
      this.#head = []
      this.#state = { kind: 'skip', left: size, then: 'frame-end' }
      if (size === 0) this.#after('frame-end', at, ends)
    } else if (state.kind === 'frame-header' && head.length === 1) {
      const fhd = head[0]!
      if (fhd & 0x08) throw new Error('zstd frame header with the reserved bit set')
      const single = (fhd >> 5) & 1
      this.#checksum = ((fhd >> 2) & 1) === 1
      const rest = (single ? 0 : 1) + [0, 1, 2, 4][fhd & 3]! + [single, 2, 4, 8][fhd >> 6]!
      this.#head = []
      this.#state = { kind: 'skip', left: rest, then: 'block-header' }
      if (rest === 0) this.#state = { kind: 'block-header' }
    } else if (state.kind === 'block-header' && head.length === 3) {
      const value = head[0]! | (head[1]! << 8) | (head[2]! << 16)
      this.#head = []
      this.#last = (value & 1) === 1
      const type = (value >> 1) & 3
      if (type === 3) throw new Error('zstd block of the reserved type')
      const size = value >> 3
      const then = this.#last ? (this.#checksum ? 'checksum' : 'frame-end') : 'block-header'
      const stored = type === 1 ? 1 : size
      this.#state = { kind: 'skip', left: stored, then }
      if (stored === 0) this.#after(then, at, ends)
    }
  }
}
