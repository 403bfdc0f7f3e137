// The configuration described once: each key with its kind, default, limits and meaning. The
// Config type, the defaults, the validation and the README's key tables all come from FIELDS;
// a new key is one entry here.
import { isAbsolute } from 'node:path'
import { fromSeconds, type Ms } from '../core/format.js'
import { defaultDebugDir } from '../core/log.js'

/** What a mode packs: how a VM is made still for its export, and whether vmName names the VMs. */
export const MODES = {
  online: { method: 'snapshot', allVms: false },
  allOnline: { method: 'snapshot', allVms: true },
  offline: { method: 'shutdown', allVms: false },
  allOffline: { method: 'shutdown', allVms: true },
} as const
export type Mode = keyof typeof MODES
/** snapshot: the VM keeps running (online); shutdown: it is stopped and started again (offline). */
export type Method = (typeof MODES)[Mode]['method']
export const RESTORE_AS = ['original', 'copy'] as const
export const COMPRESSIONS = ['none', 'gzip', 'zstd'] as const
export type Compression = (typeof COMPRESSIONS)[number]

export interface FieldEnv {
  platform: NodeJS.Platform
}

/** A value that cannot be taken; the message follows "<key>: ". */
export class FieldProblem extends Error {}

export interface Field<T> {
  /** Where the README lists it. */
  group: 'connection' | 'backup' | 'restore'
  /** What it means, for the README. */
  doc: string
  /** The default as the README shows it. */
  shownDefault: string
  /** Its value when absent; without one the key is required (or optional, see `optional`). */
  fallback?: (env: FieldEnv) => T
  /** Absent is fine and means "not set". */
  optional?: true
  /** A secret, or where one is: a message never shows its value. */
  secret?: true
  /** Takes a present value, or throws FieldProblem. */
  parse(value: unknown, env: FieldEnv): T
}

/** A value as shown in a message: JSON, cut to 60 characters. */
export function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value)
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

/** A value as a message for `field` may show it: a secret by its kind only. */
/** A url as shown in a message: any user and password in it replaced, whatever else is wrong. */
export function shownUrl(value: string): string {
  return shown(value.replace(/^([^/@]*\/\/)?[^/@]*@/, (_, scheme: string | undefined) => `${scheme ?? ''}…@`))
}

export function shownFor(field: { secret?: true }, value: unknown): string {
  if (!field.secret) return shown(value)
  const kind = Array.isArray(value) ? 'a list' : value === null ? 'null' : `a ${typeof value}`
  return `${kind} (not shown)`
}

type Doc = Pick<Field<unknown>, 'group' | 'doc'> & { secret?: true }

function asText(value: unknown, field: { secret?: true }): string {
  if (typeof value !== 'string')
    throw new FieldProblem(`must be a text in quotes, not ${shownFor(field, value)}`)
  return value
}

const text = ({
  fallback,
  nonEmpty,
  ...doc
}: Doc & { fallback?: string; nonEmpty?: true }): Field<string> => ({
  ...doc,
  shownDefault: fallback !== undefined ? `\`${JSON.stringify(fallback)}\`` : 'required',
  ...(fallback !== undefined ? { fallback: () => fallback } : {}),
  parse(value) {
    const s = asText(value, doc)
    if (nonEmpty && s.trim() === '') throw new FieldProblem('is empty')
    return s
  },
})

/** A text that may be absent (then "not set"). */
const optionalText = (doc: Doc, shownDefault = 'none'): Field<string> & { optional: true } => ({
  ...text(doc),
  shownDefault,
  optional: true,
})

const bool = (fallback: boolean, doc: Doc): Field<boolean> => ({
  ...doc,
  shownDefault: `\`${fallback}\``,
  fallback: () => fallback,
  parse(value) {
    if (typeof value === 'boolean') return value
    throw new FieldProblem(`must be true or false (True or False in DPxen_config.py), not ${shown(value)}`)
  },
})

const number = (
  fallback: number,
  limits: { min: number; max: number; integer?: true },
  doc: Doc,
): Field<number> => ({
  ...doc,
  shownDefault: String(fallback),
  fallback: () => fallback,
  parse(value) {
    const { min, max, integer } = limits
    if (
      typeof value !== 'number' ||
      !Number.isFinite(value) ||
      value < min ||
      value > max ||
      (integer && !Number.isInteger(value))
    )
      throw new FieldProblem(
        `must be a ${integer ? 'whole ' : ''}number from ${min} to ${max}, not ${shown(value)}`,
      )
    return value
  },
})

