// What every change to the pool is given: the session, where to log, the run's abort signal,
// and where to report the step under way (for progress lines).
import type { Logger } from '../core/log.js'
import type { Host } from '../xapi/host.js'

export interface PoolContext {
  host: Host
  log: Logger
  /** Aborted on SIGTERM/SIGINT: no new side effect starts after it fires. */
  signal: AbortSignal
  onStatus?: (status: string) => void
}
