// How every executable starts: the configuration read, the logger opened, --help answered,
// Data Protector's preview recognised.
import { loadConfig } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { DpxenError } from '../core/errors.js'
import { createLogger, type Logger } from '../core/log.js'
import { VERSION } from '../core/version.js'
import type { HookContext } from './context.js'

/** Reads the configuration and opens the logger every hook starts with. */
export async function startHook(
  ctx: HookContext,
  name: string,
  options: { forRestore?: boolean; overrides?: Record<string, unknown> } = {},
): Promise<{ config: Config; log: Logger }> {
  const { config, warnings } = await loadConfig({
    ...(ctx.args[0] ? { path: ctx.args[0] } : {}),
    env: ctx.env,
    cwd: ctx.cwd,
    ...options,
  })
  const log = createLogger({ out: ctx.out, name, ...(config.debug ? { debugDir: config.debugDir } : {}) })
  ctx.useLogger(log)
  log.debug(`dpxen ${VERSION} ${name}, node ${process.version}, config ${config.source}, mode ${config.mode}`)
  for (const warning of warnings) log.info(`dpxen: warning: ${warning}`)
  return { config, log }
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

export function isPreview(env: NodeJS.ProcessEnv): boolean {
  return env.PREVIEW === '1'
}
