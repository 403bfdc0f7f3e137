// The configuration: its keys, their defaults, and validation that reports every problem at
// once, each naming the file and the key. An unknown key is an error: a typo must not silently
// change a backup.
import { CA_FILE_CAP, PASSWORD_FILE_CAP, readSmallFile, smallFileProblem } from './small-file.js'
import { isAbsolute } from 'node:path'
import { defaultDebugDir } from '../core/log.js'

export const MODES = ['online', 'allOnline', 'offline', 'allOffline'] as const
export type Mode = (typeof MODES)[number]
export const COMPRESSIONS = ['none', 'gzip', 'zstd'] as const
export type Compression = (typeof COMPRESSIONS)[number]

export interface Config {
  /** Where the configuration came from (a path, or a description). */
  source: string
  mode: Mode
  url: string
  /** The host part of url, used in file names. */
  server: string
  username: string
  password: string
  vmName: string[]
  debug: boolean
  debugDir: string
  sr: string
  backupDir: string
  caFile?: string
  /** SHA-256 certificate fingerprint, as AA:BB:… upper-case. */
  fingerprint?: string
  concurrency: number
  compression: Compression
  metadata: boolean
  /** Seconds to wait for a clean shutdown in offline mode. */
  shutdownTimeout: number
  /** Make the pre-exec fail the session when any VM fails (default: go on, post-exec reports). */
  failSessionOnError: boolean
  /** Verify each XVA while it streams (layout and every chunk checksum). */
  verifyExport: boolean
  /** Write XVA files around the page cache where the system allows it (Linux O_DIRECT). */
  directIo: boolean
  /** Online restore: create the VM from the snapshot when it no longer exists. */
  restoreMissingVm: boolean
  /** Restore: put each disk back on the SR it came from when that SR exists (else `sr`). */
  originalSr: boolean
  /** Restore: start a restored VM that was running at backup time. */
  startAfterRestore: boolean
  /** Seconds without a byte before a transfer counts as stalled and fails. */
  stallTimeout: number
  /** Seconds between progress lines (Data Protector aborts a script silent for 15 minutes). */
  progressInterval: number
  /** The largest XML-RPC answer taken from the host, in MiB (a pool's records are megabytes). */
  maxAnswerMiB: number
  /** Seconds to wait for backupDir while another session holds it (0: fail at once). */
  lockTimeout: number
}

export const KEYS = [
  'mode',
  'url',
  'username',
  'password',
  'passwordFile',
  'passwordEnv',
  'vmName',
  'debug',
  'debugDir',
  'sr',
  'backupDir',
  'caFile',
  'fingerprint',
  'concurrency',
  'compression',
  'metadata',
  'shutdownTimeout',
  'failSessionOnError',
  'progressInterval',
  'stallTimeout',
  'restoreMissingVm',
  'originalSr',
  'startAfterRestore',
  'verifyExport',
  'directIo',
  'maxAnswerMiB',
  'lockTimeout',
] as const

/** Keys the original DPxen_config.py spells differently. */
const ALIASES: Record<string, string> = {
  Mode: 'mode',
  vmname: 'vmName',
  VmName: 'vmName',
  Url: 'url',
  URL: 'url',
}

const MAX_VM_NAMES = 10_000

export function defaultBackupDir(platform = process.platform): string {
  return platform === 'win32' ? 'C:\\tmp\\backup' : '/tmp/backup'
}

export interface ValidationEnv {
  env: NodeJS.ProcessEnv
  platform: NodeJS.Platform
  /** Folder of the configuration file, for relative passwordFile / caFile paths. */
  baseDir: string
}

/** A value as shown in a message: JSON, cut to 60 characters. */
function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value)
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

/**
 * Keys whose value is a secret, or says where one is (a file, an environment variable that a
 * hurried administrator may have filled with the password itself): a message names the key and
 * the kind of value, never the value.
 */
const SECRET_KEYS = new Set(['password', 'passwordFile', 'passwordEnv'])

/** A value as a message may show it: secrets by their kind only. */
function shownFor(key: string, value: unknown): string {
  if (!SECRET_KEYS.has(key)) return shown(value)
  const kind = Array.isArray(value) ? 'a list' : value === null ? 'null' : `a ${typeof value}`
  return `${kind} (not shown)`
}

