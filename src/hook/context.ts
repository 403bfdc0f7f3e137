// What a hook is given, so tests can run it in-process and the executables stay thin.
import type { Ms } from '../core/format.js'
import type { Logger } from '../core/log.js'

export interface HookContext {
  args: string[]
  env: NodeJS.ProcessEnv
  cwd: string
  /** One line to standard output (a Data Protector session message). */
  out(line: string): void
  /** Aborted on SIGTERM / SIGINT. */
  signal: AbortSignal
  /** Hands the run's logger to the caller, for the debug file. */
  useLogger(log: Logger): void
  /** The waits before each retry of a busy destroy (VDI_IN_USE), given to the Host; tests shorten them. */
  retryDelays?: readonly Ms[]
}

export type Hook = (ctx: HookContext) => Promise<number>
