// The one logger. Lines for Data Protector go to standard output (they become session
// messages); the debug file (when enabled) gets everything, with timings and stacks.
//
// Secrets are kept out where they travel (the login's password and the session ref in call
// records, session ids in URLs: xapi/session.ts, errors.ts), not by replacing substrings of
// free text afterwards: a short password would turn every line into asterisks and show what it
// is. A line is always one line: control characters in a name or path (a VM called
// "x\ndpxen: all 2 VM(s) backed up") are written as escapes, so nobody can forge a line.
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'

export interface Logger {
  /** A session message: one line on standard output. */
  info(line: string): void
  /** Only in the debug file. */
  debug(line: string): void
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

/** Control characters (C0, DEL, C1) and the Unicode line separators, which could start a new line. */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' }

/** The text as one line: every control character written as an escape (\n, \r, \t, \xHH, \uHHHH). */
export function oneLine(text: string): string {
  return text.replace(CONTROL, (c) => {
    const code = c.charCodeAt(0)
    return NAMED[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16)}`)
  })
}

export function createLogger(options: LoggerOptions): Logger {
  let file: WriteStream | undefined
  let debugFile: string | undefined
  if (options.debugDir) {
    mkdirSync(options.debugDir, { recursive: true })
    const stamp = new Date().toISOString().replace(/[:.]/g, '-')
    debugFile = join(options.debugDir, `dpxen-${options.name}-${stamp}-${process.pid}.log`)
    file = createWriteStream(debugFile, { flags: 'a', mode: 0o600 })
  }
  const start = performance.now()
  const toFile = (kind: string, line: string): void => {
    if (!file) return
    const elapsed = ((performance.now() - start) / 1000).toFixed(3).padStart(9)
    // A debug record may span lines (a stack); each of its lines stays one line.
    const text = line.split('\n').map(oneLine).join('\n    ')
    file.write(`${new Date().toISOString()} +${elapsed}s ${kind} ${text}\n`)
  }
  return {
    info(line) {
      const clean = oneLine(line)
      options.out(clean)
      toFile('INFO ', clean)
    },
    debug(line) {
      toFile('DEBUG', line)
    },
    close: () => new Promise<void>((resolve) => (file ? file.end(resolve) : resolve())),
    ...(debugFile ? { debugFile } : {}),
  }
}
