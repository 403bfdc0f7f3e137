// What every handler gets: the database, the disks, the faults and the simulator's settings.
import type { Db } from './db.js'
import type { DiskStore } from './disks.js'
import type { Faults } from '../faults.js'

export type ChecksumKind = 'xxhash' | 'sha1'

export interface SimSettings {
  user: string
  password: string
  checksum: ChecksumKind
  /** Delay before SESSION_AUTHENTICATION_FAILED; xapi waits 5 s. */
  authFailureDelayMs: number
  /** xapi version written into ova.xml and checked on import. */
  xapiMajor: number
  xapiMinor: number
}

export interface SimContext {
  db: Db
  disks: DiskStore
  faults: Faults
  settings: SimSettings
  poolRef: string
  hostRef: string
  /** Aborted when the simulator closes, so long waits (event.from, stalls) end. */
  closing: AbortSignal
  /** The port every host's NBD server listens on (xapi's is 10809; the simulator's is chosen at start). */
  nbd: { port: number }
  /** Each host's server certificate (PEM), as Host.get_server_certificate answers it. */
  certificates: Map<string, string>
}
