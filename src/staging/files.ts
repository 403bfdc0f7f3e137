// Files in backupDir: free space, and removal that never leaves backupDir nor follows a link.
import { promises as fsp } from 'node:fs'
import { basename, join } from 'node:path'
import {
  CHAIN_SUFFIX,
  JOURNAL_FILE,
  LOCK_FILE,
  MANIFEST_SUFFIX,
  METADATA_SUFFIX,
  PARTIAL_SUFFIX,
  STATE_FILE,
  VHD_SUFFIX,
} from '../staging/names.js'

/** Bytes free for this user in the folder's file system. */
export async function freeSpace(dir: string): Promise<number> {
  const stats = await fsp.statfs(dir)
  return Number(stats.bavail) * Number(stats.bsize)
}

/** Whether a name is one dpxen could have written (an XVA, a manifest, its state, a partial of those). */
export function isOurName(name: string): boolean {
  const base = name.endsWith(PARTIAL_SUFFIX) ? name.slice(0, -PARTIAL_SUFFIX.length) : name
  return (
    base === STATE_FILE ||
    base === `${STATE_FILE}.tmp` ||
    base === LOCK_FILE ||
    base === JOURNAL_FILE ||
    base.endsWith('.xva') ||
    base.endsWith(MANIFEST_SUFFIX) ||
    base.endsWith(CHAIN_SUFFIX) ||
    base.endsWith(VHD_SUFFIX) ||
    base.endsWith(METADATA_SUFFIX) ||
    base.endsWith('_pool-database.xml')
  )
}

/**
 * Removes `name` from `dir` if it is a plain name (no path), one of ours, and a regular file
 * (not a link, not a folder). Returns whether it removed something.
 */
export async function removeOurFile(dir: string, name: string): Promise<boolean> {
  if (name !== basename(name) || name === '.' || name === '..' || !isOurName(name)) return false
  const path = join(dir, name)
  try {
    const stat = await fsp.lstat(path)
    if (!stat.isFile()) return false
    await fsp.unlink(path)
    return true
  } catch {
    return false
  }
}

/** Removes partial files an interrupted run left (ours only). */
export async function removeStalePartials(dir: string): Promise<string[]> {
  let names: string[]
  try {
    names = await fsp.readdir(dir)
  } catch {
    return []
  }
  const removed: string[] = []
  for (const name of names) {
    if (name.endsWith(PARTIAL_SUFFIX) && (await removeOurFile(dir, name))) removed.push(name)
  }
  return removed
}
