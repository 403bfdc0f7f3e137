// The staging folder, made safe to use as root and shared by one run at a time.
//
// The default backupDir is /tmp/backup: any local user could create it first and plant links
// (.dpxen-state.json.tmp -> /etc/shadow) for a root pre-exec to write through, or a forged state
// file for the post-exec to act on. So the folder must be a real folder (not a link) owned by
// the user dpxen runs as and writable by nobody else; a missing one is created 0700. Every file
// dpxen creates there is made exclusively (O_CREAT|O_EXCL never follows a link), and the state
// file is trusted only when it is a regular file of ours.
//
// Two backup specifications with the same configuration would share the folder: one run's
// pre-exec deleting the other's files before Data Protector had backed them up, renaming the
// other's partial file. The lock (.dpxen-lock, created exclusively) is held from the pre-exec
// through Data Protector's backup of the folder to the post-exec of the same session: `running`
// while a hook runs (taken over when that process is gone), `staged` between them (taken over
// after STALE_AFTER_MS, as a session that never ran its post-exec).
import { hostname } from 'node:os'
import { promises as fsp, constants, type Stats } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { crashPoint } from '../core/crash-points.js'
import { DpxenError, localIoError } from '../core/errors.js'
import { shownSeconds, type Ms } from '../core/format.js'
import type { Config } from '../config/schema.js'
import type { Logger } from '../core/log.js'
import { processGone, STALE_AFTER_MS } from './owner.js'
import { LOCK_FILE } from './names.js'

export { LOCK_FILE }

const isPosix = process.platform !== 'win32'

function unsafe(message: string): DpxenError {
  return new DpxenError('STAGING_UNSAFE', message)
}

/** Checks that a folder is a real folder, ours, writable by nobody else (POSIX). */
function checkOwnership(dir: string, stat: Stats): void {
  if (stat.isSymbolicLink())
    throw unsafe(`backupDir ${dir} is a symbolic link: give the real folder's path in backupDir`)
  if (!stat.isDirectory()) throw unsafe(`backupDir ${dir} is not a folder: give a folder in backupDir`)
  if (!isPosix || !process.getuid) return
  const uid = process.getuid()
  if (stat.uid !== uid)
    throw unsafe(
      `backupDir ${dir} belongs to uid ${stat.uid}, not to this user (uid ${uid}): another user could plant files there; remove it so dpxen creates it, or use a folder of your own`,
    )
  if (stat.mode & 0o022)
    throw unsafe(
      `backupDir ${dir} is writable by ${stat.mode & 0o002 ? 'everyone' : 'its group'} (mode ${(stat.mode & 0o777).toString(8)}): run chmod go-w on it, or use a folder of your own`,
    )
}

/** Makes sure backupDir exists (created 0700) and is safe to write in; throws one clear line if not. */
export async function prepareStaging(dir: string): Promise<void> {
  let stat: Stats
  try {
    stat = await fsp.lstat(dir)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw localIoError(dir, error)
    try {
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 })
      stat = await fsp.lstat(dir)
    } catch (made) {
      throw localIoError(dir, made)
    }
  }
  checkOwnership(dir, stat)
  try {
    await fsp.access(dir, constants.W_OK)
  } catch (error) {
    throw localIoError(dir, error)
  }
}

/**
 * Writes `name` in `dir` atomically and never through a link: a leftover temporary of that name
 * (or a link planted there) is unlinked, the temporary is created exclusively (O_EXCL does not
 * follow links), flushed, and renamed over the final name.
 */
export async function writeStagingFile(dir: string, name: string, data: string): Promise<void> {
  const path = join(dir, name)
  const tmp = `${path}.partial`
  try {
    await fsp.rm(tmp, { force: true })
    const handle = await fsp.open(tmp, 'wx', 0o600)
    try {
      await handle.writeFile(data)
      await handle.sync()
    } finally {
      await handle.close()
    }
    crashPoint(`rename ${name}`)
    await fsp.rename(tmp, path)
  } catch (error) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined)
    throw localIoError(tmp, error)
  }
}

