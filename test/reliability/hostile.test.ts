// The second matrix, hostile input: secrets where they travel, forged lines, odd configurations.
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { createServer, type Socket } from 'node:net'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { describe, expect, it } from 'vitest'
import { runPostExec } from '../../src/backup/post.js'
import { runPreExec } from '../../src/backup/run.js'
import { run, tempDir, writeConfig } from '../helpers/hooks.js'
import { powerStates, snapshots } from '../helpers/pool.js'
import { demoSim } from '../helpers/sim.js'
import { world } from '../helpers/world.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

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
      password: SIM_PASSWORD,
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

describe('a staging folder that cannot be turned against root, shared by one run at a time', () => {
  async function stagingWorld(extra: Record<string, unknown> = {}) {
    const w = await world({ mode: 'online', vmName: ['vm2'], ...extra })
    return {
      ...w,
      config: (values: Record<string, unknown> = {}, name = 'dpxen.json') => w.configFor(values, name),
    }
  }
  const asRoot = process.getuid?.() === 0

  it.runIf(asRoot)('refuses a backupDir another user made, one writable by others, and a link', async () => {
    const { dir, backupDir, config } = await stagingWorld()
    mkdirSync(backupDir, { mode: 0o700 })
    chownSync(backupDir, 1000, 1000)
    const theirs = await run(runPreExec, [config()])
    expect(theirs.code).toBe(7)
    expect(theirs.lines).toEqual([
      `dpxen: backupDir ${backupDir} belongs to uid 1000, not to this user (uid 0): another user could plant files there; remove it so dpxen creates it, or use a folder of your own`,
    ])
    chownSync(backupDir, 0, 0)
    chmodSync(backupDir, 0o777)
    expect((await run(runPreExec, [config()])).lines).toEqual([
      `dpxen: backupDir ${backupDir} is writable by everyone (mode 777): run chmod go-w on it, or use a folder of your own`,
    ])
    rmSync(backupDir, { recursive: true })
    mkdirSync(join(dir, 'elsewhere'), { mode: 0o700 })
    symlinkSync(join(dir, 'elsewhere'), backupDir)
    const link = await run(runPreExec, [config()])
    expect(link.code).toBe(7)
    expect(link.text).toMatch(/is a symbolic link: give the real folder's path in backupDir$/)
    expect(readdirSync(join(dir, 'elsewhere'))).toEqual([])
  })

  it('writes through no link planted in the folder: state, manifest and lock files are made exclusively', async () => {
    const { dir, backupDir, config } = await stagingWorld()
    mkdirSync(backupDir, { mode: 0o700 })
    const victim = join(dir, 'victim')
    writeFileSync(victim, 'precious')
    for (const name of [
      '.dpxen-state.json.partial',
      '127.0.0.1_vm2_Snapshot.xva.manifest.json.partial',
      '127.0.0.1_vm2_Snapshot.xva.partial',
      '.dpxen-lock.partial',
    ])
      symlinkSync(victim, join(backupDir, name))
    // Links dpxen did not make are files it did not write: refused, named.
    const refused = await run(runPreExec, [config()])
    expect(refused.code).toBe(7)
    expect(refused.text).toMatch(
      /holds files this backup did not write: \.dpxen-lock\.partial, .*allowForeignFiles: true/,
    )
    expect(readFileSync(victim, 'utf8')).toBe('precious')
    // Let through, it still writes through none of them.
    const result = await run(runPreExec, [config({ allowForeignFiles: true })])
    expect(result.code, result.text).toBe(0)
    expect(readFileSync(victim, 'utf8')).toBe('precious')
    expect(existsSync(join(backupDir, '127.0.0.1_vm2_Snapshot.xva'))).toBe(true)
  })

  it.runIf(asRoot)(
    'trusts no state file another user made: a forged "stopped" entry starts nothing',
    async () => {
      const { xapi, backupDir, config } = await stagingWorld()
      mkdirSync(backupDir, { mode: 0o700 })
      const uuid = await xapi.call<string>('VM.get_uuid', await xapi.vmByName('vm2'))
      const forged = join(backupDir, '.dpxen-state.json')
      writeFileSync(
        forged,
        JSON.stringify({
          version: 1,
          runId: 'x',
          mode: 'online',
          startedAt: '',
          files: [],
          vms: [],
          errors: [],
          stopped: [{ uuid, name: 'vm2' }],
        }),
      )
      chownSync(forged, 1000, 1000)
      const post = await run(runPostExec, [config()])
      expect(post.text).toMatch(/no record of a backup/)
      expect((await powerStates(xapi)).vm2).toBe('Halted')
    },
  )

  it('a missing backupDir under a file is one clear line and exit 7, not an internal error', async () => {
    const { dir, config } = await stagingWorld()
    writeFileSync(join(dir, 'file'), '')
    const result = await run(runPreExec, [config({ backupDir: join(dir, 'file', 'staging') })])
    expect(result.code).toBe(7)
    expect(result.lines).toEqual([`dpxen: cannot write ${join(dir, 'file', 'staging')}: ENOTDIR`])
  })

  it('two sessions on one folder: the second pre-exec and post-exec leave the first one alone', async () => {
    const { sim, xapi, backupDir, config } = await stagingWorld()
    const cfg = config()
    sim.faults.add('export-stall:2')
    const a = run(runPreExec, [cfg], { env: { SESSIONID: '2026/11/30-1' } })
    await new Promise((resolve) => setTimeout(resolve, 500))
    const b = await run(runPreExec, [cfg], { env: { SESSIONID: '2026/11/30-2' } })
    expect(b.code).toBe(7)
    expect(b.lines.at(-1)).toMatch(
      new RegExp(
        `^dpxen: backupDir ${backupDir} is in use by Data Protector session 2026/11/30-1 since .*: give each backup specification its own backupDir$`,
      ),
    )
    expect((await a).code).toBe(0)
    const file = join(backupDir, '127.0.0.1_vm2_Snapshot.xva')
    expect(existsSync(file)).toBe(true)
    // Session 2's post-exec (Data Protector runs it after the failed pre-exec) removes nothing.
    const postB = await run(runPostExec, [cfg], { env: { SESSIONID: '2026/11/30-2' } })
    expect(postB.code).toBe(7)
    expect(postB.text).toMatch(/holds the backup of Data Protector session 2026\/11\/30-1, staged since/)
    expect(existsSync(file)).toBe(true)
    // Session 1's own post-exec collects its files and frees the folder.
    const postA = await run(runPostExec, [cfg], { env: { SESSIONID: '2026/11/30-1' } })
    expect(postA.code).toBe(0)
    expect(readdirSync(backupDir)).toEqual([])
    expect(await snapshots(xapi)).toEqual([])
  })

  it('with lockTimeout, the second session waits for the post-exec of the first, then runs', async () => {
    const { backupDir, config } = await stagingWorld({ lockTimeout: 20 })
    const cfg = config()
    expect((await run(runPreExec, [cfg], { env: { SESSIONID: 's1' } })).code).toBe(0)
    const second = run(runPreExec, [cfg], { env: { SESSIONID: 's2' } })
    await new Promise((resolve) => setTimeout(resolve, 1500))
    expect((await run(runPostExec, [cfg], { env: { SESSIONID: 's1' } })).code).toBe(0)
    const b = await second
    expect(b.code).toBe(0)
    expect(b.lines[0]).toMatch(
      new RegExp(
        `^dpxen: backupDir ${backupDir} holds the backup of Data Protector session s1, .*; waiting \\(lockTimeout 20 s, 0 s so far\\)$`,
      ),
    )
    expect(b.lines).toContain('dpxen: all 1 VM(s) backed up')
  })

  it('a lock whose process is gone is taken over, with a line saying whose it was', async () => {
    const { backupDir, config } = await stagingWorld()
    mkdirSync(backupDir, { mode: 0o700 })
    const dead = 2 ** 22 + 12345
    writeFileSync(
      join(backupDir, '.dpxen-lock'),
      JSON.stringify({
        hook: 'pre-exec',
        pid: dead,
        host: hostname(),
        since: '2026-11-30T01:00:00.000Z',
        phase: 'running',
      }),
      { mode: 0o600 },
    )
    const result = await run(runPreExec, [config()], { env: { SESSIONID: 's2' } })
    expect(result.code).toBe(0)
    expect(result.lines).toContain(
      `dpxen: warning: took over backupDir, which is in use by pre-exec (pid ${dead} on ${hostname()}) since 2026-11-30T01:00:00.000Z`,
    )
  })
})

describe('bounded: no file, host or answer can hang the hook or fill its memory', () => {
  const PRE_EXEC = fileURLToPath(new URL('../../dist/hooks/pre-exec.js', import.meta.url))

  /** Runs the pre-exec, sends SIGTERM after `ms`, and says how long it took to stop. */
  async function terminatedAfter(config: string, ms: number) {
    // execa would SIGKILL a child still alive 5 s after SIGTERM: the hook must end by itself.
    const child = execa(process.execPath, [PRE_EXEC, config], { reject: false, forceKillAfterDelay: false })
    await new Promise((resolve) => setTimeout(resolve, ms))
    const sent = Date.now()
    child.kill('SIGTERM')
    const result = await child
    return { result, stopMs: Date.now() - sent }
  }

  it.runIf(process.platform !== 'win32')(
    'a FIFO, /dev/zero or a huge file as passwordFile, caFile or configuration: one line each, at once',
    async () => {
      const dir = tempDir()
      const fifo = join(dir, 'fifo')
      await execa('mkfifo', [fifo])
      const huge = join(dir, 'huge')
      writeFileSync(huge, Buffer.alloc(2 * 1024 * 1024, 0x41))
      const base = {
        mode: 'allOnline',
        url: 'https://127.0.0.1:9',
        username: 'root',
        backupDir: join(dir, 's'),
      }
      const cases: [Record<string, unknown>, RegExp][] = [
        [{ passwordFile: fifo }, /: passwordFile: cannot read \/\S+ \(not a regular file\)$/],
        [{ passwordFile: '/dev/zero' }, /: passwordFile: cannot read \/\S+ \(not a regular file\)$/],
        [{ passwordFile: huge }, /: passwordFile: cannot read \/\S+ \(larger than 64 KiB/],
        [{ password: 'x', caFile: '/dev/zero' }, /: caFile: cannot read \/dev\/zero \(not a regular file\)$/],
      ]
      for (const [values, line] of cases) {
        const started = Date.now()
        const result = await run(runPreExec, [writeConfig(dir, { ...base, ...values })])
        expect(result.code).toBe(2)
        expect(
          result.lines.some((l) => line.test(l)),
          result.text,
        ).toBe(true)
        expect(Date.now() - started).toBeLessThan(5000)
      }
      const asConfig = await run(runPreExec, [fifo])
      expect(asConfig.code).toBe(2)
      expect(asConfig.lines).toEqual([`dpxen: config ${fifo}: cannot be read: not a regular file`])
    },
  )

  it('an endless XML-RPC answer is cut at maxAnswerMiB, memory flat', async () => {
    const open: Socket[] = []
    const server = createServer((socket) => {
      open.push(socket)
      socket.on('error', () => undefined)
      socket.once('data', () => {
        socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\n\r\n<?xml version="1.0"?><methodResponse>')
        const junk = Buffer.alloc(64 * 1024, 0x20)
        const pump = (): void => {
          while (!socket.destroyed && socket.write(junk));
          if (!socket.destroyed) socket.once('drain', pump)
        }
        pump()
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const dir = tempDir()
      const port = (server.address() as { port: number }).port
      const config = writeConfig(dir, {
        mode: 'allOnline',
        url: `http://127.0.0.1:${port}`,
        username: 'root',
        password: 'pw',
        backupDir: join(dir, 's'),
        maxAnswerMiB: 8,
      })
      const result = await execa('/usr/bin/time', ['-f', 'rss=%M', process.execPath, PRE_EXEC, config], {
        reject: false,
        timeout: 30_000,
      })
      expect(result.exitCode).toBe(3)
      expect(result.stdout).toBe(
        `dpxen: the answer of http://127.0.0.1:${port} to session.login_with_password is over 8 MiB (maxAnswerMiB): raise maxAnswerMiB for a very large pool, or check that url is a XenServer / XCP-ng host`,
      )
      const rssKiB = Number(/rss=(\d+)/.exec(result.stderr)?.[1])
      expect(rssKiB / 1024).toBeLessThan(150)
    } finally {
      for (const socket of open) socket.destroy()
      await new Promise((resolve) => server.close(resolve))
    }
  })

  it('a host that accepts and never answers: SIGTERM ends the pre-exec within 5 s, exit 130', async () => {
    const sockets: Socket[] = []
    const server = createServer((socket) => {
      sockets.push(socket)
      socket.on('error', () => undefined)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const dir = tempDir()
      const config = writeConfig(dir, {
        mode: 'allOnline',
        url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
        username: 'root',
        password: 'pw',
        backupDir: join(dir, 's'),
      })
      const { result, stopMs } = await terminatedAfter(config, 1500)
      expect(stopMs).toBeLessThan(5000)
      expect(result.exitCode).toBe(130)
      expect(result.stdout).toBe('dpxen: interrupted: stopped and cleaned up')
    } finally {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => server.close(resolve))
    }
  })

  it('a second SIGTERM stops at once, says so, and the post-exec settles what was left', async () => {
    const { sim, xapi } = await demoSim()
    sim.faults.add('export-stall:30')
    const dir = tempDir()
    const config = writeConfig(dir, {
      mode: 'online',
      vmName: ['Debian'],
      url: sim.url,
      username: 'root',
      password: SIM_PASSWORD,
      backupDir: join(dir, 's'),
    })
    const child = execa(process.execPath, [PRE_EXEC, config], { reject: false })
    await new Promise<void>((resolve) =>
      child.stdout!.on('data', (d: Buffer) => /backup started/.test(d.toString()) && resolve()),
    )
    await new Promise((resolve) => setTimeout(resolve, 300))
    // The host stops answering, so the clean-up after the first signal is still under way when
    // the second comes (two signals sent at once may reach the process as one).
    sim.faults.add('rpc-hang')
    child.kill('SIGTERM')
    await new Promise((resolve) => setTimeout(resolve, 300))
    child.kill('SIGTERM')
    const result = await child
    expect(result.exitCode).toBe(130)
    expect(result.stdout).toMatch(
      /^dpxen: SIGTERM again: stopped at once; the next run \(or dpxen recover\) settles what was left$/m,
    )
    sim.faults.clear()
    const post = await execa(process.execPath, [PRE_EXEC.replace('pre-exec', 'post-exec'), config], {
      reject: false,
    })
    expect(post.stdout).not.toMatch(/internal error/)
    expect(await snapshots(xapi)).toEqual([])
    expect(readdirSync(join(dir, 's'))).toEqual([])
  })

  it('a host that stops answering after the login: SIGTERM ends the pre-exec within seconds, exit 130', async () => {
    const { sim } = await demoSim()
    const dir = tempDir()
    const config = writeConfig(dir, {
      mode: 'allOnline',
      url: sim.url,
      username: 'root',
      password: SIM_PASSWORD,
      backupDir: join(dir, 's'),
    })
    sim.faults.add('rpc-hang')
    const { result, stopMs } = await terminatedAfter(config, 1500)
    // Each call still owed an answer gets CALL_GRACE_MS (3 s) after the signal.
    expect(stopMs).toBeLessThan(5000)
    expect(result.exitCode).toBe(130)
    expect(result.stdout).toMatch(/^dpxen: interrupted: stopped and cleaned up$/m)
    sim.faults.clear()
  })
})
