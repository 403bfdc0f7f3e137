// Reading files dpxen did not necessarily write (the configuration, a password file, a CA file,
// and everything in a staging folder: manifests, chain manifests, XVA and VHD files) so that a
// wrong or hostile file cannot hang or flood the hook: only a regular file, opened without
// blocking (a FIFO would wait for a writer forever, ignoring SIGTERM), and, when it is read
// whole, no larger than a cap (/dev/zero as passwordFile once grew a hook to 16.8 GB).
import { closeSync, constants, fstatSync, openSync, promises as fsp, readFileSync } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'

export const CONFIG_FILE_CAP = 1024 * 1024
export const PASSWORD_FILE_CAP = 64 * 1024
export const CA_FILE_CAP = 1024 * 1024
/** A manifest or chain manifest: a few KiB for a VM of many disks. */
export const MANIFEST_CAP = 4 * 1024 * 1024

const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0)

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
  const fd = openSync(path, OPEN_FLAGS)
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

/** A regular file opened for reading without blocking, with its size; throws SmallFileError NOT_A_FILE or the errno. */
async function openRegular(path: string): Promise<{ handle: FileHandle; size: number }> {
  const handle = await fsp.open(path, OPEN_FLAGS)
  try {
    const stat = await handle.stat()
    if (!stat.isFile()) throw new SmallFileError('NOT_A_FILE', `${path} is not a regular file`)
    return { handle, size: stat.size }
  } catch (error) {
    await handle.close()
    throw error
  }
}

/** A regular file opened for reading without blocking; throws SmallFileError NOT_A_FILE or the errno. */
export async function openRegularFile(path: string): Promise<FileHandle> {
  return (await openRegular(path)).handle
}

/** The text of a regular file of at most `cap` bytes, read without blocking; throws as readSmallFile. */
export async function readSmallText(path: string, cap: number): Promise<string> {
  const { handle, size } = await openRegular(path)
  try {
    if (size > cap) throw new SmallFileError('TOO_LARGE', `${path} is larger than ${cap} bytes`)
    const data = await handle.readFile()
    if (data.length > cap) throw new SmallFileError('TOO_LARGE', `${path} is larger than ${cap} bytes`)
    return data.toString('utf8')
  } finally {
    await handle.close()
  }
}
