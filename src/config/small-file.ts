// Reading the small files a configuration names (the configuration itself, a password file, a
// CA file) so that a wrong path cannot hang or flood the hook: only a regular file, opened
// without blocking (a FIFO would wait for a writer forever, ignoring SIGTERM), and no larger
// than a cap (/dev/zero as passwordFile once grew a hook to 16.8 GB).
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs'

export const CONFIG_FILE_CAP = 1024 * 1024
export const PASSWORD_FILE_CAP = 64 * 1024
export const CA_FILE_CAP = 1024 * 1024

/** Why a file was not read: an errno code, NOT_A_FILE or TOO_LARGE. */
export class SmallFileError extends Error {
  readonly code: string
  constructor(code: string, message: string) {
    super(message)
    this.code = code
  }
}

/** What a SmallFileError (or any read error) says, for a configuration problem line. */
export function smallFileProblem(error: unknown, cap: number): string {
  const code = (error as { code?: string }).code ?? 'error'
  if (code === 'NOT_A_FILE') return 'not a regular file'
  if (code === 'TOO_LARGE') return `larger than ${cap / 1024} KiB, which no such file is`
  return code
}

/** The contents of a regular file of at most `cap` bytes; throws SmallFileError or the errno. */
export function readSmallFile(path: string, cap: number): Buffer {
  const fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0))
  try {
    const stat = fstatSync(fd)
    if (!stat.isFile()) throw new SmallFileError('NOT_A_FILE', `${path} is not a regular file`)
    if (stat.size > cap) throw new SmallFileError('TOO_LARGE', `${path} is larger than ${cap} bytes`)
    const data = readFileSync(fd)
    if (data.length > cap) throw new SmallFileError('TOO_LARGE', `${path} is larger than ${cap} bytes`)
    return data
  } finally {
    closeSync(fd)
  }
}
