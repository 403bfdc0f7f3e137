// The release artifact as an administrator installs it on a Data Protector client: `npm pack`
// gives one tarball; it installs with no registry (--offline, an empty cache) into a prefix of its
// own, far from this checkout's node_modules, and that install backs up and restores a VM. The
// same tarball merely unpacked runs with `node <dir>/…`. Then `dpxen setup` from the install
// writes the wrappers, and Data Protector sessions (dp-sim) run through them. The install also
// runs the incremental path with changed block tracking (NBD over TLS, the VHD writer).
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runRestoreSession } from '../simulator/dp/restore.js'
import { runBackupSession } from '../simulator/dp/session.js'
import { Store } from '../simulator/dp/store.js'
import { backupSpec } from './helpers/dp.js'
import {
  baseRuns,
  damage,
  diskHashes,
  guestWrites,
  powerStates,
  serveNbd,
  snapshots,
} from './helpers/pool.js'
import { world } from './helpers/world.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  version: string
  bin: Record<string, string>
  dependencies?: Record<string, string>
}

let tarball: string
let work: string
/** The bin folder of the offline install, once it has passed. */
let installed: string | undefined

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'dpxen-package-'))
  // --ignore-scripts: the suite's global setup built dist/ already (prepare would rebuild it
  // under the other test files' feet).
  await execa('npm', ['pack', '--ignore-scripts', '--pack-destination', work], { cwd: root })
  tarball = join(work, `dpxen-${pkg.version}.tgz`)
}, 120_000)

afterAll(() => rmSync(work, { recursive: true, force: true }))

/** npm with no registry to reach and nothing cached: all it may use is the tarball. */
async function installOffline(prefix: string): Promise<void> {
  const cache = join(work, `cache-${Date.now()}`)
  mkdirSync(cache)
  await execa(
    'npm',
    ['install', '-g', '--offline', '--no-audit', '--no-fund', '--prefix', prefix, '--cache', cache, tarball],
    { env: { npm_config_registry: 'http://127.0.0.1:9/' } },
  )
}

