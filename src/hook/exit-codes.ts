// Exit codes, in one place. Documented in docs/reference.md.
import type { DpxenErrorCode } from '../core/errors.js'

export const EXIT = {
  OK: 0,
  INTERNAL: 1,
  CONFIG: 2,
  CONNECT: 3,
  AUTH: 4,
  VM_FAILED: 5,
  XVA_INVALID: 6,
  STAGING: 7,
  /** A health check ran and the backup did not prove it boots. */
  HEALTH_FAILED: 8,
  ABORTED: 130,
} as const

export function exitCodeFor(code: DpxenErrorCode): number {
  switch (code) {
    case 'CONFIG_INVALID':
    case 'USAGE':
      return EXIT.CONFIG
    case 'CONNECT_FAILED':
      return EXIT.CONNECT
    case 'AUTH_FAILED':
      return EXIT.AUTH
    case 'XVA_INVALID':
      return EXIT.XVA_INVALID
    case 'ABORTED':
      return EXIT.ABORTED
    case 'LOCAL_IO':
    case 'STAGING_UNSAFE':
    case 'STAGING_BUSY':
      return EXIT.STAGING
    default:
      return EXIT.VM_FAILED
  }
}
