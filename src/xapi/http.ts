// Redirects between the pool's hosts, shared by downloads (raw-get.ts) and uploads (put.ts):
// xapi answers 302 to the member that holds the storage; only the pool's own hosts are followed.
import { DpxenError } from '../core/errors.js'
import type { Trust } from './connection.js'

const MAX_REDIRECTS = 3

/**
 * Opens `url` and follows 302 to another pool member (xapi sends one when another member holds
 * the storage), at most 3 times. `redirect` gives a 302's location, letting that answer go. A
 * redirect to a host that is not one of the pool's is refused: nothing goes there.
 */
export async function followRedirects<T>(
  trust: Trust,
  url: string,
  open: (url: string) => Promise<T>,
  redirect: (res: T) => string | undefined,
): Promise<T> {
  let current = url
  for (let hop = 0; ; hop++) {
    const res = await open(current)
    const location = hop < MAX_REDIRECTS ? redirect(res) : undefined
    if (location === undefined) return res
    const next = new URL(location, current)
    if (!trust.knows(next.hostname))
      throw new DpxenError(
        'CONNECT_FAILED',
        `${new URL(current).host} redirected the transfer to ${next.host}, which is not a host of this pool (refused: nothing was sent there; check the pool's host addresses with "dpxen check")`,
      )
    current = next.toString()
  }
}
