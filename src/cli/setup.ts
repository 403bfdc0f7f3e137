// `dpxen setup`: writes what Data Protector needs on a client, and nothing else: the three
// wrappers into the folder Data Protector runs scripts from (/opt/omni/lbin, or
// <Data_Protector_home>\bin as .cmd files) and a configuration skeleton (never over an existing
// one), plus a record of what it wrote, so that `dpxen setup --remove` removes exactly that.
import { createHash } from 'node:crypto'
import { existsSync, promises as fsp, realpathSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { clientConfigDir } from '../config/load.js'
import { defaultBackupDir } from '../config/fields.js'
import { DpxenError, messageOf } from '../core/errors.js'
import { VERSION } from '../core/version.js'
import type { HookContext } from '../hook/context.js'
import { EXIT } from '../hook/exit-codes.js'
import { HOOKS, MARK, batchWrapper, configSkeleton, shellWrapper } from './wrappers.js'

export const SETUP_USAGE =
  'usage: dpxen setup [--config FILE] [--suffix NAME] [--node PATH] [--bin-dir DIR] [--dp-home DIR] [--platform linux|windows] [--prefix DIR] [--dry-run] [--remove]'

const OPTIONS = {
  config: { type: 'string' },
  suffix: { type: 'string' },
  node: { type: 'string' },
  'bin-dir': { type: 'string' },
  'dp-home': { type: 'string' },
  platform: { type: 'string' },
  prefix: { type: 'string' },
  'dry-run': { type: 'boolean' },
  remove: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const

interface Planned {
  /** Where the file belongs on the client (what the other files name). */
  path: string
  content: string
  mode: number
  kind: 'wrapper' | 'configuration'
}

interface SetupRecord {
  format: 'dpxen-setup/1'
  version: string
  files: { path: string; sha256: string; kind: Planned['kind'] }[]
}

interface Layout {
  windows: boolean
  paths: path.PlatformPath
  binDir: string
  config: string
  configDir: string
  record: string
  /** '-NAME' for --suffix NAME, else empty. */
  tail: string
  /** Where a client path is written: under --prefix if given (as DESTDIR does). */
  where(file: string): string
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')

function usage(problem: string): DpxenError {
  return new DpxenError('USAGE', `${problem} (${SETUP_USAGE})`)
}

function parse(
  args: string[],
): ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: false }>> {
  try {
    return parseArgs({ args, options: OPTIONS, allowPositionals: false, strict: true })
  } catch (error) {
    throw usage((error as Error).message.split('\n')[0]!)
  }
}

function layoutOf(values: ReturnType<typeof parse>['values'], env: NodeJS.ProcessEnv): Layout {
  const platform = values.platform ?? (process.platform === 'win32' ? 'windows' : 'linux')
  if (platform !== 'linux' && platform !== 'windows') throw usage(`--platform ${platform}: linux or windows`)
  const windows = platform === 'windows'
  const paths = windows ? path.win32 : path.posix
  const suffix = values.suffix
  if (suffix !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/.test(suffix))
    throw usage(`--suffix ${JSON.stringify(suffix)}: letters, digits, - and _ only`)
  const tail = suffix ? `-${suffix}` : ''
  const dpHome = values['dp-home'] ?? paths.join(env.ProgramFiles ?? 'C:\\Program Files', 'OmniBack')
  const configDir = clientConfigDir(windows ? 'win32' : 'linux', env)
  const config = values.config ?? paths.join(configDir, `dpxen${tail}.yaml`)
  const binDir = values['bin-dir'] ?? (windows ? paths.join(dpHome, 'bin') : '/opt/omni/lbin')
  for (const [what, value] of [
    ['--config', config],
    ['--bin-dir', binDir],
  ] as const) {
    if (!paths.isAbsolute(value)) throw usage(`${what} ${value}: give an absolute path`)
  }
  const prefix = values.prefix === undefined ? undefined : path.resolve(values.prefix)
  return {
    windows,
    paths,
    binDir,
    config,
    configDir,
    record: paths.join(configDir, `dpxen-setup${tail}.json`),
    tail,
    where: (file) =>
      prefix ? path.join(prefix, ...file.replace(/^[A-Za-z]:/, (d) => d[0]!).split(/[\\/]+/)) : file,
  }
}

/** The folder of the installed hooks: beside this executable (dist/hooks). */
function installedHooks(paths: path.PlatformPath): string {
  const self = process.argv[1]
  if (!self) throw new DpxenError('USAGE', 'dpxen setup must run as the dpxen executable')
  return paths.dirname(realpathSync(self))
}

function plan(layout: Layout, node: string): Planned[] {
  const hooks = installedHooks(layout.paths)
  const files: Planned[] = HOOKS.map((h) => {
    const target = { name: h.name, node, hook: layout.paths.join(hooks, h.file), config: layout.config }
    const name = `${h.name}${layout.tail}${layout.windows ? '.cmd' : ''}`
    return {
      path: layout.paths.join(layout.binDir, name),
      content: (layout.windows ? batchWrapper : shellWrapper)({ ...target, name: `${h.name}${layout.tail}` }),
      mode: 0o755,
      kind: 'wrapper',
    }
  })
  files.push({
    path: layout.config,
    content: configSkeleton({
      windows: layout.windows,
      configDir: layout.configDir,
      backupDir: defaultBackupDir(layout.windows ? 'win32' : 'linux'),
    }),
    mode: 0o600,
    kind: 'configuration',
  })
  return files
}

export async function setupCommand(ctx: HookContext): Promise<number> {
  const { values } = parse(ctx.args)
  if (values.help) {
    ctx.out(SETUP_USAGE)
    return EXIT.OK
  }
  const layout = layoutOf(values, ctx.env)
  if (values.remove) return remove(ctx, layout, values['dry-run'] === true)
  const node = values.node ?? process.execPath
  const files = plan(layout, node)
  if (values['dry-run']) {
    for (const file of files) {
      const kept = file.kind === 'configuration' && existsSync(layout.where(file.path))
      ctx.out(
        `--- ${layout.where(file.path)} (mode ${file.mode.toString(8)})${kept ? ': exists, kept as it is' : ''}`,
      )
      if (!kept) for (const line of file.content.split(/\r?\n/).slice(0, -1)) ctx.out(line)
    }
    ctx.out(`--- ${layout.where(layout.record)}: the record of these files, for dpxen setup --remove`)
    ctx.out('dry run: nothing was written')
    return EXIT.OK
  }
  // A file an earlier setup wrote and this one keeps (the configuration) stays on the record.
  const earlier = (await readRecord(layout.where(layout.record)).catch(() => undefined))?.files ?? []
  const written: SetupRecord['files'] = []
  for (const file of files) {
    if (await write(ctx, layout.where(file.path), file))
      written.push({ path: file.path, sha256: sha256(file.content), kind: file.kind })
    else written.push(...earlier.filter((e) => e.path === file.path))
  }
  const record: SetupRecord = { format: 'dpxen-setup/1', version: VERSION, files: written }
  await put(layout.where(layout.record), `${JSON.stringify(record, null, 2)}\n`, 0o600)
  const names = files.filter((f) => f.kind === 'wrapper').map((f) => layout.paths.basename(f.path))
  ctx.out(
    `in Data Protector: backup specification Pre-exec ${names[0]}, Post-exec ${names[1]}; restore Post-exec ${names[2]} (the file name only: they are in ${layout.binDir})`,
  )
  ctx.out(
    `next: edit ${layout.config}, then run dpxen check ${layout.config} as the user Data Protector runs the scripts as`,
  )
  return EXIT.OK
}

/** Writes one file; a configuration that exists is kept. Returns whether it wrote. */
async function write(ctx: HookContext, where: string, file: Planned): Promise<boolean> {
  const existing = await fsp.readFile(where, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    throw localError(where, error)
  })
  if (existing !== undefined && file.kind === 'configuration') {
    ctx.out(`kept    ${where}: a configuration exists there; it was not changed`)
    return false
  }
  if (existing !== undefined && !existing.includes(MARK))
    throw new DpxenError(
      'USAGE',
      `${where} exists and was not written by dpxen setup: it was left as it is; remove it, or give other names with --suffix`,
    )
  await put(where, file.content, file.mode)
  ctx.out(`wrote   ${where} (${file.kind})`)
  return true
}

/** Writes a file whole or not at all: a temporary name, then a rename; the folders made as needed. */
async function put(where: string, content: string, mode: number): Promise<void> {
  const temporary = `${where}.dpxen-setup-${process.pid}`
  try {
    await fsp.mkdir(path.dirname(where), { recursive: true, mode: 0o755 })
    await fsp.writeFile(temporary, content, { mode, flag: 'wx' })
    await fsp.chmod(temporary, mode)
    await fsp.rename(temporary, where)
  } catch (error) {
    await fsp.rm(temporary, { force: true })
    throw localError(where, error as NodeJS.ErrnoException)
  }
}

function localError(where: string, error: NodeJS.ErrnoException, verb = 'write'): DpxenError {
  const hint =
    error.code === 'EACCES' || error.code === 'EPERM'
      ? ': run dpxen setup as root (Administrator on Windows), or write elsewhere with --prefix'
      : ''
  return new DpxenError('LOCAL_IO', `cannot ${verb} ${where}: ${messageOf(error)}${hint}`)
}

async function readRecord(where: string): Promise<SetupRecord> {
  const record = JSON.parse(await fsp.readFile(where, 'utf8')) as SetupRecord
  if (record.format !== 'dpxen-setup/1' || !Array.isArray(record.files)) throw new Error('not a setup record')
  return record
}

async function remove(ctx: HookContext, layout: Layout, dryRun: boolean): Promise<number> {
  const recordPath = layout.where(layout.record)
  let record: SetupRecord
  try {
    record = await readRecord(recordPath)
  } catch (error) {
    throw new DpxenError(
      'USAGE',
      `no setup record at ${recordPath} (${messageOf(error)}): nothing removed; give the --suffix, --prefix and --platform setup was run with`,
    )
  }
  const verb = dryRun ? 'would remove' : 'removed'
  for (const file of record.files) {
    const where = layout.where(file.path)
    const content = await fsp.readFile(where, 'utf8').catch(() => undefined)
    if (content === undefined) ctx.out(`gone    ${where}: already removed`)
    else if (sha256(content) !== file.sha256) ctx.out(`kept    ${where}: changed since dpxen setup wrote it`)
    else {
      if (!dryRun)
        await fsp
          .rm(where)
          .catch((error: NodeJS.ErrnoException) => Promise.reject(localError(where, error, 'remove')))
      ctx.out(`${verb} ${where}`)
    }
  }
  if (!dryRun) await fsp.rm(recordPath, { force: true })
  ctx.out(`${verb} ${recordPath}`)
  return EXIT.OK
}