/** Seconds in the file, a duration (core/format.ts's Ms) in the Config: converted here and nowhere else. */
const seconds = (fallback: number, limits: { min: number; max: number }, doc: Doc): Field<Ms> => {
  const inSeconds = number(fallback, limits, doc)
  return {
    ...inSeconds,
    fallback: () => fromSeconds(fallback),
    parse: (value, env) => fromSeconds(inSeconds.parse(value, env)),
  }
}

function choice<T extends string>(
  choices: readonly T[],
  { fallback, ...doc }: Doc & { fallback?: T },
): Field<T> {
  return {
    ...doc,
    shownDefault: fallback ? `\`${fallback}\`` : 'required',
    ...(fallback ? { fallback: () => fallback } : {}),
    parse(value) {
      const s = asText(value, doc)
      const found = choices.find((c) => c.toLowerCase() === s.trim().toLowerCase())
      if (!found) throw new FieldProblem(`${shown(s)} is not one of ${choices.join(', ')}`)
      return found
    },
  }
}

/** An absolute folder; Windows drive paths count as absolute wherever the check runs. */
const folder = (fallback: (platform: NodeJS.Platform) => string, doc: Doc): Field<string> => ({
  ...doc,
  shownDefault: `\`${fallback('linux')}\`, \`${fallback('win32')}\``,
  fallback: (env) => fallback(env.platform),
  parse(value, env) {
    const s = asText(value, doc)
    if (s.trim() === '') throw new FieldProblem('is empty (give a folder)')
    if (!isAbsolute(s) && !(env.platform === 'win32' && /^[A-Za-z]:\\/.test(s)))
      throw new FieldProblem(`must be an absolute path, not ${shown(s)}`)
    return s
  },
})

const MAX_VM_NAMES = 10_000

/** A list of VM names or uuids, or of tags: texts, none empty, at most MAX_VM_NAMES. */
function names(
  what: 'names' | 'tags',
  doc: Doc & { shownDefault: string; example: string },
): Field<string[]> & { optional: true } {
  const { shownDefault, example, ...rest } = doc
  return {
    ...rest,
    shownDefault,
    optional: true,
    parse(value) {
      if (!Array.isArray(value) || value.some((n) => typeof n !== 'string'))
        throw new FieldProblem(`must be a list of ${what}, like ${example}`)
      if (value.length > MAX_VM_NAMES)
        throw new FieldProblem(`lists ${value.length} ${what}; at most ${MAX_VM_NAMES}`)
      if (value.some((n: string) => n.trim() === ''))
        throw new FieldProblem(`has an empty ${what === 'names' ? 'name' : 'tag'}`)
      return value as string[]
    },
  }
}

export function defaultBackupDir(platform = process.platform): string {
  return platform === 'win32' ? 'C:\\tmp\\backup' : '/tmp/backup'
}

export function normalizeFingerprint(value: string): string | undefined {
  const hex = value
    .replace(/^sha-?256[:=]?/i, '')
    .replace(/[:\s]/g, '')
    .toUpperCase()
  if (!/^[0-9A-F]{64}$/.test(hex)) return undefined
  return hex.match(/../g)!.join(':')
}