/** Reads `name` in `dir` only if it is a regular file of this user's, not writable by others. */
export async function readTrustedFile(dir: string, name: string): Promise<string | undefined> {
  const path = join(dir, name)
  let handle: FileHandle
  try {
    // O_NOFOLLOW: a link is refused at open, so what is checked is what is read.
    // O_NONBLOCK: a FIFO put there opens at once (and is refused below), never waits for a writer.
    handle = await fsp.open(
      path,
      constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0),
    )
  } catch {
    return undefined
  }
  try {
    const stat = await handle.stat()
    if (!stat.isFile()) return undefined
    if (isPosix && process.getuid && (stat.uid !== process.getuid() || stat.mode & 0o022)) return undefined
    if (stat.size > 16 * 1024 * 1024) return undefined
    return await handle.readFile('utf8')
  } finally {
    await handle.close()
  }
}

export interface LockRecord {
  hook: string
  pid: number
  host: string
  since: string
  /** `running` while a hook runs; `staged` while Data Protector backs the files up. */
  phase: 'running' | 'staged'
  /** Data Protector's SESSIONID, when a session runs the hook. */
  session?: string
}

function describeLock(lock: LockRecord): string {
  const who = lock.session
    ? `Data Protector session ${lock.session}`
    : `${lock.hook} (pid ${lock.pid} on ${lock.host})`
  return lock.phase === 'staged'
    ? `holds the backup of ${who}, staged since ${lock.since} and not yet collected by its post-exec`
    : `is in use by ${who} since ${lock.since}`
}

/** Whether a lock may be taken over: its process is gone, or a staged backup was never collected. */
function isStale(lock: LockRecord, now = Date.now()): boolean {
  if (lock.phase === 'running') return processGone(lock.host, lock.pid)
  return now - Date.parse(lock.since) > STALE_AFTER_MS
}

export class StagingLock {
  readonly #dir: string
  #record: LockRecord
  #released = false

  private constructor(dir: string, record: LockRecord) {
    this.#dir = dir
    this.#record = record
  }

