// Runs dpxen hooks in-process (as the executables do, minus the process) and writes configs.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach } from 'vitest'
import { ms } from '../../src/core/format.js'
import type { Hook } from '../../src/hook/context.js'
import { runHook } from '../../src/hook/main.js'
import { trustFor } from './tls.js'

const dirs: string[] = []

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

/** A temporary folder removed after the test. */
export function tempDir(prefix = 'dpxen-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  dirs.push(dir)
  return dir
}

/**
 * Writes a JSON configuration (mode 600) and returns its path. A url of an https simulator
 * started by these helpers gets the run's trust setting (fingerprint or caFile), unless given.
 */
export function writeConfig(dir: string, values: Record<string, unknown>, name = 'dpxen.json'): string {
  const path = join(dir, name)
  if (name.endsWith('.py')) {
    const text = String(values.text)
    const url = /^url\s*=\s*"?([^"\s]+)/m.exec(text)?.[1]
    const extra = /^(caFile|fingerprint)\s*=/m.test(text) ? {} : trustFor(url)
    writeFileSync(
      path,
      text +
        Object.entries(extra)
          .map(([k, v]) => `${k} = "${v}"\n`)
          .join(''),
    )
  } else {
    const trusted =
      'caFile' in values || 'fingerprint' in values ? values : { ...values, ...trustFor(values.url) }
    writeFileSync(path, JSON.stringify(trusted, null, 2))
  }
  chmodSync(path, 0o600)
  return path
}

export interface HookRun {
  code: number
  lines: string[]
  text: string
}

/** Runs a hook with a fresh signal; `abortAfter` aborts when a line matching it appears. */
export async function run(
  hook: Hook,
  args: string[],
  options: {
    env?: NodeJS.ProcessEnv
    cwd?: string
    abortWhen?: RegExp
    onLine?: (line: string) => void
  } = {},
): Promise<HookRun> {
  const lines: string[] = []
  const controller = new AbortController()
  const code = await runHook(hook, {
    args,
    env: options.env ?? {},
    cwd: options.cwd ?? tmpdir(),
    out: (line) => {
      lines.push(line)
      options.onLine?.(line)
      if (options.abortWhen?.test(line)) controller.abort()
    },
    signal: controller.signal,
    retryDelays: [10, 20, 40].map(ms),
  })
  return { code, lines, text: lines.join('\n') }
}

/**
 * Runs an executable as Data Protector would, sends SIGTERM `delayMs` after a line matching
 * `when` appears, and returns its result and how long it took to stop.
 */
export async function terminateWhen(bin: string, args: string[], when: RegExp, delayMs: number) {
  const { execa } = await import('execa')
  const child = execa(bin, args, { reject: false })
  await new Promise<void>((resolve) => {
    child.stdout!.on('data', (data: Buffer) => {
      if (when.test(data.toString())) setTimeout(resolve, delayMs)
    })
  })
  const sent = Date.now()
  child.kill('SIGTERM')
  const result = await child
  return { result, stopMs: Date.now() - sent }
}
