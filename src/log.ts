// The one logger. Lines for Data Protector go to standard output (they become session
// messages); the debug file (when enabled) gets everything, with timings and stacks. Secrets
// (passwords, session refs) are replaced before anything is written anywhere.
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'

export interface Logger {
  /** A session message: one line on standard output. */
  info(line: string): void
  /** Only in the debug file. */
  debug(line: string): void
  /** Registers a value that must never be written. */
  secret(value: string): void
  /** Applies the redaction to a text (for error lines built elsewhere). */
  redact(text: string): string
  close(): Promise<void>
  readonly debugFile?: string
}

export interface LoggerOptions {
  out: (line: string) => void
  debugDir?: string
  /** Name part of the debug file, e.g. the hook name. */
  name: string
}

/** Default debug folder: /tmp on Linux, C:\tmp on Windows, as the original integration. */
export function defaultDebugDir(platform = process.platform): string {
  return platform === 'win32' ? 'C:\\tmp' : '/tmp'
}

export function createLogger(options: LoggerOptions): Logger {
  const secrets = new Set<string>()
  let file: WriteStream | undefined
  let debugFile: string | undefined
  if (options.debugDir) {
    mkdirSync(options.debugDir, { recursive: true })
    const stamp = new Date().toISOString().replace(/[:.]/g, '-')
    debugFile = join(options.debugDir, `dpxen-${options.name}-${stamp}-${process.pid}.log`)
    file = createWriteStream(debugFile, { flags: 'a', mode: 0o600 })
  }
  const start = performance.now()
  const redact = (text: string): string => {
    let out = text
    for (const s of secrets) if (s) out = out.split(s).join('***')
    return out
  }
  const toFile = (kind: string, line: string): void => {
    if (!file) return
    const elapsed = ((performance.now() - start) / 1000).toFixed(3).padStart(9)
    file.write(`${new Date().toISOString()} +${elapsed}s ${kind} ${redact(line)}\n`)
  }
  return {
    info(line) {
      const clean = redact(line)
      options.out(clean)
      toFile('INFO ', clean)
    },
    debug(line) {
      toFile('DEBUG', line)
    },
    secret(value) {
      if (value) secrets.add(value)
    },
    redact,
    close: () => new Promise<void>((resolve) => (file ? file.end(resolve) : resolve())),
    ...(debugFile ? { debugFile } : {}),
  }
}
