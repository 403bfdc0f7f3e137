// The receiving end of an export: each piece, as it comes off the socket, goes through the
// stream's check (counted, hashed, verified; check.ts) and is copied into the file's slabs, all
// before the reader reuses its buffer. Reading stops while the file has no room for another
// piece or the check's decompressor is full; `wake` says when to go on. The one Intake
// (core/intake.ts) there is: an XVA, a VHD, a VM's metadata and the pool database differ only in
// the Verifier they are checked by.
import type { Intake } from '../core/intake.js'
import { StreamCheck, type Checked, type Verifier } from './check.js'
import type { FileSink } from './file-sink.js'

export class CheckedIntake<S> implements Intake<Checked<S>> {
  readonly #sink: FileSink
  readonly #check: StreamCheck<S>
  /** The largest piece push() may be given. */
  readonly #maxPiece: number
  readonly #wake: () => void
  #waiting = false

  /** `compressed`: the stream may be gzip or zstd (an XVA export), told by its first bytes. */
  constructor(
    sink: FileSink,
    verifier: Verifier<S>,
    options: { maxPiece: number; wake: () => void; compressed?: boolean },
  ) {
    this.#sink = sink
    this.#check = new StreamCheck(verifier, { compressed: options.compressed === true })
    this.#maxPiece = options.maxPiece
    this.#wake = options.wake
  }

  get bytes(): number {
    return this.#check.bytes
  }

  /** Takes a piece (not kept after the call); false: stop reading until the wake callback. */
  push(piece: Buffer): boolean {
    const open = this.#check.push(piece)
    this.#sink.take(piece)
    if (open && this.#sink.room >= this.#maxPiece) return true
    this.#waiting = true
    this.#waitForRoom()
    return false
  }

  /** Wakes the reader once the file has room and the check is ready, or the file failed. */
  #waitForRoom(): void {
    if (!this.#waiting) return
    if (!this.#sink.failure) {
      if (this.#sink.room < this.#maxPiece) return this.#sink.onRoom(() => this.#waitForRoom())
      if (!this.#check.ready) return this.#check.onReady(() => this.#waitForRoom())
    }
    this.#waiting = false
    this.#wake()
  }

  /** After the last piece: what the stream held (complete), the file written, flushed and closed. */
  async finish(): Promise<Checked<S>> {
    const checked = await this.#check.finish()
    await this.#sink.close()
    return checked
  }

  /** Stops after a failure: the decompressor goes, the file is closed (the caller removes it). */
  async abort(): Promise<void> {
    this.#check.abort()
    await this.#sink.abort()
  }
}
