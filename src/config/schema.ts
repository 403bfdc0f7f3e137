// The configuration as the hooks use it, validated from FIELDS (fields.ts): every problem is
// reported at once, each naming the key. An unknown key is an error: a typo must not silently
// change a backup. What is read from outside the file (a password file, an environment
// variable, the CA file) is resolved apart, in secrets.ts.
import {
  FIELDS,
  FieldProblem,
  KEYS,
  MODES,
  shown,
  shownFor,
  type Field,
  type FieldEnv,
  type Key,
  type Method,
  type Values,
} from './fields.js'
import { resolveCaFile, resolvePassword } from './secrets.js'

export {
  COMPRESSIONS,
  MODES,
  defaultBackupDir,
  normalizeFingerprint,
  type Compression,
  type Method,
  type Mode,
} from './fields.js'

export type Config = Omit<Values, 'url' | 'password' | 'passwordFile' | 'passwordEnv' | 'vmName'> & {
  /** Where the configuration came from (a path, or a description). */
  source: string
  /** The url's scheme, host and port. */
  url: string
  /** The host part of url, used in file names. */
  server: string
  password: string
  vmName: string[]
  /** The mode's two choices: how a VM is made still, and whether every VM is taken. */
  method: Method
  allVms: boolean
}

/** Keys the original DPxen_config.py spells differently. */
const ALIASES: Record<string, Key> = {
  Mode: 'mode',
  vmname: 'vmName',
  VmName: 'vmName',
  Url: 'url',
  URL: 'url',
}

export interface ValidationEnv extends FieldEnv {
  env: NodeJS.ProcessEnv
  /** A restore reads the file's `restore` section over its other keys; backups ignore it. */
  forRestore?: boolean
  /** Values given on the command line (dpxen restore), over everything in the file. */
  overrides?: Record<string, unknown>
  /** Folder of the configuration file, for relative passwordFile / caFile paths. */
  baseDir: string
}

/**
 * The keys that apply: the file's, with its `restore` section over them when restoring (so a
 * restore changes no backup setting), then the command line's. The section's keys are checked
 * by name in every hook, so a typo there shows before the day of the restore.
 */
function withSections(
  raw: Record<string, unknown>,
  ctx: ValidationEnv,
  problems: string[],
): Record<string, unknown> {
  const { restore, ...top } = raw
  let section: Record<string, unknown> = {}
  if (restore !== undefined && restore !== null) {
    if (typeof restore !== 'object' || Array.isArray(restore))
      problems.push('restore: must be a section of keys, like {"mode": "offline", "restoreAs": "copy"}')
    else {
      section = restore as Record<string, unknown>
      for (const key of Object.keys(section))
        if (!(KEYS as string[]).includes(ALIASES[key] ?? key)) {
          const hint = closest(key)
          problems.push(`restore.${key}: unknown key${hint ? ` (did you mean ${hint}?)` : ' (remove it)'}`)
        }
    }
  }
  const merged = ctx.forRestore ? { ...top, ...section } : top
  return { ...merged, ...(ctx.overrides ?? {}) }
}

/** Levenshtein distance, for suggesting a known key for a typo. */
function distance(a: string, b: string): number {
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

/** The closest known key, to suggest for a typo. */
function closest(key: string): string | undefined {
  let best: string | undefined
  let bestDistance = 3
  for (const known of KEYS) {
    const dist = distance(key.toLowerCase(), known.toLowerCase())
    if (dist < bestDistance) [best, bestDistance] = [known, dist]
  }
  return best
}

/** Each field's value (its default when absent); problems for unknown keys and bad values. */
function parseFields(raw: Record<string, unknown>, env: FieldEnv, problems: string[]): Partial<Values> {
  const given = new Map<Key, unknown>()
  for (const [key, value] of Object.entries(raw)) {
    const name = ALIASES[key] ?? key
    if (!(KEYS as string[]).includes(name)) {
      const hint = closest(name)
      problems.push(
        `${shown(key).slice(1, -1)}: unknown key${hint ? ` (did you mean ${hint}?)` : ' (remove it)'}`,
      )
      continue
    }
    if (value !== undefined && value !== null) given.set(name as Key, value)
  }
  const values: Record<string, unknown> = {}
  for (const key of KEYS) {
    const field = FIELDS[key] as Field<unknown>
    if (!given.has(key)) {
      if (field.fallback) values[key] = field.fallback(env)
      else if (!field.optional) problems.push(`${key}: missing (add it)`)
      continue
    }
    try {
      values[key] = field.parse(given.get(key), env)
    } catch (error) {
      if (!(error instanceof FieldProblem)) throw error
      problems.push(`${key}: ${error.message}`)
    }
  }
  return values as Partial<Values>
}

/** What one key cannot say alone: vmName against mode, TLS options against the url. */
function checkTogether(values: Partial<Values>, forRestore: boolean, problems: string[]): void {
  const mode = values.mode
  const named = mode !== undefined && !MODES[mode].allVms
  // From the values as they apply (file, restore section, command line), not the file alone.
  const listGiven = values.vmName !== undefined
  if (named && !problems.some((p) => p.startsWith('vmName: '))) {
    const all = MODES[mode].method === 'snapshot' ? 'allOnline' : 'allOffline'
    if (!listGiven) problems.push(`vmName: missing; mode ${mode} needs the names of the VMs (or use ${all})`)
    else if ((values.vmName ?? []).length === 0)
      problems.push(`vmName: is empty; mode ${mode} backs up the VMs it names (or use ${all})`)
  }
  const narrowing = (['exclude', 'includeTags', 'excludeTags'] as const).filter((k) => values[k]?.length)
  // A restore chooses by its files and vmName: the backup's narrowing keys do not concern it.
  if (named && narrowing.length && !forRestore)
    problems.push(
      `${narrowing.join('/')}: only apply to allOnline and allOffline (mode ${mode} backs up the VMs vmName names)`,
    )
  if (values.incremental && mode !== undefined && MODES[mode].method !== 'snapshot' && !forRestore)
    problems.push(
      `incremental: works with online and allOnline (mode ${mode} shuts VMs down and exports them whole)`,
    )
  if (values.cbt && !values.incremental && !forRestore)
    problems.push('cbt: works with incremental backups (set incremental: true, or leave cbt out)')
  if ((values.caFile || values.fingerprint) && values.url?.protocol === 'http:')
    problems.push('caFile/fingerprint: only apply to an https:// url')
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
  const values = parseFields(withSections(raw, ctx, problems), ctx, problems)
  checkTogether(values, ctx.forRestore ?? false, problems)
  const password = resolvePassword(values, ctx, problems)
  const caFile = resolveCaFile(values.caFile, ctx, problems)
  if (problems.length) return { problems }

  const { url, mode, passwordFile: _file, passwordEnv: _env, fingerprint, ...rest } = values as Values
  const config: Config = {
    ...rest,
    mode,
    source,
    url: `${url.protocol}//${url.host}`,
    server: url.hostname.replace(/^\[|\]$/g, ''),
    password: password!,
    vmName: values.vmName ?? [],
    ...(caFile ? { caFile } : {}),
    ...(fingerprint ? { fingerprint } : {}),
    method: MODES[mode].method,
    allVms: MODES[mode].allVms,
  }
  return { config, problems }
}

/** A configuration value as a message may show it (secrets by their kind only). */
export function shownValue(key: Key, value: unknown): string {
  return shownFor(FIELDS[key] as Field<unknown>, value)
}
