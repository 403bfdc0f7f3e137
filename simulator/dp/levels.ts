// Data Protector's backup levels for filesystem objects and its restore chains, as its
// documentation describes them (HP Data Protector Concepts Guide, "Incremental backup" and
// Table 7, leveled incrementals; OpenText support tip "Omit deleted files"):
//
// - a Full backs up every file of the object; an object with no earlier full backup is backed
//   up as a Full whatever the session's level;
// - an Incremental takes the files changed (modification time) since the object's last backup
//   of any level; an Incremental N, those since its last backup of a lower level (a Full is
//   level 0), and runs as one level above that backup when it is lower (an Incr3 after a Full
//   and an Incr1 runs as an Incr2);
// - a restore of a session builds up its whole restore chain: the session, the backup it was
//   based on, and so on down to the Full; every file backed up anywhere in the chain comes back
//   (the newest copy of each), unless "Omit deleted files" is chosen, which leaves out the files
//   that were no longer in the object when the restored session ran (each session records the
//   object's listing for that).
//
// Chosen where the documents are silent: a plain Incremental counts as level 1 when a leveled
// one looks for a lower level; expiry and protection are not modelled (every backup is kept).
import type { CatalogObject, SessionRecord, Store } from './store.js'

/** The level a session's MODE asks for: 0 for a Full, N for an Incremental N, 'incr' for an Incremental. */
export function askedLevel(mode: string): number | 'incr' {
  if (/^incremental$/i.test(mode)) return 'incr'
  const n = /^incremental([1-9])$/i.exec(mode)?.[1]
  return n ? Number(n) : 0
}

export interface Referenced {
  /** The level this object runs at (0: a Full). */
  level: number
  /** The backup it is based on: its session and start (files changed since then are taken). */
  reference?: { session: string; started: string }
  /** Why it runs at another level than asked, for the session's messages. */
  note?: string
}

/** Earlier backups of the same object (client and tree) that completed, newest first. */
function earlier(store: Store, client: string, tree: string, before: string) {
  const out: { session: SessionRecord; object: CatalogObject }[] = []
  for (const session of store.list()) {
    if (session.type !== 'backup' || session.started >= before) continue
    for (const object of session.objects)
      if (object.client === client && object.tree === tree && object.status !== 'Aborted')
        out.push({ session, object })
  }
  return out.sort((a, b) => b.session.started.localeCompare(a.session.started))
}

/** What the object's backup in a session of level `mode` starting at `started` is based on. */
export function reference(
  store: Store,
  client: string,
  tree: string,
  mode: string,
  started: string,
): Referenced {
  const asked = askedLevel(mode)
  if (asked === 0) return { level: 0 }
  const before = earlier(store, client, tree, started)
  if (!before.some((b) => (b.object.level ?? 0) === 0))
    return { level: 0, note: 'no earlier Full backup of the object: performed as a Full' }
  const base = asked === 'incr' ? before[0]! : before.find((b) => (b.object.level ?? 0) < asked)!
  const level = asked === 'incr' ? 1 : Math.min(asked, (base.object.level ?? 0) + 1)
  return {
    level,
    reference: { session: base.session.id, started: base.session.started },
    ...(asked !== 'incr' && level < asked
      ? { note: `no Incremental ${asked - 1} since: performed as an Incremental ${level}` }
      : {}),
  }
}

/** The object's restore chain in session `id`: the object, its reference, … down to the Full. */
export function restoreChain(
  store: Store,
  id: string,
  object: CatalogObject,
): { chain: { session: string; object: CatalogObject }[]; broken?: string } {
  const chain = [{ session: id, object }]
  for (let at = object; at.reference;) {
    let record: SessionRecord
    try {
      record = store.get(at.reference)
    } catch {
      return { chain, broken: `session ${at.reference}, which it is based on, is not in the store` }
    }
    const next = record.objects.find((o) => o.client === object.client && o.tree === object.tree)
    if (!next) return { chain, broken: `session ${at.reference} holds no backup of the object` }
    chain.push({ session: record.id, object: next })
    at = next
  }
  return { chain: chain.reverse() }
}