  /**
   * Takes the folder for `hook`. A lock held by the same Data Protector session (its pre-exec
   * staged the files this post-exec collects) is taken over; a stale one too (`tookOver` says
   * whose). Otherwise STAGING_BUSY, naming the holder.
   */
  static async acquire(
    dir: string,
    hook: string,
    session: string | undefined,
  ): Promise<{ lock: StagingLock; tookOver?: string }> {
    const record: LockRecord = {
      hook,
      pid: process.pid,
      host: hostname(),
      since: new Date().toISOString(),
      phase: 'running',
      ...(session ? { session } : {}),
    }
    const path = join(dir, LOCK_FILE)
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const handle = await fsp.open(path, 'wx', 0o600)
        try {
          await handle.writeFile(JSON.stringify(record))
          await handle.sync()
        } finally {
          await handle.close()
        }
        return { lock: new StagingLock(dir, record) }
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw localIoError(path, error)
      }
      const held = await readLock(dir)
      if (held === 'unreadable') {
        throw new DpxenError(
          'STAGING_BUSY',
          `backupDir ${dir} has a lock file ${LOCK_FILE} that is not dpxen's (not a regular file of this user's): remove it if no other run uses the folder`,
        )
      }
      if (held !== undefined) {
        const sameSession =
          held.phase === 'staged' && session !== undefined && held.session === session && hook === 'post-exec'
        const notRunByDp = held.phase === 'staged' && session === undefined && held.session === undefined
        // Data Protector backs the lock up with the folder and a restore puts it back: to a
        // restore, which deletes nothing, a staged lock is no conflict.
        const restoring = held.phase === 'staged' && (hook === 'restore-post-exec' || hook === 'recover')
        if (!sameSession && !notRunByDp && !restoring && !isStale(held))
          throw new DpxenError(
            'STAGING_BUSY',
            `backupDir ${dir} ${describeLock(held)}: give each backup specification its own backupDir`,
          )
        await fsp.rm(path, { force: true })
        const tookOver = sameSession || notRunByDp || restoring ? undefined : describeLock(held)
        const taken = await StagingLock.acquire(dir, hook, session)
        return tookOver ? { ...taken, tookOver } : taken
      }
    }
    throw new DpxenError(
      'STAGING_BUSY',
      `backupDir ${dir}: the lock ${LOCK_FILE} keeps changing; another run is starting`,
    )
  }

  /** The pre-exec is done: the folder stays held for Data Protector's backup and the post-exec. */
  async stage(): Promise<void> {
    this.#record = { ...this.#record, phase: 'staged', since: new Date().toISOString() }
    await writeStagingFile(this.#dir, LOCK_FILE, JSON.stringify(this.#record))
    this.#released = true
  }

  /** Lets the folder go, if this run still holds it. Never throws. */
  async release(): Promise<void> {
    if (this.#released) return
    this.#released = true
    const held = await readLock(this.#dir).catch(() => undefined)
    if (held && held !== 'unreadable' && held.pid === this.#record.pid && held.since === this.#record.since)
      await fsp.rm(join(this.#dir, LOCK_FILE), { force: true }).catch(() => undefined)
  }
}

/**
 * StagingLock.acquire, waiting up to `timeout` while the folder is busy: a line when the wait
 * begins and one a minute (Data Protector aborts a script silent for 15 minutes).
 */
export async function acquireStaging(
  dir: string,
  hook: string,
  options: {
    session: string | undefined
    timeout: Ms
    signal: AbortSignal
    say: (line: string) => void
  },
): Promise<{ lock: StagingLock; tookOver?: string }> {
  const started = Date.now()
  let lastSaid = 0
  for (;;) {
    try {
      return await StagingLock.acquire(dir, hook, options.session)
    } catch (error) {
      const waited = Date.now() - started
      if (!(error instanceof DpxenError) || error.code !== 'STAGING_BUSY' || waited >= options.timeout)
        throw error
      if (lastSaid === 0 || Date.now() - lastSaid >= 60_000) {
        options.say(
          `dpxen: ${error.message.replace(/: give each backup specification its own backupDir$/, '')}; waiting (lockTimeout ${shownSeconds(options.timeout)}, ${Math.round(waited / 1000)} s so far)`,
        )
        lastSaid = Date.now()
      }
      if (options.signal.aborted) throw new DpxenError('ABORTED', 'interrupted')
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(1000, Math.max(1, options.timeout - waited)))
        options.signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
      })
    }
  }
}

/**
 * What every hook does before it touches backupDir: makes sure the folder is safe (creating it
 * 0700 if missing), takes the lock for Data Protector's session (SESSIONID, waiting up to
 * lockTimeout), and says whose lock it took over, if any. The caller releases (or stages) the lock it gets.
 */
export async function holdStaging(
  config: Pick<Config, 'backupDir' | 'lockTimeout'>,
  hook: string,
  run: { session: { id?: string }; signal: AbortSignal; log: Logger },
): Promise<StagingLock> {
  const dir = config.backupDir
  await prepareStaging(dir)
  const { lock, tookOver } = await acquireStaging(dir, hook, {
    session: run.session.id,
    timeout: config.lockTimeout,
    signal: run.signal,
    say: (line) => run.log.info(line),
  })
  if (tookOver) run.log.info(`dpxen: warning: took over backupDir, which ${tookOver}`)
  return lock
}

/** Who holds `dir`, as a line says it ("is in use by …", "holds the backup of …"), if anyone. */
export async function describeHolder(dir: string): Promise<string | undefined> {
  const lock = await readLock(dir)
  if (lock === undefined) return undefined
  return lock === 'unreadable' ? "a lock file that is not dpxen's is there" : describeLock(lock)
}

/** The lock record; 'unreadable' when a file is there that is not a lock of ours. */
async function readLock(dir: string): Promise<LockRecord | 'unreadable' | undefined> {
  const text = await readTrustedFile(dir, LOCK_FILE)
  if (text === undefined) {
    try {
      await fsp.lstat(join(dir, LOCK_FILE))
      return 'unreadable'
    } catch {
      return undefined
    }
  }
  try {
    const record = JSON.parse(text) as LockRecord
    if (typeof record.pid !== 'number' || typeof record.since !== 'string') return 'unreadable'
    return record
  } catch {
    return 'unreadable'
  }
}
