// Bad input: configuration fuzzing, odd VM names, and damaged XVAs given to restore.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { safeName, xvaNames } from '../../src/staging/names.js'
import { runPreExec } from '../../src/backup/run.js'
import { ConfigError, loadConfig } from '../../src/config/load.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import { run, tempDir, writeConfig } from '../helpers/hooks.js'
import { records } from '../helpers/pool.js'
import { demoSim } from '../helpers/sim.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

const GOOD: Record<string, unknown> = {
  mode: 'online',
  url: 'http://xen',
  username: 'root',
  password: 'pw',
  vmName: ['a'],
  backupDir: '/tmp/b',
}
const ODD_VALUES: unknown[] = [
  null,
  0,
  -1,
  1e308,
  true,
  '',
  ' ',
  '\u0000',
  [],
  [[]],
  {},
  { a: 1 },
  'x'.repeat(100_000),
  ['\u202e'],
  NaN,
]

/** A tiny deterministic generator, so failures can be reproduced. */
function random(seed: number): () => number {
  let s = seed
  return () => {
    s = (s * 1103515245 + 12345) & 0x7fffffff
    return s / 0x7fffffff
  }
}

describe('configuration fuzzing', () => {
  it('answers 300 random mutations with ConfigError lines or a valid configuration, never a crash', async () => {
    const dir = tempDir()
    const rnd = random(42)
    const keys = [
      ...Object.keys(GOOD),
      'concurrency',
      'compression',
      'debug',
      'fingerprint',
      'caFile',
      'passwordEnv',
      'bogus',
      'Mode',
      'sr',
    ]
    for (let i = 0; i < 300; i++) {
      const values = { ...GOOD }
      for (let m = 0; m < 1 + Math.floor(rnd() * 3); m++) {
        const key = keys[Math.floor(rnd() * keys.length)]!
        if (rnd() < 0.2) delete values[key]
        else values[key] = ODD_VALUES[Math.floor(rnd() * ODD_VALUES.length)]
      }
      const path = join(dir, `c${i}.json`)
      writeFileSync(path, JSON.stringify(values))
      try {
        const { config } = await loadConfig({ path, env: {} })
        expect(typeof config.url).toBe('string')
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError)
        for (const line of (error as ConfigError).problems) {
          expect(line.startsWith(`config ${path}: `)).toBe(true)
          expect(line).not.toContain('\n')
          expect(line.length).toBeLessThan(400)
        }
      }
    }
  })
})

