// The command line of a command that takes options and one configuration at most (`dpxen
// restore`, `dpxen health-check`): a mistake is one line with the usage, exit 2.
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { DpxenError } from '../core/errors.js'

type Options = NonNullable<ParseArgsConfig['options']>

export function commandLine<O extends Options>(args: string[], options: O, usage: string) {
  let parsed
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true })
  } catch (error) {
    throw new DpxenError('USAGE', `${(error as Error).message.split('\n')[0]} (${usage})`)
  }
  if (parsed.positionals.length > 1)
    throw new DpxenError('USAGE', `one configuration at most, not ${parsed.positionals.join(' ')} (${usage})`)
  return { values: parsed.values, positionals: parsed.positionals }
}