/** A text as shown in a message, cut to 60 characters. */
function clip(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

/** The closest known key, to suggest for a typo. */
function closest(key: string): string | undefined {
  const distance = (a: string, b: string): number => {
    const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)])
    for (let j = 1; j <= b.length; j++) d[0]![j] = j
    for (let i = 1; i <= a.length; i++) {
      for (let j = 1; j <= b.length; j++) {
        d[i]![j] = Math.min(
          d[i - 1]![j]! + 1,
          d[i]![j - 1]! + 1,
          d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
        )
      }
    }
    return d[a.length]![b.length]!
  }
  let best: string | undefined
  let bestDistance = 3
  for (const known of KEYS) {
    const dist = distance(key.toLowerCase(), known.toLowerCase())
    if (dist < bestDistance) [best, bestDistance] = [known, dist]
  }
  return best
}

export function normalizeFingerprint(text: string): string | undefined {
  const hex = text
    .replace(/^sha-?256[:=]?/i, '')
    .replace(/[:\s]/g, '')
    .toUpperCase()
  if (!/^[0-9A-F]{64}$/.test(hex)) return undefined
  return hex.match(/../g)!.join(':')
}

/**
 * Checks raw values from a file. Returns the configuration, or every problem found, each as
 * "<key>: <what is wrong> (<what to do>)"; the caller adds the file name.
 */
