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

/**
 * A backup hook's arguments: `[--vm NAME] [CONFIG]`. With --vm the hook works on that one VM
 * (a Data Protector object of its own); the rest of the context is unchanged.
 */
export function vmArgument(ctx: HookContext): { ctx: HookContext; vm?: string } {
  const [first, second, ...rest] = ctx.args
  if (first !== '--vm') return { ctx }
  if (second === undefined || second === '')
    throw new DpxenError('USAGE', '--vm needs the name or uuid of a VM (usage: --vm NAME [CONFIG])')
  return { ctx: { ...ctx, args: rest }, vm: second }
}

/** Answers --help / -h with the hook's usage line; returns whether it did. */
export function askedForHelp(ctx: HookContext, hook: string): boolean {
  if (ctx.args[0] !== '--help' && ctx.args[0] !== '-h') return false
  ctx.out(
    `usage: ${hook}${hook === 'dpxen-restore-post-exec' ? '' : ' [--vm NAME]'} [CONFIG]   (without CONFIG: DPXEN_CONFIG, a search from the working directory, then the Data Protector client folder)`,
  )
  return true
}
