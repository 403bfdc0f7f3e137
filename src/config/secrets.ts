// What a configuration names outside itself: the password (given, in a file, or in an
// environment variable: exactly one) and the CA file. Read here, apart from the validation of
// the file's own values, with the same one-line problems.
import { isAbsolute } from 'node:path'
import type { Values } from './fields.js'
import { CA_FILE_CAP, PASSWORD_FILE_CAP, readSmallFile, smallFileProblem } from '../core/small-file.js'

interface Where {
  env: NodeJS.ProcessEnv
  /** Folder of the configuration file, for relative paths. */
  baseDir: string
}

/** A text as shown in a message, cut to 60 characters. */
function clip(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

function resolve(where: Where, file: string): string {
  return isAbsolute(file) ? file : `${where.baseDir}/${file}`
}

/** The password from whichever one of password, passwordFile, passwordEnv is given. */
export function resolvePassword(
  values: Partial<Values>,
  where: Where,
  problems: string[],
): string | undefined {
  const sources = (['password', 'passwordFile', 'passwordEnv'] as const).filter(
    (k) => values[k] !== undefined,
  )
  // A source given with a bad value has its problem already.
  if (problems.some((p) => /^password(File|Env)?: /.test(p))) return undefined
  if (sources.length === 0) {
    problems.push('password: missing (give password, passwordFile or passwordEnv)')
    return undefined
  }
  if (sources.length > 1) {
    problems.push(`password: give only one of ${sources.join(', ')}`)
    return undefined
  }
  let password: string | undefined
  if (values.password !== undefined) {
    password = values.password
    if (password === '') problems.push('password: is empty')
  } else if (values.passwordFile !== undefined) {
    const file = resolve(where, values.passwordFile)
    try {
      password = readSmallFile(file, PASSWORD_FILE_CAP)
        .toString('utf8')
        .replace(/\r?\n$/, '')
      if (password === '') problems.push('passwordFile: the file it names is empty')
    } catch (error) {
      problems.push(`passwordFile: cannot read ${file} (${smallFileProblem(error, PASSWORD_FILE_CAP)})`)
    }
  } else {
    password = where.env[values.passwordEnv!]
    if (!password) problems.push('passwordEnv: the environment variable it names is not set or empty')
  }
  return password
}

/** The CA file's absolute path, once it is known to be a readable small file. */
export function resolveCaFile(
  caFile: string | undefined,
  where: Where,
  problems: string[],
): string | undefined {
  if (caFile === undefined) return undefined
  const path = resolve(where, caFile)
  try {
    readSmallFile(path, CA_FILE_CAP)
    return path
  } catch (error) {
    problems.push(`caFile: cannot read ${clip(path)} (${smallFileProblem(error, CA_FILE_CAP)})`)
    return undefined
  }
}