describe('the release tarball', () => {
  it('holds the bundled executables and no dependency to fetch', async () => {
    expect(pkg.dependencies ?? {}).toEqual({})
    const { stdout } = await execa('tar', ['-tzf', tarball])
    const files = stdout.split('\n')
    for (const target of Object.values(pkg.bin)) expect(files).toContain(`package/${target}`)
    expect(files).toContain('package/dist/THIRD-PARTY-LICENSES.txt')
    expect(files.filter((f) => f.includes('node_modules') || f.endsWith('.node'))).toEqual([])
    expect(files.filter((f) => /\.ts$|\/test\/|\/src\//.test(f))).toEqual([])
  })

  it('installs with --offline and an empty cache; that install backs up and restores a VM', async () => {
    const prefix = join(work, 'prefix')
    await installOffline(prefix)
    const bin = join(prefix, 'bin')
    for (const name of Object.keys(pkg.bin)) expect(statSync(join(bin, name)).mode & 0o111).toBeTruthy()
    expect(readdirSync(join(prefix, 'lib', 'node_modules', 'dpxen'))).not.toContain('node_modules')

    const { sim, xapi, dir, config } = await world({ mode: 'online', vmName: ['Debian'] })
    const vm = await xapi.vmByName('Debian')
    const hashes = await diskHashes(sim.url, xapi, vm)
    // Run as a client runs them: by their installed names, from a folder far from the checkout.
    const env = { PATH: `${bin}:${process.env.PATH}` }
    const backup = await execa('dpxen-pre-exec', [config], { cwd: dir, env, reject: false })
    expect(backup.stdout).toMatch(/Debian: done/)
    expect(backup.exitCode).toBe(0)
    expect(await snapshots(xapi)).toEqual([])
    await damage(sim.url, xapi, vm)
    const restore = await execa('dpxen-restore-post-exec', [config], { cwd: dir, env, reject: false })
    expect(restore.exitCode, restore.stdout).toBe(0)
    expect(await diskHashes(sim.url, xapi, vm)).toEqual(hashes)
    const version = await execa('dpxen', ['--help'], { cwd: dir, env })
    expect(version.stdout).toMatch(/^usage: dpxen /)
    installed = bin
  })

  it('that install runs incrementals with changed block tracking: a delta read over TLS NBD, the base without data, the point restored', async () => {
    expect(installed, 'the offline install above').toBeDefined()
    const env = { PATH: `${installed}:${process.env.PATH}` }
    const w = await world({ mode: 'online', vmName: ['Debian'], incremental: true, cbt: true })
    mkdirSync(w.backupDir)
    await serveNbd(w.xapi)
    const vm = await w.xapi.vmByName('Debian')
    const kept = join(w.dir, 'kept')
    mkdirSync(kept)
    const session = async (): Promise<string> => {
      const pre = await execa('dpxen-pre-exec', [w.config], { cwd: w.dir, env, reject: false })
      expect(pre.exitCode, pre.stdout).toBe(0)
      for (const f of readdirSync(w.backupDir).filter((n) => !n.startsWith('.')))
        copyFileSync(join(w.backupDir, f), join(kept, f))
      const post = await execa('dpxen-post-exec', [w.config], { cwd: w.dir, env, reject: false })
      expect(post.exitCode, post.stdout).toBe(0)
      return pre.stdout
    }
    expect(await session()).toMatch(/Debian: changed block tracking enabled on disk\(s\) 0, 1/)
    await guestWrites(w.sim, w.xapi, vm, 'inc-1', 0.25)
    const hashes = await diskHashes(w.sim.url, w.xapi, vm)
    const delta = await session()
    expect(delta).toMatch(/Debian: incremental run 1 of chain/)
    expect(delta).not.toMatch(/warning/)
    expect(await snapshots(w.xapi)).toEqual([])
    expect(await baseRuns(w.xapi)).toHaveLength(1)
    await damage(w.sim.url, w.xapi, vm)
    for (const f of readdirSync(kept)) copyFileSync(join(kept, f), join(w.backupDir, f))
    const restore = await execa('dpxen-restore-post-exec', [w.config], { cwd: w.dir, env, reject: false })
    expect(restore.exitCode, restore.stdout).toBe(0)
    expect(await diskHashes(w.sim.url, w.xapi, vm)).toEqual(hashes)
  })

  it('that install health-checks a backup: the copy boots without network, then goes', async () => {
    expect(installed, 'the offline install above').toBeDefined()
    const env = { PATH: `${installed}:${process.env.PATH}` }
    const w = await world({ mode: 'offline', vmName: ['vm2'], keepRestoredFiles: true })
    expect((await execa('dpxen-pre-exec', [w.config], { cwd: w.dir, env, reject: false })).exitCode).toBe(0)
    const vms = (await w.xapi.call<string[]>('VM.get_all')).length
    const check = await execa('dpxen', ['health-check', w.config], { cwd: w.dir, env, reject: false })
    expect(check.exitCode, check.stdout).toBe(0)
    expect(check.stdout).toMatch(
      /^dpxen: vm2: health check passed: booted in \d+ s, guest agent \S+ answered/m,
    )
    expect((await w.xapi.call<string[]>('VM.get_all')).length).toBe(vms)
  })

  it('runs unpacked, without npm: node <dir>/dist/hooks/…', async () => {
    const dir = join(work, 'unpacked')
    mkdirSync(dir)
    await execa('tar', ['-xzf', tarball, '-C', dir])
    const { config } = await world({ mode: 'allOnline' })
    const check = await execa(process.execPath, [join(dir, 'package/dist/hooks/dpxen.js'), 'check', config], {
      cwd: dir,
      reject: false,
    })
    expect(check.stdout).toMatch(/connected to /)
    expect(check.stdout, check.stdout).toMatch(/ok +Debian/)
  })

  it('dpxen setup from the install: Data Protector sessions run through its wrappers', async () => {
    const prefix = join(work, 'prefix-setup')
    await installOffline(prefix)
    const { sim, xapi, dir, backupDir: staging, config } = await world({ mode: 'offline', vmName: ['vm2'] })
    mkdirSync(staging)
    const client = join(dir, 'client')
    await execa(join(prefix, 'bin', 'dpxen'), ['setup', '--prefix', client, '--config', config])
    const lbin = join(client, 'opt/omni/lbin')
    const wrapper = readFileSync(join(lbin, 'dpxen-pre-exec'), 'utf8')
    expect(wrapper).toContain(`hook='${join(prefix, 'lib/node_modules/dpxen/dist/hooks/pre-exec.js')}'`)

    const store = new Store(join(dir, 'store'))
    const vm = await xapi.vmByName('vm2')
    const hashes = await diskHashes(sim.url, xapi, vm)
    const before = await powerStates(xapi)
    const backup = await runBackupSession(
      backupSpec(staging, {
        preExec: join(lbin, 'dpxen-pre-exec'),
        postExec: join(lbin, 'dpxen-post-exec'),
      }),
      { store },
    )
    expect(backup.status, backup.messages.map((m) => m.text).join('\n')).toBe('Completed')
    expect(backup.messages.some((m) => m.source === 'pre-exec' && /vm2: done/.test(m.text))).toBe(true)
    await damage(sim.url, xapi, vm)
    const restore = await runRestoreSession({
      store,
      session: backup.id,
      trees: [],
      conflict: 'overwrite',
      postExec: join(lbin, 'dpxen-restore-post-exec'),
    })
    expect(restore.status, restore.messages.map((m) => m.text).join('\n')).toBe('Completed')
    expect(await diskHashes(sim.url, xapi, await xapi.vmByName('vm2'))).toEqual(hashes)
    expect(await powerStates(xapi)).toEqual(before)
  })
})
