// Changed block tracking as SM keeps it (xapi-project/sm, libs/sm/VDI.py and cbtutil.py, read
// at HEAD for this file): each VDI with CBT has a log, a bitmap of the 64 KiB blocks written, the
// disk's size, and its parent and child in a chain of logs.
// - enable_cbt makes the disk an empty log; disable_cbt drops it and cuts the chain (its
//   parent's child is cleared), so older snapshots can no longer be compared with newer ones.
// - A snapshot takes the disk's log, the writes since the previous snapshot (_cbt_snapshot:
//   the log is renamed), and the disk starts an empty one whose parent is the snapshot.
// - list_changed_blocks(from, to) ORs the logs from `from`'s child along the child pointers
//   until `to`; a chain that ends first is "unrelated" (SR_BACKEND_FAILURE_460).
// - A snapshot destroyed merges its bits into its child's log and is unlinked (delete with
//   coalesce_bitmap); data_destroy keeps the log and drops only the data.
// Kept in memory, as the generations in disks.ts are: a log does not survive a restart.
import { XapiFailure } from './errors.js'

/** CBT's unit: one bit of the bitmap per 64 KiB (SM VDI.py CBT_BLOCK_SIZE). */
export const CBT_BLOCK = 64 * 1024

interface CbtLog {
  parent?: string
  child?: string
  size: number
  bits: Set<number>
}

/** SM's CBTChangedBlocksError, as xapi passes an SR backend failure on. */
function changedBlocksError(reason: string): XapiFailure {
  return new XapiFailure(
    'SR_BACKEND_FAILURE_460',
    '',
    `Failed to calculate changed blocks for given VDIs. [opterr=${reason}]`,
    '',
  )
}

export class CbtLogs {
  #logs = new Map<string, CbtLog>()

  /** Whether the disk has a log (SM's blocktracking status). */
  has(uuid: string): boolean {
    return this.#logs.has(uuid)
  }

  /** enable_cbt: an empty log, unless there is one (the call is idempotent). */
  enable(uuid: string, size: number): void {
    if (!this.#logs.has(uuid)) this.#logs.set(uuid, { size, bits: new Set() })
  }

  /** disable_cbt: the log goes, and its parent no longer has a child. */
  disable(uuid: string): void {
    const log = this.#logs.get(uuid)
    if (!log) return
    const parent = log.parent && this.#logs.get(log.parent)
    if (parent) delete parent.child
    this.#logs.delete(uuid)
  }

  /** A write of `length` bytes at `offset`: its 64 KiB blocks set in the disk's log. */
  touch(uuid: string, offset: number, length: number): void {
    const log = this.#logs.get(uuid)
    if (!log || length <= 0) return
    for (let b = Math.floor(offset / CBT_BLOCK); b <= Math.floor((offset + length - 1) / CBT_BLOCK); b++)
      log.bits.add(b)
  }

  /** VDI.snapshot of a tracked disk: the snapshot takes its log, the disk starts a new one. */
  snapshot(disk: string, snapshot: string): void {
    const log = this.#logs.get(disk)
    if (!log) return
    this.#logs.set(snapshot, { ...log, child: disk })
    const parent = log.parent && this.#logs.get(log.parent)
    if (parent) parent.child = snapshot
    this.#logs.set(disk, { parent: snapshot, size: log.size, bits: new Set() })
  }

  resize(uuid: string, size: number): void {
    const log = this.#logs.get(uuid)
    if (log) log.size = size
  }

  /** A disk destroyed: its bits merged into its child's log, the chain relinked around it. */
  remove(uuid: string): void {
    const log = this.#logs.get(uuid)
    if (!log) return
    const parent = log.parent ? this.#logs.get(log.parent) : undefined
    const child = log.child ? this.#logs.get(log.child) : undefined
    if (parent) {
      if (log.child) parent.child = log.child
      else delete parent.child
    }
    if (child) {
      if (log.parent) child.parent = log.parent
      else delete child.parent
      for (const b of log.bits) child.bits.add(b)
    }
    this.#logs.delete(uuid)
  }

  /**
   * list_changed_blocks: the blocks written after `from` up to `to`, as SM answers it: a bitmap of
   * one bit per 64 KiB of `to`'s size, most significant bit first, in base64.
   */
  changed(from: string, to: string): string {
    if (from === to) throw changedBlocksError('Source and target VDI are same')
    const merged = new Set<number>()
    let size = 0
    for (let at = this.#logs.get(from); at?.child !== undefined;) {
      const uuid: string = at.child
      at = this.#logs.get(uuid)
      if (!at) break
      for (const b of at.bits) merged.add(b)
      size = Math.max(size, at.size)
      if (uuid === to) return bitmap(merged, size)
    }
    throw changedBlocksError('Source and target VDI are unrelated')
  }
}

/** The blocks as SM's bitarray writes them: one bit per block of `size`, MSB first, whole bytes. */
function bitmap(blocks: Set<number>, size: number): string {
  const bits = Math.ceil(size / CBT_BLOCK)
  const out = Buffer.alloc(Math.ceil(bits / 8))
  for (const b of blocks) if (b < bits) out[b >> 3]! |= 0x80 >> (b & 7)
  return out.toString('base64')
}