export function validateConfig(
  raw: Record<string, unknown>,
  source: string,
  ctx: ValidationEnv,
): { config?: Config; problems: string[] } {
  const problems: string[] = []
  const values: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(raw)) {
    const name = ALIASES[key] ?? key
    if (!(KEYS as readonly string[]).includes(name)) {
      const hint = closest(name)
      problems.push(
        `${shown(key).slice(1, -1)}: unknown key${hint ? ` (did you mean ${hint}?)` : ' (remove it)'}`,
      )
      continue
    }
    if (value !== undefined && value !== null) values[name] = value
  }

  const str = (key: string, required: boolean): string | undefined => {
    const v = values[key]
    if (v === undefined) {
      if (required) problems.push(`${key}: missing (add it)`)
      return undefined
    }
    if (typeof v !== 'string') {
      problems.push(`${key}: must be a text in quotes, not ${shownFor(key, v)}`)
      return undefined
    }
    return v
  }
  const bool = (key: string, fallback: boolean): boolean => {
    const v = values[key]
    if (v === undefined) return fallback
    if (typeof v === 'boolean') return v
    problems.push(`${key}: must be true or false (True or False in DPxen_config.py), not ${shown(v)}`)
    return fallback
  }
  const num = (key: string, fallback: number, min: number, max: number, integer: boolean): number => {
    const v = values[key]
    if (v === undefined) return fallback
    if (
      typeof v !== 'number' ||
      !Number.isFinite(v) ||
      v < min ||
      v > max ||
      (integer && !Number.isInteger(v))
    ) {
      problems.push(
        `${key}: must be a ${integer ? 'whole ' : ''}number from ${min} to ${max}, not ${shown(v)}`,
      )
      return fallback
    }
    return v
  }
  const path = (key: string, fallback?: string): string | undefined => {
    const v = str(key, false) ?? fallback
    if (v === undefined) return undefined
    if (v.trim() === '') {
      problems.push(`${key}: is empty (give a folder)`)
      return undefined
    }
    if (!isAbsolute(v) && !(ctx.platform === 'win32' && /^[A-Za-z]:\\/.test(v))) {
      problems.push(`${key}: must be an absolute path, not ${shown(v)}`)
      return undefined
    }
    return v
  }

  let mode: Mode | undefined
  const modeText = str('mode', true)
  if (modeText !== undefined) {
    mode = MODES.find((m) => m.toLowerCase() === modeText.trim().toLowerCase())
    if (!mode) problems.push(`mode: ${shown(modeText)} is not one of ${MODES.join(', ')}`)
  }

  let url: string | undefined
  let server = ''
  const urlText = str('url', true)
  if (urlText !== undefined) {
    try {
      const parsed = new URL(urlText.trim())
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
        problems.push(`url: must start with http:// or https://, not ${shown(urlText)}`)
      else if (parsed.username || parsed.password)
        problems.push('url: must not contain credentials (use username and password)')
      else {
        url = `${parsed.protocol}//${parsed.host}`
        server = parsed.hostname.replace(/^\[|\]$/g, '')
      }
    } catch {
      problems.push(`url: ${shown(urlText)} is not a URL (example: https://xenserver.example.com)`)
    }
  }

  const username = str('username', true)
  if (username !== undefined && username.trim() === '') problems.push('username: is empty')

  const sources = ['password', 'passwordFile', 'passwordEnv'].filter((k) => values[k] !== undefined)
  let password: string | undefined
  if (sources.length === 0) problems.push('password: missing (give password, passwordFile or passwordEnv)')
  else if (sources.length > 1) problems.push(`password: give only one of ${sources.join(', ')}`)
  else if (sources[0] === 'password') {
    password = str('password', true)
    if (password === '') problems.push('password: is empty')
  } else if (sources[0] === 'passwordFile') {
    const file = str('passwordFile', true)
    if (file !== undefined) {
      try {
        password = readSmallFile(isAbsolute(file) ? file : `${ctx.baseDir}/${file}`, PASSWORD_FILE_CAP)
          .toString('utf8')
          .replace(/\r?\n$/, '')
        if (password === '') problems.push('passwordFile: the file it names is empty')
      } catch (error) {
        problems.push(
          `passwordFile: cannot read the file it names (${smallFileProblem(error, PASSWORD_FILE_CAP)})`,
        )
      }
    }
  } else {
    const name = str('passwordEnv', true)
    if (name !== undefined) {
      password = ctx.env[name]
      if (!password) problems.push('passwordEnv: the environment variable it names is not set or empty')
    }
  }

  let vmName: string[] = []
  const list = values.vmName
  let listOk = list === undefined
  if (list !== undefined) {
    if (!Array.isArray(list) || list.some((n) => typeof n !== 'string'))
      problems.push('vmName: must be a list of names, like ["Debian", "vm2"]')
    else if (list.length > MAX_VM_NAMES)
      problems.push(`vmName: lists ${list.length} names; at most ${MAX_VM_NAMES}`)
    else if (list.some((n) => (n as string).trim() === '')) problems.push('vmName: has an empty name')
    else {
      vmName = list as string[]
      listOk = true
    }
  }
  if (mode === 'online' || mode === 'offline') {
    const all = mode === 'online' ? 'allOnline' : 'allOffline'
    if (list === undefined)
      problems.push(`vmName: missing; mode ${mode} needs the names of the VMs (or use ${all})`)
    else if (listOk && vmName.length === 0)
      problems.push(`vmName: is empty; mode ${mode} backs up the VMs it names (or use ${all})`)
  }

  const sr = str('sr', false) ?? ''
  const backupDir = path('backupDir', defaultBackupDir(ctx.platform))
  const debugDir = path('debugDir', defaultDebugDir(ctx.platform))
  let caFile = str('caFile', false)
  if (caFile !== undefined) {
    caFile = isAbsolute(caFile) ? caFile : `${ctx.baseDir}/${caFile}`
    try {
      readSmallFile(caFile, CA_FILE_CAP)
    } catch (error) {
      problems.push(`caFile: cannot read ${clip(caFile)} (${smallFileProblem(error, CA_FILE_CAP)})`)
    }
  }
  let fingerprint: string | undefined
  const fpText = str('fingerprint', false)
  if (fpText !== undefined) {
    fingerprint = normalizeFingerprint(fpText)
    if (!fingerprint)
      problems.push('fingerprint: must be a SHA-256 fingerprint, 64 hex digits (colons allowed)')
  }
  if ((caFile || fingerprint) && url?.startsWith('http:'))
    problems.push('caFile/fingerprint: only apply to an https:// url')

  const compressionText = str('compression', false) ?? 'none'
  const compression = COMPRESSIONS.find((c) => c === compressionText.toLowerCase())
  if (!compression)
    problems.push(`compression: ${shown(compressionText)} is not one of ${COMPRESSIONS.join(', ')}`)

  const config = {
    source,
    mode: mode!,
    url: url!,
    server,
    username: username!,
    password: password!,
    vmName,
    debug: bool('debug', false),
    debugDir: debugDir!,
    sr,
    backupDir: backupDir!,
    ...(caFile ? { caFile } : {}),
    ...(fingerprint ? { fingerprint } : {}),
    concurrency: num('concurrency', 1, 1, 16, true),
    compression: compression ?? 'none',
    metadata: bool('metadata', false),
    shutdownTimeout: num('shutdownTimeout', 600, 1, 86_400, false),
    failSessionOnError: bool('failSessionOnError', false),
    progressInterval: num('progressInterval', 60, 0.05, 600, false),
    stallTimeout: num('stallTimeout', 600, 1, 86_400, false),
    restoreMissingVm: bool('restoreMissingVm', false),
    originalSr: bool('originalSr', false),
    startAfterRestore: bool('startAfterRestore', false),
    verifyExport: bool('verifyExport', true),
    directIo: bool('directIo', true),
    maxAnswerMiB: num('maxAnswerMiB', 256, 1, 4096, true),
    lockTimeout: num('lockTimeout', 0, 0, 86_400, false),
  } satisfies Config
  return problems.length ? { problems } : { config, problems }
}
