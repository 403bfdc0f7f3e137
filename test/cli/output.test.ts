// A reader that goes away (`dpxen check | head -3`, a Disk Agent gone): no stack trace, and
// the run ends as an interrupted one does, having put right what it started.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { snapshots } from '../helpers/pool.js'
import { world } from '../helpers/world.js'

const DPXEN = fileURLToPath(new URL('../../dist/hooks/dpxen.js', import.meta.url))
const PRE_EXEC = fileURLToPath(new URL('../../dist/hooks/pre-exec.js', import.meta.url))

/** Runs `file args`, closes its stdout after the first line; resolves with exit code and stderr. */
function readOneLine(
  file: string,
  args: string[],
): Promise<{ code: number | null; stderr: string; first: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let first = ''
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.stdout.on('data', (d: Buffer) => {
      first += d.toString()
      if (first.includes('\n')) child.stdout.destroy()
    })
    child.on('close', (code) => resolve({ code, stderr, first: first.split('\n')[0]! }))
  })
}

describe('standard output closed early', () => {
  it('dpxen check: ends quietly, no stack trace', async () => {
    const { config } = await world({ mode: 'allOnline' })
    const result = await readOneLine(DPXEN, ['check', config])
    expect(result.first).toMatch(/^configuration .*: OK/)
    expect(result.stderr).toBe('')
    // 130 when it saw the pipe close, 5 (legacy-win cannot be snapshotted) when it had said all
    // before; never 1 with a stack trace, which an unhandled EPIPE gives.
    expect([5, 130]).toContain(result.code)
  })

  it('the pre-exec: stops as on SIGTERM, with no snapshot left behind', async () => {
    const { xapi, config } = await world({ mode: 'allOnline', exclude: ['legacy-win'] })
    const result = await readOneLine(PRE_EXEC, [config])
    expect(result.stderr).toBe('')
    expect([0, 130]).toContain(result.code)
    expect(await snapshots(xapi)).toEqual([])
  })
})
