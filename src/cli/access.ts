// What `dpxen check` says about the user it runs as: Data Protector runs a UNIX session script
// as the backup session's owner (as root only with "Back up as root") and a Windows one as the
// Inet service account, so a hook that works from an administrator's shell may fail in the
// session. check names the user and whether it can write where the hooks write.
import { constants, existsSync, promises as fsp } from 'node:fs'
import { userInfo } from 'node:os'
import { dirname } from 'node:path'
import type { Config } from '../config/schema.js'
import type { Logger } from '../core/log.js'

/** The folder itself, or the nearest existing one above it (where it would be created). */
function nearest(dir: string): string {
  let at = dir
  while (!existsSync(at) && dirname(at) !== at) at = dirname(at)
  return at
}

async function writable(dir: string): Promise<boolean> {
  return fsp.access(nearest(dir), constants.W_OK).then(
    () => true,
    () => false,
  )
}

/** Lines on the user and its access; returns the number of problems. */
export async function checkAccess(config: Config, log: Logger): Promise<number> {
  const me = userInfo()
  log.info(
    `user    dpxen runs as ${me.username}${me.uid >= 0 ? ` (uid ${me.uid})` : ''}; Data Protector runs the hooks as the backup session's owner (UNIX; as root with "Back up as root") or the Inet service account (Windows): check as that user`,
  )
  let problems = 0
  const folders: [string, string, boolean][] = [
    ['backupDir', config.backupDir, true],
    ['debugDir', config.debugDir, config.debug],
  ]
  for (const [key, dir, needed] of folders) {
    if (!needed) continue
    const ok = await writable(dir)
    if (!ok) problems++
    const where = existsSync(dir) ? dir : `${dir} (to be created in ${nearest(dir)})`
    log.info(
      `${ok ? 'ok     ' : 'PROBLEM'} ${key} ${where}: ${ok ? 'writable' : `not writable by ${me.username}`}`,
    )
  }
  return problems
}
