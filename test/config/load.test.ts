// Finding, reading and checking the configuration: every problem at once, with file and key.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../../src/config/load.js'
import { tempDir, writeConfig } from '../helpers/hooks.js'

const GOOD = {
  mode: 'online',
  url: 'https://xen.example.com',
  username: 'root',
  password: 'pw',
  vmName: ['Debian'],
  backupDir: '/tmp/backup',
}

async function problems(values: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): Promise<string[]> {
  const dir = tempDir()
  const path = writeConfig(dir, values)
  try {
    await loadConfig({ path, env })
  } catch (error) {
    if (error instanceof ConfigError) return error.problems.map((p) => p.replace(`config ${path}: `, ''))
    throw error
  }
  return []
}

describe('configuration', () => {
  it('applies defaults and normalises mode case and the url', async () => {
    const dir = tempDir()
    const { config } = await loadConfig({
      path: writeConfig(dir, { ...GOOD, mode: 'ALLONLINE', url: 'https://xen.example.com:8443/some/path' }),
    })
    expect(config).toMatchObject({
      mode: 'allOnline',
      url: 'https://xen.example.com:8443',
      server: 'xen.example.com',
      concurrency: 1,
      compression: 'none',
      debug: false,
      metadata: false,
      // Durations are written in seconds and held in milliseconds (core/format.ts's Ms).
      shutdownTimeout: 600_000,
      progressInterval: 60_000,
      stallTimeout: 600_000,
      lockTimeout: 0,
      failSessionOnError: false,
    })
  })

  it('reads a duration in seconds, fractions too, and refuses one out of range in seconds', async () => {
    const dir = tempDir()
    const { config } = await loadConfig({
      path: writeConfig(dir, { ...GOOD, stallTimeout: 2.5, lockTimeout: 20, progressInterval: 0.05 }),
    })
    expect(config).toMatchObject({ stallTimeout: 2500, lockTimeout: 20_000, progressInterval: 50 })
    await expect(
      loadConfig({ path: writeConfig(tempDir(), { ...GOOD, shutdownTimeout: 86_401 }) }),
    ).rejects.toThrow(/shutdownTimeout: must be a number from 1 to 86400, not 86401/)
  })

  it.each<[string, Record<string, unknown>, RegExp]>([
    [
      'an unknown key, with a suggestion',
      { ...GOOD, vmname2: [] },
      /^vmname2: unknown key \(did you mean vmName\?\)$/,
    ],
    [
      'a typo of backupDir',
      { ...GOOD, backupdirr: '/x' },
      /^backupdirr: unknown key \(did you mean backupDir\?\)$/,
    ],
    [
      'a bad mode',
      { ...GOOD, mode: 'hot' },
      /^mode: "hot" is not one of online, allOnline, offline, allOffline$/,
    ],
    ['a missing url', { ...GOOD, url: undefined }, /^url: missing/],
    ['a url that is not one', { ...GOOD, url: 'xen host' }, /^url: "xen host" is not a URL/],
    ['a url with credentials', { ...GOOD, url: 'http://root:pw@xen' }, /^url: must not contain credentials/],
    ['an ftp url', { ...GOOD, url: 'ftp://xen' }, /^url: must start with http:\/\/ or https:\/\//],
    ['a number as username', { ...GOOD, username: 42 }, /^username: must be a text in quotes/],
    [
      'no password at all',
      { ...GOOD, password: undefined },
      /^password: missing \(give password, passwordFile or passwordEnv\)$/,
    ],
    [
      'two password sources',
      { ...GOOD, passwordEnv: 'X' },
      /^password: give only one of password, passwordEnv$/,
    ],
    [
      'an unset password variable',
      { ...GOOD, password: undefined, passwordEnv: 'NOPE' },
      /^passwordEnv: the environment variable it names is not set or empty$/,
    ],
    [
      'incremental with an offline mode',
      { ...GOOD, mode: 'offline', incremental: true },
      /^incremental: works with online and allOnline \(mode offline shuts VMs down and exports them whole\)$/,
    ],
    [
      'a missing password file',
      { ...GOOD, password: undefined, passwordFile: '/nonexistent/pw' },
      /^passwordFile: cannot read \/\S+ \(ENOENT\)$/,
    ],
    [
      'a number as password, not shown',
      { ...GOOD, password: 98765432 },
      /^password: must be a text in quotes, not a number \(not shown\)$/,
    ],
    [
      'a password put in passwordEnv, not shown',
      { ...GOOD, password: undefined, passwordEnv: 'Sup3rS3cret!' },
      /^passwordEnv: the environment variable it names is not set or empty$/,
    ],
    [
      'a list as password, not shown',
      { ...GOOD, password: ['Sup3r', 'S3cret'] },
      /^password: must be a text in quotes, not a list \(not shown\)$/,
    ],
    ['vmName not a list', { ...GOOD, vmName: 'Debian' }, /^vmName: must be a list of names/],
    [
      'an empty vmName in online mode',
      { ...GOOD, vmName: [] },
      /^vmName: is empty; mode online backs up the VMs it names/,
    ],
    [
      'no vmName in offline mode',
      { ...GOOD, mode: 'offline', vmName: undefined },
      /^vmName: missing; mode offline needs the names/,
    ],
    ['an empty name in vmName', { ...GOOD, vmName: ['a', ' '] }, /^vmName: has an empty name$/],
    [
      'a huge vmName list',
      { ...GOOD, vmName: Array.from({ length: 10_001 }, (_, i) => `vm${i}`) },
      /^vmName: lists 10001 names; at most 10000$/,
    ],
    [
      'a relative backupDir',
      { ...GOOD, backupDir: 'backup' },
      /^backupDir: must be an absolute path, not "backup"$/,
    ],
    ['an empty backupDir', { ...GOOD, backupDir: '' }, /^backupDir: is empty/],
    ['debug not a boolean', { ...GOOD, debug: 'yes' }, /^debug: must be true or false/],
    [
      'concurrency 0',
      { ...GOOD, concurrency: 0 },
      /^concurrency: must be a whole number from 1 to 16, not 0$/,
    ],
    ['concurrency 2.5', { ...GOOD, concurrency: 2.5 }, /^concurrency: must be a whole number/],
    [
      'an unknown compression',
      { ...GOOD, compression: 'xz' },
      /^compression: "xz" is not one of none, gzip, zstd$/,
    ],
    ['a bad fingerprint', { ...GOOD, fingerprint: 'abc' }, /^fingerprint: must be a SHA-256 fingerprint/],
    [
      'a missing CA file',
      { ...GOOD, caFile: '/nonexistent/ca.pem' },
      /^caFile: cannot read \/nonexistent\/ca.pem/,
    ],
    [
      'exclude with a named mode',
      { ...GOOD, exclude: ['vm2'] },
      /^exclude: only apply to allOnline and allOffline \(mode online backs up the VMs vmName names\)$/,
    ],
    [
      'tags that are not a list',
      { ...GOOD, mode: 'allOnline', includeTags: 'gold' },
      /^includeTags: must be a list of tags, like \["backup"\]$/,
    ],
    [
      'TLS options with http',
      { ...GOOD, url: 'http://xen', fingerprint: 'AB'.repeat(32) },
      /^caFile\/fingerprint: only apply to an https:\/\/ url$/,
    ],
  ])('rejects %s', async (_what, values, message) => {
    const found = await problems(values)
    expect(found).toHaveLength(1)
    expect(found[0]).toMatch(message)
  })

  it('reports every problem at once, each naming the file', async () => {
    const dir = tempDir()
    const path = writeConfig(dir, {
      mode: 'sideways',
      url: 'nope',
      vmName: 'x',
      concurrency: 99,
      colour: 'blue',
    })
    const error = await loadConfig({ path }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConfigError)
    const lines = (error as ConfigError).problems
    expect(lines.length).toBeGreaterThanOrEqual(6)
    for (const line of lines) expect(line.startsWith(`config ${path}: `)).toBe(true)
  })

  it('reads the password from a file or from the environment', async () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'pw.txt'), 's3cret\n')
    const fromFile = await loadConfig({
      path: writeConfig(dir, { ...GOOD, password: undefined, passwordFile: 'pw.txt' }),
    })
    expect(fromFile.config.password).toBe('s3cret')
    const fromEnv = await loadConfig({
      path: writeConfig(dir, { ...GOOD, password: undefined, passwordEnv: 'XPW' }, 'b.json'),
      env: { XPW: 'env-pw' },
    })
    expect(fromEnv.config.password).toBe('env-pw')
  })

  it('warns when a file holding a password is readable by everyone', async () => {
    const dir = tempDir()
    const path = writeConfig(dir, GOOD)
    chmodSync(path, 0o644)
    const { warnings } = await loadConfig({ path })
    expect(warnings).toEqual([
      `config ${path}: holds a password and is readable by everyone (chmod 600 it, or use passwordFile)`,
    ])
    chmodSync(path, 0o600)
    expect((await loadConfig({ path })).warnings).toEqual([])
  })

  it('finds the file: argument, then DPXEN_CONFIG, then a search from the working directory', async () => {
    const dir = tempDir()
    const sub = join(dir, 'a', 'b')
    mkdirSync(sub, { recursive: true })
    writeConfig(dir, { ...GOOD, username: 'from-rc' }, '.dpxenrc.json')
    expect((await loadConfig({ cwd: sub, env: {} })).config.username).toBe('from-rc')
    const viaEnv = writeConfig(dir, { ...GOOD, username: 'from-env' }, 'env.json')
    expect((await loadConfig({ cwd: sub, env: { DPXEN_CONFIG: viaEnv } })).config.username).toBe('from-env')
    const viaArg = writeConfig(dir, { ...GOOD, username: 'from-arg' }, 'arg.json')
    expect(
      (await loadConfig({ path: viaArg, cwd: sub, env: { DPXEN_CONFIG: viaEnv } })).config.username,
    ).toBe('from-arg')
  })

  it('finds a dpxen key in package.json and a DPxen_config.py in the working directory', async () => {
    const dir = tempDir()
    writeFileSync(
      join(dir, 'package.json'),
      JSON.stringify({ name: 'x', dpxen: { ...GOOD, username: 'from-pkg' } }),
    )
    expect((await loadConfig({ cwd: dir, env: {} })).config.username).toBe('from-pkg')
    const legacyDir = tempDir()
    writeConfig(
      legacyDir,
      {
        text: 'Mode = "allOffline"\nurl = http://xen\nusername = "u"\npassword = "p"\nvmName = []\ndebug = False\nsr = ""\n',
      },
      'DPxen_config.py',
    )
    const { config } = await loadConfig({ cwd: legacyDir, env: {} })
    expect(config).toMatchObject({ mode: 'allOffline', url: 'http://xen', username: 'u', server: 'xen' })
  })

  it('says where to put a configuration when there is none', async () => {
    const error = await loadConfig({ cwd: tempDir(), env: {}, platform: 'linux' }).catch((e: unknown) => e)
    expect((error as ConfigError).problems[0]).toMatch(
      /^no configuration found: .*\/etc\/opt\/omni\/client\/dpxen$/,
    )
  })

  it('reports unreadable JSON and a missing file in one line each', async () => {
    const dir = tempDir()
    const path = join(dir, 'bad.json')
    writeFileSync(path, '{ "mode": ')
    const bad = (await loadConfig({ path }).catch((e: unknown) => e)) as ConfigError
    expect(bad.problems).toHaveLength(1)
    expect(bad.problems[0]).toBe(`config ${path}: line 1, column 11: a value was expected`)
    const missing = (await loadConfig({ path: join(dir, 'none.json') }).catch(
      (e: unknown) => e,
    )) as ConfigError
    expect(missing.problems).toEqual([
      `config ${join(dir, 'none.json')}: not found (check the path given to the hook)`,
    ])
  })
})
