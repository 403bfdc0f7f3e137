// How every executable starts: the configuration read, the logger opened, --help answered,
// Data Protector's preview recognised.
import { loadConfig } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { DpxenError } from '../core/errors.js'
import type { Ms } from '../core/format.js'
import { createLogger, type Logger } from '../core/log.js'
import { VERSION } from '../core/version.js'
import type { HookContext } from './context.js'

/**
 * Data Protector's session as its environment tells a hook: SESSIONID, the backup level (MODE),
 * a preview (PREVIEW=1), and whether Data Protector backed up every file (SMEXIT 0 for a session
 * post-exec, BDACC 0 for an object's; without either, run by hand, yes). Read here only.
 */
export interface DataProtectorSession {
  id?: string
  level?: string
  preview: boolean
  backedUp: boolean
  /** SMEXIT as given, for the debug file. */
  exit?: string
}

export function dataProtectorSession(env: NodeJS.ProcessEnv): DataProtectorSession {
  const backedUp =
    env.SMEXIT !== undefined ? env.SMEXIT === '0' : env.BDACC !== undefined ? env.BDACC === '0' : true
  return {
    ...(env.SESSIONID ? { id: env.SESSIONID } : {}),
    ...(env.MODE ? { level: env.MODE } : {}),
    preview: env.PREVIEW === '1',
    backedUp,
    ...(env.SMEXIT !== undefined ? { exit: env.SMEXIT } : {}),
  }
}

/**
 * What a hook or command runs with, built once from its arguments, its environment and the
 * configuration: the engines take it and never read argv or the environment.
 */
export interface Run {
  config: Config
  log: Logger
  signal: AbortSignal
  session: DataProtectorSession
  /** The waits before each retry of a busy destroy (VDI_IN_USE): connect() gives them to the Host. */
  retryDelays?: readonly Ms[]
}

/** Reads the configuration and opens the logger every hook starts with. */
export async function startHook(
  ctx: HookContext,
  name: string,
  options: { forRestore?: boolean; overrides?: Record<string, unknown>; preview?: boolean } = {},
): Promise<Run> {
  const { preview, ...load } = options
  const { config, warnings } = await loadConfig({
    ...(ctx.args[0] ? { path: ctx.args[0] } : {}),
    env: ctx.env,
    cwd: ctx.cwd,
    ...load,
  })
  const log = createLogger({ out: ctx.out, name, ...(config.debug ? { debugDir: config.debugDir } : {}) })
  ctx.useLogger(log)
  log.debug(`dpxen ${VERSION} ${name}, node ${process.version}, config ${config.source}, mode ${config.mode}`)
  for (const warning of warnings) log.info(`dpxen: warning: ${warning}`)
  const session = dataProtectorSession(ctx.env)
  if (preview) session.preview = true
  if (session.exit !== undefined) log.debug(`Data Protector session exit code SMEXIT=${session.exit}`)
  return {
    config,
    log,
    signal: ctx.signal,
    session,
    ...(ctx.retryDelays ? { retryDelays: ctx.retryDelays } : {}),
  }
}

/** The hooks Data Protector runs: their executables, and whether they take `--vm NAME`. */
const HOOKS = {
  'pre-exec': { executable: 'dpxen-pre-exec', vm: true },
  'post-exec': { executable: 'dpxen-post-exec', vm: true },
  'restore-post-exec': { executable: 'dpxen-restore-post-exec', vm: false },
} as const
export type HookName = keyof typeof HOOKS

/**
 * How a hook starts, the one place its command line is read: `--help` answered (then
 * undefined: nothing else to do), `[--vm NAME] [CONFIG]`, then startHook. The engines take the
 * Run, with the VM --vm named, and never see argv or the environment.
 */
export async function beginHook(
  ctx: HookContext,
  name: HookName,
  options: { forRestore?: boolean } = {},
): Promise<(Run & { vm?: string }) | undefined> {
  const { executable, vm: takesVm } = HOOKS[name]
  if (ctx.args[0] === '--help' || ctx.args[0] === '-h') {
    ctx.out(
      `usage: ${executable}${takesVm ? ' [--vm NAME]' : ''} [CONFIG]   (without CONFIG: DPXEN_CONFIG, a search from the working directory, then the Data Protector client folder)`,
    )
    return undefined
  }
  const { rest, vm } = takesVm ? vmArgument(ctx.args) : { rest: ctx.args }
  const run = await startHook({ ...ctx, args: rest }, name, options)
  return vm !== undefined ? { ...run, vm } : run
}

/** A backup hook's arguments: `[--vm NAME] [CONFIG]`; with --vm the hook works on that one VM. */
function vmArgument(args: string[]): { rest: string[]; vm?: string } {
  const [first, second, ...rest] = args
  if (first !== '--vm') return { rest: args }
  if (second === undefined || second === '')
    throw new DpxenError('USAGE', '--vm needs the name or uuid of a VM (usage: --vm NAME [CONFIG])')
  return { rest, vm: second }
}
