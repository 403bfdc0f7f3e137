// `dpxen restore [OPTIONS] [CONFIG]`: the restore post-exec's work run by hand, without Data
// Protector (the files already in backupDir), its settings given on the command line over the
// configuration's (and its `restore` section's). The white paper allows running the script
// independently; this makes it a command.
import { parseArgs } from 'node:util'
import { DpxenError } from '../core/errors.js'
import type { HookContext } from '../hook/context.js'
import { EXIT } from '../hook/exit-codes.js'
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
  let parsed
  try {
    parsed = parseArgs({ args: ctx.args, options: OPTIONS, allowPositionals: true, strict: true })
  } catch (error) {
    throw new DpxenError('USAGE', `${(error as Error).message.split('\n')[0]} (${RESTORE_USAGE})`)
  }
  const { values, positionals } = parsed
  if (values.help) {
    ctx.out(RESTORE_USAGE)
    return EXIT.OK
  }
  if (positionals.length > 1)
    throw new DpxenError(
      'USAGE',
      `one configuration at most, not ${positionals.join(' ')} (${RESTORE_USAGE})`,
    )
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
