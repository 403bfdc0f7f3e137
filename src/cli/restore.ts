// `dpxen restore [OPTIONS] [CONFIG]`: the restore post-exec's work run by hand, without Data
// Protector (the files already in backupDir), its settings given on the command line over the
// configuration's (and its `restore` section's). The white paper allows running the script
// independently; this makes it a command.
import type { HookContext } from '../hook/context.js'
import { EXIT } from '../hook/exit-codes.js'
import { commandLine } from './args.js'
import { runRestore } from '../restore/run.js'

export const RESTORE_USAGE =
  'usage: dpxen restore [--mode MODE] [--vm NAME]... [--as original|copy] [--name TEMPLATE] [--sr SR] [--dir DIR] [--match-by-name] [--keep-files] [--preview] [CONFIG]'

/** Command-line options and the configuration key each one sets. */
const OPTIONS = {
  mode: { type: 'string', key: 'mode' },
  vm: { type: 'string', multiple: true, key: 'vmName' },
  as: { type: 'string', key: 'restoreAs' },
  name: { type: 'string', key: 'copyName' },
  sr: { type: 'string', key: 'sr' },
  dir: { type: 'string', key: 'backupDir' },
  'match-by-name': { type: 'boolean', key: 'matchByName' },
  'keep-files': { type: 'boolean', key: 'keepRestoredFiles' },
  preview: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const

export async function restoreCommand(ctx: HookContext): Promise<number> {
  const { values, positionals } = commandLine(ctx.args, OPTIONS, RESTORE_USAGE)
  if (values.help) {
    ctx.out(RESTORE_USAGE)
    return EXIT.OK
  }
  const overrides: Record<string, unknown> = {}
  for (const [option, spec] of Object.entries(OPTIONS)) {
    const value = values[option as keyof typeof values]
    if (value !== undefined && 'key' in spec) overrides[spec.key] = value
  }
  return runRestore({ ...ctx, args: positionals }, 'restore', {
    overrides,
    ...(values.preview ? { preview: true } : {}),
  })
}
