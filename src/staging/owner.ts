// Which dpxen process owns something it left (a staging lock, a snapshot): `<hostname>:<pid>`,
// and whether that process is gone, so a leftover is taken over or swept only when safe.
import { hostname } from 'node:os'

/** A snapshot of ours older than this is swept even if its owner may still run. */
export const STALE_AFTER_MS = 24 * 3600 * 1000

/** `<hostname>:<pid>` of this process. */
export function ownerTag(): string {
  return `${hostname()}:${process.pid}`
}

/** Whether the owner named by an ownerTag() is gone (an unreadable one counts as gone). */
export function ownerGone(owner: string | undefined): boolean {
  if (!owner) return true
  const [host = '', pid] = owner.split(':')
  return processGone(host, Number(pid))
}

/**
 * Whether the dpxen process `pid` on `host` is gone: only this machine's processes can be
 * asked; another host's pid says nothing, so it counts as alive.
 */
export function processGone(host: string, pid: number): boolean {
  if (host !== hostname()) return false
  try {
    process.kill(pid, 0)
    return false
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH'
  }
}