describe('odd VM names', () => {
  const names = [
    'web "prod"',
    'a/b',
    'a\\b',
    '../../etc',
    'CON',
    'nul.txt',
    'trailing. ',
    'ünïcødé 🚀',
    'x'.repeat(300),
    'tab\there',
    'a:b*c?d|e<f>g',
    '.',
    '..',
    '',
  ]
  it.each(names)('makes %j a safe file name inside backupDir', (name) => {
    const safe = safeName(name)
    // eslint-disable-next-line no-control-regex
    expect(safe).not.toMatch(/[<>:"/\\|?*\u0000-\u001f]/)
    expect(safe).not.toMatch(/[. ]$/)
    expect(safe).not.toMatch(/^(con|prn|aux|nul|com\d|lpt\d)(\.|$)/i)
    expect(Buffer.byteLength(safe)).toBeLessThanOrEqual(180)
    expect(safe.length).toBeGreaterThan(0)
    const dir = '/tmp/backup'
    expect(resolve(dir, `srv_${safe}.xva`).startsWith(`${dir}/`)).toBe(true)
  })

  it('gives names that collide once made safe (or differ in case) distinct files', () => {
    const vms = [
      { uuid: '11111111-aaaa', name: 'a/b' },
      { uuid: '22222222-bbbb', name: 'a:b' },
      { uuid: '33333333-cccc', name: 'A_B' },
      { uuid: '44444444-dddd', name: 'other' },
    ]
    const files = [...xvaNames('srv', vms, false).values()]
    expect(new Set(files.map((f) => f.toLowerCase())).size).toBe(4)
    expect(files).toContain('srv_other.xva')
  })

  it('backs up VMs with odd names end to end, every file inside backupDir', async () => {
    const { sim, xapi } = await demoSim()
    const vm2 = await xapi.vmByName('vm2')
    for (const name of ['../../escape', 'ünïcødé "q"', 'a:b']) await xapi.call('VM.clone', vm2, name)
    const dir = tempDir()
    const backupDir = join(dir, 'staging')
    const config = writeConfig(dir, {
      mode: 'allOffline',
      url: sim.url,
      username: 'root',
      password: SIM_PASSWORD,
      backupDir,
    })
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    const files = readdirSync(backupDir).filter((f) => f.endsWith('.xva'))
    expect(files).toEqual(
      expect.arrayContaining([
        '127.0.0.1_.._.._escape.xva',
        '127.0.0.1_ünïcødé _q_.xva',
        '127.0.0.1_a_b.xva',
      ]),
    )
    // Beside backupDir only the pool's hosts, remembered under backupDir's own name (connect.ts).
    expect(readdirSync(dir).sort()).toEqual(['dpxen.json', 'staging', 'staging.pool-hosts.json'])
  })
})

describe('damaged XVAs given to restore', () => {
  it.each<[string, (b: Buffer) => Buffer]>([
    ['truncated', (b) => b.subarray(0, Math.floor(b.length / 2))],
    [
      'reordered blocks',
      (b) => {
        // Two neighbouring 64 KiB runs in the middle of the data swap places.
        const mid = Math.floor(b.length / 2 / 512) * 512
        const run = 128 * 512
        return Buffer.concat([
          b.subarray(0, mid - run),
          b.subarray(mid, mid + run),
          b.subarray(mid - run, mid),
          b.subarray(mid + run),
        ])
      },
    ],
    [
      'a bad checksum',
      (b) => {
        const c = Buffer.from(b)
        const header = c.indexOf('.xxhash') - (c.indexOf('.xxhash') % 512)
        c.write('0000000000000000', header + 512, 'ascii')
        return c
      },
    ],
    [
      'a huge size in a header',
      (b) => {
        const c = Buffer.from(b)
        c.write('77777777777', 124, 'ascii')
        return c
      },
    ],
    [
      'a path-traversal name',
      (b) => {
        const c = Buffer.from(b)
        c.write('../../../../etc/passwd\0', 0, 'ascii')
        return c
      },
    ],
    ['not an XVA at all', () => Buffer.from('GIF89a'.repeat(1000))],
  ])('rejects %s before the pool is touched', async (_what, damage) => {
    const { sim, xapi } = await demoSim()
    const dir = tempDir()
    const backupDir = join(dir, 'staging')
    const config = writeConfig(dir, {
      mode: 'allOffline',
      url: sim.url,
      username: 'root',
      password: SIM_PASSWORD,
      backupDir,
    })
    writeConfig(
      dir,
      { mode: 'offline', vmName: ['vm2'], url: sim.url, username: 'root', password: SIM_PASSWORD, backupDir },
      'one.json',
    )
    expect((await run(runPreExec, [join(dir, 'one.json')])).code).toBe(0)
    const file = join(backupDir, '127.0.0.1_vm2.xva')
    writeFileSync(file, damage(readFileSync(file)))
    const vms = Object.keys(await records(xapi, 'VM')).sort()
    const vdis = (await xapi.call<string[]>('VDI.get_all')).length
    const result = await run(runRestorePostExec, [config])
    expect(result.code).toBe(5)
    expect(result.text).toMatch(/^dpxen: 127\.0\.0\.1_vm2\.xva: FAILED: .*; the pool is unchanged$/m)
    expect(Object.keys(await records(xapi, 'VM')).sort()).toEqual(vms)
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdis)
    expect(existsSync('/etc/passwd.dpxen')).toBe(false)
  })
})
