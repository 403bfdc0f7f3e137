// What a hook is given, so tests can run it in-process and the executables stay thin.
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
  /** Delays between VDI_IN_USE retries (tests shorten them). */
  retryDelaysMs?: number[]
}

export type Hook = (ctx: HookContext) => Promise<number>
