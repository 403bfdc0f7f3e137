// `dpxen health-check [OPTIONS] [CONFIG]`: proves that the newest backup of each VM in a folder
// boots (restore/health-run.ts), without Data Protector: the files already in the folder (a Data
// Protector restore put them there, or a backup left them). The restore post-exec does the same
// with `healthCheck: true`.
import type { HookContext } from '../hook/context.js'
import { EXIT } from '../hook/exit-codes.js'
import { commandLine } from './args.js'
import { startHook } from '../hook/start.js'
import { runHealthChecks } from '../restore/health-run.js'

export const HEALTH_USAGE =
  'usage: dpxen health-check [--vm NAME]... [--dir DIR] [--sr SR] [--keep-files] [--preview] [CONFIG]'

const OPTIONS = {
  vm: { type: 'string', multiple: true },
  dir: { type: 'string' },
  sr: { type: 'string' },
  'keep-files': { type: 'boolean' },
  preview: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const

export async function healthCommand(ctx: HookContext): Promise<number> {
  const { values, positionals } = commandLine(ctx.args, OPTIONS, HEALTH_USAGE)
  if (values.help) {
    ctx.out(
      `${HEALTH_USAGE}\n  restores the newest backup of each VM in the folder as a copy, starts it without network, waits for its guest, then destroys it`,
    )
    return EXIT.OK
  }
  const overrides: Record<string, unknown> = {
    ...(values.dir !== undefined ? { backupDir: values.dir } : {}),
    ...(values.sr !== undefined ? { healthCheckSr: values.sr } : {}),
    ...(values['keep-files'] ? { keepRestoredFiles: true } : {}),
  }
  const run = await startHook({ ...ctx, args: positionals }, 'health-check', {
    forRestore: true,
    overrides,
    ...(values.preview ? { preview: true } : {}),
  })
  return runHealthChecks(run, 'health-check', { vms: values.vm ?? [] })
}
