// The second matrix, hostile input: secrets where they travel, forged lines, odd configurations.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runPreExec } from '../../src/backup/run.js'
import { run, tempDir, writeConfig } from '../helpers/hooks.js'
import { demoSim } from '../helpers/sim.js'

describe('hostile input', () => {
  it('a one-letter password: output and debug file stay readable, and show neither it nor a session ref', async () => {
    const { sim } = await demoSim({ password: 'e' })
    const dir = tempDir()
    const debugDir = join(dir, 'debug')
    const config = writeConfig(dir, {
      mode: 'online',
      vmName: ['Debian'],
      url: sim.url,
      username: 'root',
      password: 'e',
      backupDir: join(dir, 'staging'),
      debug: true,
      debugDir,
    })
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    // Substring redaction would have made this "D***bian" (and shown what the password is).
    expect(result.lines).toContain(
      'dpxen: Debian: backup started (online, Running, 2 disk(s), up to 17.0 MiB)',
    )
    expect(result.text).not.toContain('***')
    const debug = readFileSync(join(debugDir, readdirSync(debugDir)[0]!), 'utf8')
    expect(debug).toMatch(/call session\.login_with_password\(\["root","\*\*\*","2\.21","dpxen"\]\) ok/)
    expect(debug).toContain('Debian')
    // The session ref opens every call: it is never written, in a call record or a URL.
    const calls = debug.split('\n').filter((l) => /call (?!session\.login)\S+\(\["/.test(l))
    expect(calls.length).toBeGreaterThan(5)
    for (const line of calls) expect(line).toMatch(/call \S+\(\["\*\*\*"/)
    expect(debug).not.toMatch(/session_id=(?!\*\*\*)/)
  })

  it('a VM named to forge a session line prints one line, the control characters escaped', async () => {
    const { sim, xapi } = await demoSim()
    await xapi.call('VM.set_name_label', await xapi.vmByName('vm2'), 'x\ndpxen: all 9 VM(s) backed up\r')
    const dir = tempDir()
    const config = writeConfig(dir, {
      mode: 'allOnline',
      url: sim.url,
      username: 'root',
      password: 'xenroot',
      backupDir: join(dir, 'staging'),
    })
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    expect(result.lines.filter((l) => l.startsWith('dpxen: all 9'))).toEqual([])
    // eslint-disable-next-line no-control-regex -- finding control characters is the point
    for (const line of result.lines) expect(line).not.toMatch(/[\r\n\u0000-\u001f]/)
    expect(result.text).toContain('dpxen: x\\ndpxen: all 9 VM(s) backed up\\r: backup started')
  })
})
