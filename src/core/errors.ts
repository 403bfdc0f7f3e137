// One error taxonomy: a stable string code to branch on, a one-line message an operator can act
// on, and the cause. Exit codes come from the code, in one place (hook/exit-codes.ts).

export type DpxenErrorCode =
  | 'CONFIG_INVALID' // the configuration file is missing, unreadable or wrong
  | 'USAGE' // bad command line
  | 'CONNECT_FAILED' // the host cannot be reached (network, TLS)
  | 'AUTH_FAILED' // the host refused the credentials
  | 'XAPI_ERROR' // the host refused a call; see XapiError for its code
  | 'VM_NOT_FOUND' // a VM named in vmName does not exist, or the name is ambiguous
  | 'SNAPSHOT_UNSUPPORTED' // a disk of the VM is on an SR that cannot snapshot
  | 'NO_SPACE' // not enough free space in backupDir
  | 'EXPORT_FAILED' // the export stream or its task failed
  | 'XVA_INVALID' // an XVA stream or file is corrupt or not an XVA
  | 'TRANSFER_STALLED' // the host sent (or took) nothing for stallTimeout
  | 'TRANSFER_CLOSED' // the connection ended before the transfer did
  | 'LOCAL_IO' // writing or reading a file on this client failed (full, read-only, I/O error)
  | 'STAGING_UNSAFE' // backupDir is a link, not ours, or writable by others
  | 'STAGING_BUSY' // another run holds backupDir
  | 'VM_FAILED' // at least one VM could not be backed up or restored
  | 'ABORTED' // SIGTERM or SIGINT

export class DpxenError extends Error {
  readonly code: DpxenErrorCode
  constructor(code: DpxenErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'DpxenError'
    this.code = code
  }
}

/** A failure reported by the XenAPI: xapi's error code and parameters, kept as they came. */
export class XapiError extends DpxenError {
  readonly xapiCode: string
  readonly params: string[]
  readonly method: string
  constructor(description: string[], method: string) {
    const [xapiCode = 'UNKNOWN', ...params] = description
    // SESSION_INVALID names the session ref: a credential, never shown.
    const shown = xapiCode === 'SESSION_INVALID' ? ['***'] : params.filter((p) => p !== '')
    super('XAPI_ERROR', `${method} failed: ${[xapiCode, ...shown].join(' ')}`)
    this.name = 'XapiError'
    this.xapiCode = xapiCode
    this.params = params
    this.method = method
  }
}

export function isXapiError(error: unknown, ...codes: string[]): error is XapiError {
  return error instanceof XapiError && (codes.length === 0 || codes.includes(error.xapiCode))
}

/** The error's one-line message, without a stack. */
export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message.split('\n')[0]!
  return String(error)
}

/** What a local failure means and what to do about it, for those an administrator can act on. */
const LOCAL_HINTS: Record<string, [string, string]> = {
  ENOSPC: ['the staging folder is full', 'free space in backupDir or move it to a larger disk'],
  EDQUOT: ['the disk quota is exceeded', "raise the quota of backupDir's owner or free space"],
  EROFS: ['the file system is read-only', 'make backupDir writable'],
  EACCES: ['permission denied', 'backupDir must be writable by the user Data Protector runs the hook as'],
  EPERM: [
    'operation not permitted',
    'backupDir must be writable by the user Data Protector runs the hook as',
  ],
}

/** A failure of this client's file system, as LOCAL_IO with what to do; DpxenErrors pass as they are. */
export function localIoError(path: string, error: unknown): DpxenError {
  if (error instanceof DpxenError) return error
  const code = (error as NodeJS.ErrnoException).code ?? ''
  const hint = LOCAL_HINTS[code]
  const message = hint
    ? `${hint[0]} (${code}) writing ${path}: ${hint[1]}`
    : `cannot write ${path}: ${code || messageOf(error)}`
  return new DpxenError('LOCAL_IO', message, { cause: error })
}