/** Every key, in the order problems are reported and the README lists them. */
export const FIELDS = {
  mode: choice(Object.keys(MODES) as Mode[], {
    group: 'connection',
    doc: '`online`, `allOnline`, `offline`, `allOffline` (any case; `Mode` in DPxen_config.py)',
  }),
  url: {
    group: 'connection',
    doc: 'the pool master (or any member: dpxen follows `HOST_IS_SLAVE`), `http://` or `https://`',
    shownDefault: 'required',
    parse(value) {
      const s = asText(value, {})
      let parsed: URL
      try {
        parsed = new URL(s.trim())
      } catch {
        throw new FieldProblem(`${shownUrl(s)} is not a URL (example: https://xenserver.example.com)`)
      }
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
        throw new FieldProblem(`must start with http:// or https://, not ${shownUrl(s)}`)
      if (parsed.username || parsed.password)
        throw new FieldProblem('must not contain credentials (use username and password)')
      return parsed
    },
  } satisfies Field<URL>,
  username: text({
    group: 'connection',
    doc: 'a user allowed to snapshot, export, start and stop VMs',
    nonEmpty: true,
  }),
  password: optionalText(
    {
      group: 'connection',
      doc: 'the password itself; or `passwordFile`, a file holding it (relative to the configuration file); or `passwordEnv`, the name of an environment variable. Exactly one of the three',
      secret: true,
    },
    'one of the three is required',
  ),
  passwordFile: optionalText({ group: 'connection', doc: 'see `password`', secret: true }),
  passwordEnv: optionalText({ group: 'connection', doc: 'see `password`', secret: true }),
  vmName: names('names', {
    group: 'backup',
    doc: 'list of VM names or uuids, for `online` and `offline`',
    shownDefault: 'required there',
    example: '["Debian", "vm2"]',
  }),
  exclude: names('names', {
    group: 'backup',
    doc: '`allOnline`, `allOffline`: VMs (names or uuids) not to back up; each gets a line',
    shownDefault: 'none',
    example: '["test-vm"]',
  }),
  includeTags: names('tags', {
    group: 'backup',
    doc: '`allOnline`, `allOffline`: back up only the VMs carrying at least one of these XenServer tags',
    shownDefault: 'every VM',
    example: '["backup"]',
  }),
  excludeTags: names('tags', {
    group: 'backup',
    doc: '`allOnline`, `allOffline`: leave out the VMs carrying any of these XenServer tags',
    shownDefault: 'none',
    example: '["no-backup"]',
  }),
  backupDir: folder(defaultBackupDir, {
    group: 'backup',
    doc: 'the staging folder Data Protector backs up; absolute',
  }),
  sr: text({
    group: 'restore',
    doc: "SR to restore into, by name or uuid; empty: the pool's default SR",
    fallback: '',
  }),
  debug: bool(false, {
    group: 'connection',
    doc: 'write a debug file: every XenAPI call (secrets redacted), timings, stack traces',
  }),
  debugDir: folder(defaultDebugDir, { group: 'connection', doc: 'where the debug file goes' }),
  caFile: optionalText(
    {
      group: 'connection',
      doc: 'CA certificate (PEM) to verify an `https` host with (relative to the configuration file)',
    },
    'system CAs',
  ),
  fingerprint: {
    group: 'connection',
    doc: "the host certificate's SHA-256 fingerprint (pinning; replaces CA verification); `dpxen check` shows it",
    shownDefault: 'none',
    optional: true as const,
    parse(value) {
      const fingerprint = normalizeFingerprint(asText(value, {}))
      if (!fingerprint)
        throw new FieldProblem('must be a SHA-256 fingerprint, 64 hex digits (colons allowed)')
      return fingerprint
    },
  } satisfies Field<string>,
  compression: choice(COMPRESSIONS, {
    group: 'backup',
    doc: '`none`, `gzip`, `zstd` (asked of the host; files are stored compressed)',
    fallback: 'none',
  }),
  concurrency: number(
    1,
    { min: 1, max: 16, integer: true },
    { group: 'backup', doc: 'VMs exported at once (1–16)' },
  ),
  metadata: bool(false, { group: 'backup', doc: 'also save the pool database' }),
  incremental: bool(false, {
    group: 'backup',
    doc: 'online modes: after a full run, export only the blocks each disk changed since the previous run (VHD deltas against a snapshot kept on the host as the base); see Incremental backups',
  }),
  cbt: bool(false, {
    group: 'backup',
    doc: 'with `incremental`: changed block tracking: the changed blocks of each disk are read over NBD, and between runs the base keeps no data on the SR (its disks hold only the tracking metadata); needs a network with the `nbd` purpose, else the run says so and keeps a base with data; see Incremental backups',
  }),
  nbdConnections: number(
    2,
    { min: 1, max: 8, integer: true },
    { group: 'backup', doc: 'with `cbt`: NBD connections per disk read at once' },
  ),
  followDataProtectorLevel: bool(false, {
    group: 'backup',
    doc: "with `incremental`: Data Protector's backup level decides, where a session gives one (`MODE`): Full starts a new chain, Incremental exports the changes since the previous run whatever `fullEvery` says; Incremental 1–9 the changes since the last run of a lower level (docs/incremental.md). Without `MODE` (run by hand), `fullEvery` decides",
  }),
  fullEvery: number(
    7,
    { min: 1, max: 10_000, integer: true },
    {
      group: 'backup',
      doc: 'with `incremental`: a full run after this many runs of a chain (the full included)',
    },
  ),
  shutdownTimeout: seconds(
    600,
    { min: 1, max: 86_400 },
    { group: 'backup', doc: 'seconds to wait for a clean shutdown (offline backup, restores)' },
  ),
  stallTimeout: seconds(
    600,
    { min: 1, max: 86_400 },
    { group: 'connection', doc: 'seconds without a byte before a transfer fails as stalled' },
  ),
  progressInterval: seconds(
    60,
    { min: 0.05, max: 600 },
    { group: 'connection', doc: 'seconds between progress lines' },
  ),
  verifyExport: bool(true, {
    group: 'backup',
    doc: "also compare every chunk's checksum while the XVA streams. The layout (ova.xml, every entry, each disk reaching its size) and the tar end marker are checked whatever this says, so a cut-off export never passes for a whole one",
  }),
  directIo: bool(true, {
    group: 'backup',
    doc: "Linux: write XVA files around the page cache (`O_DIRECT`): less CPU, and a backup does not push the client's own data out of memory; where the file system refuses it, ordinary writes. On a staging folder over a slow network share, `false` may be faster",
  }),
  lockTimeout: seconds(
    0,
    { min: 0, max: 86_400 },
    {
      group: 'backup',
      doc: 'seconds to wait while another session holds `backupDir` (a line each minute); 0 fails at once',
    },
  ),
  maxAnswerMiB: number(
    256,
    { min: 1, max: 4096, integer: true },
    {
      group: 'connection',
      doc: 'the largest XML-RPC answer taken from the host; a larger one fails naming this key',
    },
  ),
  forceShutdown: bool(false, {
    group: 'backup',
    doc: 'when a clean shutdown does not finish within `shutdownTimeout`, force it off (hard shutdown, said in the session) instead of failing the VM',
  }),
  allowForeignFiles: bool(false, {
    group: 'backup',
    doc: 'let the pre-exec start although `backupDir` holds files it did not write (Data Protector then backs them up with the VMs); by default it refuses and lists them',
  }),
  failSessionOnError: bool(false, {
    group: 'backup',
    doc: 'when some VMs fail, make the pre-exec fail the session instead of going on',
  }),
  originalSr: bool(false, {
    group: 'restore',
    doc: 'put each disk back on the SR it came from when it still exists',
  }),
  restoreMissingVm: bool(false, {
    group: 'restore',
    doc: 'online restore: create a VM that no longer exists from the snapshot',
  }),
  restoreAs: choice(RESTORE_AS, {
    group: 'restore',
    doc: "`original`: the backup's VM is restored (its disks, or the whole VM), found by its uuid; `copy`: a new VM beside it, with a new uuid and new MAC addresses, named by `copyName`, left halted; the original is not touched",
    fallback: 'original',
  }),
  copyName: text({
    group: 'restore',
    doc: "the name of a copy: `{name}` is the VM's name, `{date}` the backup's time (UTC, to the minute), `{uuid}` the first 8 characters of the VM's uuid",
    fallback: '{name} (restored from {date})',
    nonEmpty: true,
  }),
  matchByName: bool(false, {
    group: 'restore',
    doc: "restore over a VM that has the backup's name but not its uuid (another pool; a VM made again by hand). Without it such a VM fails with a line saying so, and is not touched",
  }),
  keepRestoredFiles: bool(false, {
    group: 'restore',
    doc: 'keep the files in `backupDir` after a successful restore (by default they are removed, so the next backup does not store them again)',
  }),
  healthCheck: bool(false, {
    group: 'restore',
    doc: 'in the restore post-exec (usually in the `restore` section): instead of restoring, prove that each backup Data Protector put back boots: restored as a copy into `healthCheckSr`, its network cards removed, started, watched until its guest agent (or its health-check script) answers, then destroyed; see Health checks',
  }),
  healthCheckSr: text({
    group: 'restore',
    doc: "SR for a health check's copy, by name or uuid; empty: the SR the backup's first disk was on (the pool's default SR when that one is gone)",
    fallback: '',
  }),
  healthCheckTimeout: seconds(
    300,
    { min: 10, max: 86_400 },
    {
      group: 'restore',
      doc: "seconds a health check waits, from the copy's start, for its guest to answer; `healthCheckPerGiB` is added for each GiB of its disks",
    },
  ),
  healthCheckPerGiB: seconds(
    2,
    { min: 0, max: 3600 },
    {
      group: 'restore',
      doc: "seconds added to `healthCheckTimeout` for each GiB of the copy's disks (a large VM checks its file systems longer before its agent starts)",
    },
  ),
  startAfterRestore: bool(false, {
    group: 'restore',
    doc: 'offline restore: start the VM if it was running at backup time',
  }),
}

export type Key = keyof typeof FIELDS
export const KEYS = Object.keys(FIELDS) as Key[]

/** The values as the fields parse them; keys that may be absent are optional. */
export type Values = {
  [K in Key as (typeof FIELDS)[K] extends { optional: true } ? never : K]: ReturnType<
    (typeof FIELDS)[K]['parse']
  >
} & {
  [K in Key as (typeof FIELDS)[K] extends { optional: true } ? K : never]?: ReturnType<
    (typeof FIELDS)[K]['parse']
  >
}

/** The README's table of the keys of `groups`, as Markdown. */
export function keyTable(groups: Field<unknown>['group'][]): string {
  const rows = Object.entries(FIELDS as Record<string, Field<unknown>>)
    .filter(([, field]) => groups.includes(field.group))
    .map(([key, field]) => `| \`${key}\` | ${field.doc} | ${field.shownDefault} |`)
  return ['| key | meaning | default |', '| --- | --- | --- |', ...rows].join('\n')
}
