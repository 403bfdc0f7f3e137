// The restore journal: before each side effect of a restore (stopping the VM, importing, the
// VBD swap, destroying the old VM) the restore writes what it is about to do into
// .dpxen-restore.json in backupDir, durably. A run killed at any point (SIGKILL, power cut, a
// second SIGTERM) leaves the journal behind, and the next hook in that folder (a restore, a
// backup's pre- or post-exec, `dpxen recover`) finishes or undoes what it says:
//
// - before the swap (or an offline restore before the old VM is destroyed): undone. The copy
//   imported (found by the import's task if the run died before it learnt the ref) is removed,
//   the VM's disks are as they were, and a VM that was running is started again;
// - during an online swap: if every position already holds the new disk, finished (the
//   imported record and the old disks go); otherwise undone: the new VBDs go and the old disks
//   are put back at their positions;
// - an offline restore past the destruction of the old VM: finished (the old disks go, the
//   restored VM is started if it should be).
//
// xapi keeps object refs for the life of the database, and a task until its session ends, so
// refs recorded here stay valid for the next run.
import { messageOf } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import { destroyVdi, destroyVmAndDisks, exists } from './disks.js'
import { startIfHalted } from './lifecycle.js'
import { readTrustedFile, writeStagingFile } from '../staging/folder.js'
import { JOURNAL_FILE, PARTIAL_SUFFIX } from '../staging/names.js'
import { OC_RESTORE_TOKEN } from './tags.js'
import type { Host } from '../xapi/host.js'
import { refsInResult } from '../xapi/xmlrpc.js'
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'

type Rec = Record<string, unknown>

/** A disk at a position of the VM before the swap, as its VBD was. */
export interface JournalDisk {
  vdi: string
  vbd: Rec
}

export interface JournalEntry {
  kind: 'online' | 'offline'
  vmName: string
  /** The existing VM (online: the one whose disks are replaced; offline: the one replaced), or ''. */
  vm: string
  /** Whether that VM was running before the restore stopped it. */
  wasRunning: boolean
  phase: 'stopping' | 'importing' | 'swapping' | 'finishing' | 'replacing'
  importTask?: string
  /** The imported VM (offline: the new VM; online: the template whose disks are taken). */
  imported?: string
  /** Online: the VM's disks by position before the swap, and the new disk for each. */
  oldDisks?: Record<string, JournalDisk>
  newDisks?: Record<string, string>
  /** Disks copied to their own SR (originalSr), removed when undoing. */
  copies?: string[]
  /** Offline: start the restored VM once the old one is gone. */
  startNew?: boolean
  /**
   * Incremental restore: the value of other_config `dpxen:restore-token` on every VDI it creates,
   * so that a VDI made just before a crash, whose ref the journal never learnt, is found and removed.
   */
  token?: string
}

interface Journal {
  version: 1
  entries: JournalEntry[]
}

async function read(dir: string): Promise<Journal> {
  const text = await readTrustedFile(dir, JOURNAL_FILE)
  if (text === undefined) return { version: 1, entries: [] }
  try {
    const journal = JSON.parse(text) as Journal
    return journal.version === 1 && Array.isArray(journal.entries) ? journal : { version: 1, entries: [] }
  } catch {
    return { version: 1, entries: [] }
  }
}

/** One VM's restore in the journal: each update is written (fsync, rename) before it returns. */
export class JournalRecord {
  readonly #dir: string
  #entry: JournalEntry

  private constructor(dir: string, entry: JournalEntry) {
    this.#dir = dir
    this.#entry = entry
  }

  static async open(dir: string, entry: JournalEntry): Promise<JournalRecord> {
    const record = new JournalRecord(dir, entry)
    await record.#write()
    return record
  }

  get entry(): JournalEntry {
    return this.#entry
  }

  async update(change: Partial<JournalEntry>): Promise<void> {
    this.#entry = { ...this.#entry, ...change }
    await this.#write()
  }

