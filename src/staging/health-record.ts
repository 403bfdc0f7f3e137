// When each backup was last health-checked, and how it went: `<backupDir>.health-checks.json`,
// beside the staging folder as the pool's hosts are. Not in it: the post-exec empties the folder
// and Data Protector backs it up (a record restored with an old session would speak for checks
// made since); not in the configuration folder: one configuration may serve several staging
// folders, and `dpxen list DIR` finds the record from the folder alone. Written 0600, whole or
// not at all (a partial file renamed). A record that cannot be read is an empty one: it is a
// report, never a reason to refuse a check.
import { readFile, rename, rm, writeFile } from 'node:fs/promises'
import { resolve } from 'node:path'

/** One backup's last check: which backup (its VM and time), when, and the session line. */
export interface HealthCheck {
  vmName: string
  vmUuid: string
  /** The backup, as its files say it: an XVA's start time (ISO), or a chain run's name. */
  backup: string
  /** The Data Protector session that made the backup, when one did. */
  session?: string
  /** When the check ran (ISO). */
  checked: string
  passed: boolean
  /** The line the check gave the session. */
  line: string
}

interface Record {
  version: 1
  checks: HealthCheck[]
}

/** Keeps the newest checks only: at most this many backups are remembered. */
const KEEP = 2000

export function healthRecordFile(backupDir: string): string {
  return `${resolve(backupDir)}.health-checks.json`
}

export async function readHealthChecks(backupDir: string): Promise<HealthCheck[]> {
  try {
    const record = JSON.parse(await readFile(healthRecordFile(backupDir), 'utf8')) as Record
    return record.version === 1 && Array.isArray(record.checks) ? record.checks : []
  } catch {
    return []
  }
}

/** The last check of this backup, if any. */
export function lastCheckOf(
  checks: HealthCheck[],
  backup: { vmUuid: string; backup: string },
): HealthCheck | undefined {
  return checks.find((c) => c.vmUuid === backup.vmUuid && c.backup === backup.backup)
}

/** Records a check: it replaces the last one of the same backup. */
export async function recordHealthCheck(backupDir: string, check: HealthCheck): Promise<void> {
  const file = healthRecordFile(backupDir)
  const others = (await readHealthChecks(backupDir)).filter(
    (c) => !(c.vmUuid === check.vmUuid && c.backup === check.backup),
  )
  const record: Record = { version: 1, checks: [check, ...others].slice(0, KEEP) }
  const partial = `${file}.${process.pid}.partial`
  try {
    await writeFile(partial, JSON.stringify(record, null, 1), { mode: 0o600 })
    await rename(partial, file)
  } finally {
    await rm(partial, { force: true })
  }
}
