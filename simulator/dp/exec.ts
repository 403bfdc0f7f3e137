// Running a pre- or post-exec as Data Protector does: the command line split without a shell
// (no pipes or redirections), non-interactive, each line of standard output a session message
// (standard error dropped, as on UNIX), and aborted when silent longer than the inactivity
// timeout. An exit code other than 0 is a failure (the UNIX rule; the Windows docs contradict
// themselves).
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'

/** Splits a command line like a shell without expansions; refuses | < > & ; outside quotes. */
export function splitCommand(line: string): string[] {
  const words: string[] = []
  let current = ''
  let quote: string | undefined
  let started = false
  for (const c of line.trim()) {
    if (quote) {
      if (c === quote) quote = undefined
      else current += c
    } else if (c === '"' || c === "'") {
      quote = c
      started = true
    } else if (/\s/.test(c)) {
      if (started) words.push(current)
      current = ''
      started = false
    } else if ('|<>&;'.includes(c)) {
      throw new Error(`special character "${c}" is not allowed in a pre- or post-exec command`)
    } else {
      current += c
      started = true
    }
  }
  if (quote) throw new Error('unbalanced quote in the command')
  if (started) words.push(current)
  if (words.length === 0) throw new Error('empty command')
  return words
}

export interface ScriptResult {
  code: number
  /** Why it did not complete normally, if it did not. */
  problem?: 'timeout' | 'not-found' | 'aborted'
}

export interface ScriptOptions {
  env: NodeJS.ProcessEnv
  /** Seconds of silence before the script is killed. */
  inactivityTimeout: number
  onLine: (line: string) => void
  signal?: AbortSignal
}

/** Runs the command; resolves with its exit code (never rejects). */
export function runScript(command: string, options: ScriptOptions): Promise<ScriptResult> {
  let argv: string[]
  try {
    argv = splitCommand(command)
  } catch (error) {
    options.onLine(`[Critical] ${error instanceof Error ? error.message : String(error)}`)
    return Promise.resolve({ code: 1, problem: 'not-found' })
  }
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { env: options.env, stdio: ['ignore', 'pipe', 'pipe'] })
    let problem: ScriptResult['problem']
    let timer: NodeJS.Timeout | undefined
    const kill = (why: 'timeout' | 'aborted'): void => {
      problem = why
      child.kill('SIGTERM')
      setTimeout(() => child.kill('SIGKILL'), 10_000).unref()
    }
    const arm = (): void => {
      clearTimeout(timer)
      timer = setTimeout(() => kill('timeout'), options.inactivityTimeout * 1000)
    }
    arm()
    const onAbort = (): void => kill('aborted')
    options.signal?.addEventListener('abort', onAbort, { once: true })
    createInterface({ input: child.stdout }).on('line', (line) => {
      arm()
      options.onLine(line)
    })
    child.stderr.resume()
    child.once('error', (error) => {
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      options.onLine(
        `[Critical] cannot run ${argv[0]}: ${(error as NodeJS.ErrnoException).code ?? error.message}`,
      )
      resolve({ code: 1, problem: 'not-found' })
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      resolve({ code: code ?? (signal ? 128 + 15 : 1), ...(problem ? { problem } : {}) })
    })
  })
}