  /** The restore of this VM is over (done, or undone by its own cleanup). */
  async close(): Promise<void> {
    const journal = await read(this.#dir)
    journal.entries = journal.entries.filter(
      (e) => !(e.vm === this.#entry.vm && e.vmName === this.#entry.vmName),
    )
    if (journal.entries.length) await writeStagingFile(this.#dir, JOURNAL_FILE, JSON.stringify(journal))
    else await fsp.rm(join(this.#dir, JOURNAL_FILE), { force: true })
  }

  async #write(): Promise<void> {
    const journal = await read(this.#dir)
    journal.entries = journal.entries.filter(
      (e) => !(e.vm === this.#entry.vm && e.vmName === this.#entry.vmName),
    )
    journal.entries.push(this.#entry)
    await writeStagingFile(this.#dir, JOURNAL_FILE, JSON.stringify(journal))
  }
}

/** The VM an import made, from the entry or from its task (cancelled first if still running). */
async function importedVm(host: Host, entry: JournalEntry): Promise<string | undefined> {
  if (entry.imported) return entry.imported
  if (!entry.importTask || !(await exists(host, 'task', entry.importTask))) return undefined
  const outcome = await host.settleTask(entry.importTask)
  return outcome?.status === 'success' ? refsInResult(outcome.result)[0] : undefined
}

async function destroyUnattached(host: Host, vdis: string[], log: Logger): Promise<void> {
  for (const vdi of vdis) {
    if (!(await exists(host, 'VDI', vdi))) continue
    if ((await host.call<string[]>('VDI.get_VBDs', vdi)).length) continue
    await destroyVdi(host, vdi, log)
  }
}

async function tokenVdis(host: Host, token: string | undefined): Promise<string[]> {
  if (!token) return []
  const all = await host.call<Record<string, Rec>>('VDI.get_all_records')
  return Object.entries(all)
    .filter(([, r]) => (r.other_config as Record<string, string> | undefined)?.[OC_RESTORE_TOKEN] === token)
    .map(([ref]) => ref)
}

/** Puts an online restore's VM back as it was, or finishes the swap if it was complete. */
async function recoverOnline(host: Host, entry: JournalEntry, log: Logger): Promise<string> {
  const imported = await importedVm(host, entry)
  const positions = Object.keys(entry.oldDisks ?? {})
  let attached = new Map<string, { vbd: string; vdi: string }>()
  if (await exists(host, 'VM', entry.vm)) {
    for (const vbd of await host.call<string[]>('VM.get_VBDs', entry.vm)) {
      const r = await host.call<Rec>('VBD.get_record', vbd)
      if (r.type === 'Disk') attached.set(String(r.userdevice), { vbd, vdi: String(r.VDI) })
    }
  } else attached = new Map()
  const swapped =
    (entry.phase === 'swapping' || entry.phase === 'finishing') &&
    positions.length > 0 &&
    positions.every((p) => attached.get(p)?.vdi === entry.newDisks?.[p])
  if (swapped) {
    // Finish: the imported record goes (its VBDs with it; the disks are the VM's now).
    if (imported && (await exists(host, 'VM', imported))) await host.call('VM.destroy', imported)
    await destroyUnattached(
      host,
      Object.values(entry.oldDisks ?? {}).map((d) => d.vdi),
      log,
    )
    if (entry.wasRunning) await startIfHalted(host, entry.vm)
    return `the restore of ${entry.vmName}'s disks had been made; finished it`
  }
  // Undo: each position gets its old disk back.
  for (const p of positions) {
    const now = attached.get(p)
    const old = entry.oldDisks![p]!
    if (now?.vdi === old.vdi) continue
    if (now) await host.call('VBD.destroy', now.vbd)
    if (await exists(host, 'VDI', old.vdi))
      await host.call('VBD.create', { ...old.vbd, VM: entry.vm, VDI: old.vdi })
  }
  if (imported) await destroyVmAndDisks(host, imported, log)
  await destroyUnattached(
    host,
    [
      ...Object.values(entry.newDisks ?? {}),
      ...(entry.copies ?? []),
      ...(await tokenVdis(host, entry.token)),
    ],
    log,
  )
  if (entry.wasRunning) await startIfHalted(host, entry.vm)
  return `${entry.vmName} put back as it was before the interrupted restore`
}

/** Undoes an offline restore, or finishes it once the old VM was destroyed. */
async function recoverOffline(host: Host, entry: JournalEntry, log: Logger): Promise<string> {
  const imported = await importedVm(host, entry)
  if (entry.phase === 'finishing') {
    if (entry.startNew && imported) await startIfHalted(host, imported)
    return `the restore of ${entry.vmName} was made; finished it`
  }
  if (entry.phase === 'replacing' && entry.vm && !(await exists(host, 'VM', entry.vm))) {
    await destroyUnattached(
      host,
      Object.values(entry.oldDisks ?? {}).map((d) => d.vdi),
      log,
    )
    if (entry.startNew && imported) await startIfHalted(host, imported)
    return `the restore of ${entry.vmName} had replaced the old VM; finished it`
  }
  if (imported) await destroyVmAndDisks(host, imported, log)
  // A VM made from an incremental chain (restore/rebuild.ts): its rebuilt disks, by the token.
  await destroyUnattached(host, [...(entry.copies ?? []), ...(await tokenVdis(host, entry.token))], log)
  if (entry.wasRunning && entry.vm) await startIfHalted(host, entry.vm)
  return `${entry.vmName} put back as it was before the interrupted restore`
}

/**
 * Finishes or undoes the restores an interrupted run left in `dir`'s journal. Returns one line
 * per VM for the session; an entry that cannot be settled stays for the next run.
 */
export async function recoverRestores(host: Host, dir: string, log: Logger): Promise<string[]> {
  // An update a killed run had not renamed yet: the journal before it still says where it was.
  await fsp.rm(join(dir, `${JOURNAL_FILE}${PARTIAL_SUFFIX}`), { force: true })
  const journal = await read(dir)
  if (journal.entries.length === 0) return []
  const lines: string[] = []
  const left: JournalEntry[] = []
  for (const entry of journal.entries) {
    try {
      const done = await (entry.kind === 'online' ? recoverOnline : recoverOffline)(host, entry, log)
      lines.push(`dpxen: recovered an interrupted restore: ${done}`)
    } catch (error) {
      left.push(entry)
      lines.push(
        `dpxen: WARNING: an interrupted restore of ${entry.vmName} could not be settled: ${messageOf(error)} (the next run tries again; check the VM's disks)`,
      )
    }
  }
  if (left.length) await writeStagingFile(dir, JOURNAL_FILE, JSON.stringify({ version: 1, entries: left }))
  else await fsp.rm(join(dir, JOURNAL_FILE), { force: true })
  return lines
}
