// The xapi-sim executable: first line, SIGTERM, bad arguments, state folder.
import { mkdtempSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { connect as tlsConnect } from 'node:tls'
import { execa } from 'execa'
import { describe, expect, it } from 'vitest'
import { TestClient } from '../helpers/rpc.js'

const BIN = fileURLToPath(new URL('../../dist/simulator/xapi/cli.js', import.meta.url))

/** Starts the real executable and resolves with its URL once the first line is out. */
async function spawnSim(args: string[]): Promise<{ url: string; child: ReturnType<typeof execa> }> {
  const child = execa(BIN, ['serve', ...args], { reject: false })
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (data: Buffer) => {
      out += data.toString()
      const line = out.split('\n')[0]!
      const match = /^xapi-sim listening on (https?:\/\/\S+)$/.exec(line)
      if (match && out.includes('\n')) resolve(match[1]!)
      else if (out.includes('\n')) reject(new Error(`unexpected first line: ${line}`))
    })
    child.once('exit', (code) => reject(new Error(`exited with ${code}`)))
  })
  return { url, child }
}

describe('xapi-sim executable', () => {
  it('prints its URL first, serves the demo pool, and exits 0 on SIGTERM', async () => {
    const { url, child } = await spawnSim(['--demo', '--port', '0'])
    const xapi = await TestClient.login(url)
    expect(await xapi.vmByName('Debian')).toMatch(/^OpaqueRef:/)
    child.kill('SIGTERM')
    expect((await child).exitCode).toBe(0)
  })

  it('--tls serves https with a self-signed certificate made at start, and prints its fingerprint', async () => {
    const child = execa(BIN, ['serve', '--demo', '--tls'], { reject: false })
    let out = ''
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (data: Buffer) => {
        out += data.toString()
        if (out.split('\n').length > 2) resolve()
      })
      child.once('exit', (code) => reject(new Error(`exited with ${code}: ${out}`)))
    })
    const url = /^xapi-sim listening on (https:\/\/127\.0\.0\.1:\d+)$/m.exec(out)?.[1]
    const printed = /^xapi-sim certificate SHA-256 fingerprint ([0-9A-F:]{95})$/m.exec(out)?.[1]
    expect(url).toBeDefined()
    const served = await new Promise<string>((resolve, reject) => {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port: Number(new URL(url!).port),
        rejectUnauthorized: false,
      })
      socket.once('secureConnect', () => {
        resolve(socket.getPeerCertificate().fingerprint256)
        socket.destroy()
      })
      socket.once('error', reject)
    })
    expect(served).toBe(printed)
    child.kill('SIGTERM')
    expect((await child).exitCode).toBe(0)
  })

  it('keeps its state in --state and takes --user, --password and --fault', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xapi-sim-cli-'))
    try {
      const { url, child } = await spawnSim([
        '--demo',
        '--state',
        dir,
        '--user',
        'admin',
        '--password',
        'pw',
        '--fault',
        'snapshot-fail',
      ])
      const xapi = await TestClient.login(url, 'admin', 'pw')
      expect((await xapi.failure('VM.snapshot', await xapi.vmByName('vm2'), 's'))[0]).toBe(
        'SR_BACKEND_FAILURE_109',
      )
      child.kill('SIGINT')
      expect((await child).exitCode).toBe(0)
      expect(existsSync(join(dir, 'state.json'))).toBe(true)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it.each([
    [['serve', '--fault', 'bogus'], /unknown fault "bogus"/],
    [['serve', '--checksum', 'md5'], /--checksum must be xxhash or sha1/],
    [['serve', '--port', 'eighty'], /--port must be a number/],
    [['serve', '--demo', '--seed', 'x.json'], /exclude each other/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ])('refuses %j with a one-line reason and exit code 2', async (args, message) => {
    const result = await execa(BIN, args, { reject: false })
    expect(result.exitCode).toBe(2)
    expect(result.stderr.split('\n')[0]).toMatch(message)
    expect(result.stderr).not.toMatch(/\n\s+at /)
  })

  it('reports an unreadable seed file in one line', async () => {
    const result = await execa(BIN, ['serve', '--seed', '/nonexistent/seed.json'], { reject: false })
    expect(result.exitCode).toBe(1)
    expect(result.stderr.trim()).toMatch(/^xapi-sim: seed file \/nonexistent\/seed.json: /)
  })
})
