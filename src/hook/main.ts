// The one place where errors become exit codes and lines. Expected failures print one line an
// operator can act on; unexpected ones print one line too, and their stack goes to the debug
// file only. Output goes to standard output: Data Protector drops a UNIX script's stderr.
import { DpxenError, messageOf } from '../core/errors.js'
import { oneLine, type Logger } from '../core/log.js'
import { ConfigError } from '../config/load.js'
import type { Hook, HookContext } from './context.js'
import { CRITICAL_WAIT_MS, criticalDone, inCritical } from '../core/critical.js'
import { EXIT, exitCodeFor } from './exit-codes.js'

export interface RunResult {
  code: number
}

/** Runs a hook with the given context pieces; never throws. */
export async function runHook(hook: Hook, base: Omit<HookContext, 'useLogger'>): Promise<number> {
  let log: Logger | undefined
  const ctx: HookContext = { ...base, useLogger: (l) => (log = l) }
  const say = (line: string): void => base.out(oneLine(line))
  try {
    return await hook(ctx)
  } catch (error) {
    if (error instanceof ConfigError) {
      for (const problem of error.problems) say(`dpxen: ${problem}`)
      return EXIT.CONFIG
    }
    if (error instanceof DpxenError) {
      say(`dpxen: ${error.code === 'ABORTED' ? 'interrupted: stopped and cleaned up' : messageOf(error)}`)
      log?.debug(error.stack ?? String(error))
      return exitCodeFor(error.code)
    }
    say(
      `dpxen: internal error: ${messageOf(error)}${log?.debugFile ? ` (details in ${log.debugFile})` : ' (set debug: true for details)'}`,
    )
    log?.debug(error instanceof Error ? (error.stack ?? error.message) : String(error))
    return EXIT.INTERNAL
  } finally {
    await log?.close()
  }
}

/**
 * Writes to standard output until whoever reads it goes away (`dpxen list | head`, a Disk Agent
 * gone): then nothing can be said any more, but what was started is still put right, as after
 * a SIGTERM.
 */
function outputUntilClosed(controller: AbortController): (text: string, then?: () => void) => void {
  let readerGone = false
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error
    readerGone = true
    controller.abort(new DpxenError('ABORTED', 'standard output was closed'))
  })
  return (text, then) => {
    if (readerGone) then?.()
    else process.stdout.write(text, then)
  }
}

/** Entry point of an executable: signals abort the run; the exit code is set once output is flushed. */
export function main(hook: Hook): void {
  const controller = new AbortController()
  let signals = 0
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++
    if (signals === 1) return controller.abort(new DpxenError('ABORTED', `received ${signal}`))
    // A second signal: stop now, but not in the middle of a critical section (bounded).
    const section = inCritical()
    if (!section) {
      process.stdout.write(
        `dpxen: ${signal} again: stopped at once; the next run (or dpxen recover) settles what was left\n`,
        () => process.exit(EXIT.ABORTED),
      )
      return
    }
    if (signals > 2) return
    process.stdout.write(
      `dpxen: ${signal} again: finishing ${section} first (at most ${CRITICAL_WAIT_MS / 1000} s), then stopping\n`,
    )
    const timer = setTimeout(() => process.exit(EXIT.ABORTED), CRITICAL_WAIT_MS)
    void criticalDone().then(() => {
      clearTimeout(timer)
      process.stdout.write('dpxen: stopped; the next run (or dpxen recover) settles what was left\n', () =>
        process.exit(EXIT.ABORTED),
      )
    })
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  const write = outputUntilClosed(controller)
  // Node ends a process whose event loop is empty even if a promise never settled; that would
  // report success for a run that did not finish.
  process.once('beforeExit', () => {
    process.stdout.write('dpxen: internal error: the run stopped before it finished\n', () =>
      process.exit(EXIT.INTERNAL),
    )
  })
  runHook(hook, {
    args: process.argv.slice(2),
    env: process.env,
    cwd: process.cwd(),
    out: (line) => write(`${line}\n`),
    signal: controller.signal,
  }).then(
    (code) => {
      // Exit explicitly once stdout is flushed: idle keep-alive sockets must not hold the process.
      write('', () => process.exit(code))
    },
    () => process.exit(EXIT.INTERNAL),
  )
}
