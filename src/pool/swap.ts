// The journaled swap of a VM's disks, the one step an online restore (restore/online.ts) and an
// incremental chain's (restore/chain.ts) share: with the VM halted, the journal learns each
// position's old disk (with its VBD's record, to put it back) and its new one, replaceVbds puts
// every new disk in place all or nothing, and the journal then says the swap is made. A swap
// that failed and whose undo failed too throws RollbackFailed: the journal keeps saying
// 'swapping', and the next hook in the folder (or `dpxen recover`) puts the old disks back.
import { critical } from '../core/critical.js'
import type { PoolContext } from './context.js'
import { replaceVbds, vbdRecord, type VmDisk } from './disks.js'
import type { JournalEntry, JournalRecord } from './journal.js'

export async function swapDisks(
  ctx: PoolContext,
  at: {
    vm: string
    name: string
    /** The VM's disks now, and the slots to fill (position, boot flag, mode) with `vdiFor`'s disks. */
    old: VmDisk[]
    fresh: VmDisk[]
    vdiFor: Map<string, string>
    journal: JournalRecord
    /** More for the journal to know while it swaps (the disks copied to their own SRs). */
    extra?: Partial<JournalEntry>
  },
): Promise<void> {
  const { vm, name, old, fresh, vdiFor, journal } = at
  ctx.onStatus?.('replacing the disks')
  await journal.update({
    phase: 'swapping',
    ...at.extra,
    oldDisks: Object.fromEntries(
      old.map((d) => [d.userdevice, { vdi: d.vdi, vbd: vbdRecord(vm, d.vdi, d) }]),
    ),
    newDisks: Object.fromEntries(fresh.map((d) => [d.userdevice, vdiFor.get(d.userdevice)!])),
  })
  await critical(`the disk swap of ${name}`, () => replaceVbds(ctx, vm, name, old, fresh, vdiFor))
  await journal.update({ phase: 'finishing' })
}
