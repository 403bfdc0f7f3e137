// dp-sim sessions with the real dpxen hooks: what a Data Protector administrator would see.
import { existsSync, readFileSync, readdirSync, writeFileSync, mkdirSync, utimesSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { describe, expect, it } from 'vitest'
import { splitCommand } from '../../simulator/dp/exec.js'
import { runRestoreSession } from '../../simulator/dp/restore.js'
import { runBackupSession } from '../../simulator/dp/session.js'
import { Store } from '../../simulator/dp/store.js'
import { backupSpec as spec } from '../helpers/dp.js'
import { tempDir, writeConfig } from '../helpers/hooks.js'
import { diskHashes, powerStates, snapshots } from '../helpers/pool.js'
import { world } from '../helpers/world.js'

const dist = fileURLToPath(new URL('../../dist/', import.meta.url))
const hook = (name: string, config: string): string =>
  `"${process.execPath}" "${join(dist, 'hooks', name)}" "${config}"`
const DP_SIM = join(dist, 'simulator/dp/cli.js')

async function setup(values: Record<string, unknown>) {
  const w = await world(values)
  mkdirSync(w.backupDir)
  return { ...w, staging: w.backupDir, store: new Store(join(w.dir, 'store')) }
}

describe('Data Protector sessions with dpxen (dp-sim)', () => {
  it('online: a backup session, damage, a restore session: the disks are back', async () => {
    const { sim, xapi, staging, config, store } = await setup({ mode: 'online', vmName: ['Debian'] })
    const vm = await xapi.vmByName('Debian')
    const hashes = await diskHashes(sim.url, xapi, vm)
    const backup = await runBackupSession(
      spec(staging, { preExec: hook('pre-exec.js', config), postExec: hook('post-exec.js', config) }),
      { store },
    )
    expect(backup.status).toBe('Completed')
    expect(backup.id).toMatch(/^\d{4}\/\d{2}\/\d{2}-1$/)
    expect(backup.objects[0]!.files.map((f) => f.path.split('/').at(-1)).sort()).toEqual([
      '.dpxen-lock',
      '.dpxen-state.json',
      '127.0.0.1_Debian_Snapshot.xva',
      '127.0.0.1_Debian_Snapshot.xva.manifest.json',
    ])
    expect(backup.messages.some((m) => m.source === 'pre-exec' && /Debian: done/.test(m.text))).toBe(true)
    expect(readdirSync(staging)).toEqual([])
    await xapi.call('VM.hard_shutdown', vm)
    for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
      const vdi = await xapi.call<string>('VBD.get_VDI', vbd)
      if (vdi === 'OpaqueRef:NULL') continue
      const uuid = await xapi.call<string>('VDI.get_uuid', vdi)
      await sim.context.disks.writable(uuid)
      writeFileSync(sim.context.disks.path(uuid), Buffer.alloc(4096, 1), { flag: 'r+' })
    }
    await xapi.call('VM.start', vm, false, false)
    const restore = await runRestoreSession({
      store,
      session: backup.id,
      trees: [],
      conflict: 'keep-most-recent',
      postExec: hook('restore-post-exec.js', config),
    })
    expect(restore.status).toBe('Completed')
    expect(restore.id).toMatch(/-2$/)
    expect(await diskHashes(sim.url, xapi, vm)).toEqual(hashes)
    expect(await powerStates(xapi)).toMatchObject({ Debian: 'Running' })
  })

  it('offline: a deleted VM comes back from a restore session with its MAC', async () => {
    const { sim, xapi, staging, config, store } = await setup({ mode: 'offline', vmName: ['vm2'] })
    const vm = await xapi.vmByName('vm2')
    const hashes = await diskHashes(sim.url, xapi, vm)
    const mac = await xapi.call('VIF.get_MAC', (await xapi.call<string[]>('VM.get_VIFs', vm))[0])
    const backup = await runBackupSession(
      spec(staging, { preExec: hook('pre-exec.js', config), postExec: hook('post-exec.js', config) }),
      { store },
    )
    expect(backup.status).toBe('Completed')
    for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
      const vdi = await xapi.call<string>('VBD.get_VDI', vbd)
      if (vdi !== 'OpaqueRef:NULL') await xapi.call('VDI.destroy', vdi)
    }
    await xapi.call('VM.destroy', vm)
    const restore = await runRestoreSession({
      store,
      session: backup.id,
      trees: [join(staging, '127.0.0.1_vm2.xva'), join(staging, '127.0.0.1_vm2.xva.manifest.json')],
      conflict: 'overwrite',
      postExec: hook('restore-post-exec.js', config),
    })
    expect(restore.status).toBe('Completed')
    expect(restore.report.files).toBe(2)
    const again = await xapi.vmByName('vm2')
    expect(await diskHashes(sim.url, xapi, again)).toEqual(hashes)
    expect(await xapi.call('VIF.get_MAC', (await xapi.call<string[]>('VM.get_VIFs', again))[0])).toBe(mac)
  })

  it('one VM at a time: each VM its own object with --vm object scripts; the staging folder never holds two', async () => {
    const { xapi, staging, config, store } = await setup({ mode: 'allOffline' })
    const before = await powerStates(xapi)
    const vms = ['Debian', 'vm2', 'legacy-win']
    const objectHook = (name: string, vm: string): string =>
      `"${process.execPath}" "${join(dist, 'hooks', name)}" --vm ${vm} "${config}"`
    // Measured: the XVA files (whole or partial) present in the staging folder, sampled as it runs.
    const xvas = (): number =>
      readdirSync(staging, { recursive: true, encoding: 'utf8' }).filter((f) => /\.xva(\.partial)?$/.test(f))
        .length
    let most = 0
    let samples = 0
    const sampler = setInterval(() => {
      most = Math.max(most, xvas())
      samples++
    }, 2)
    let backup
    try {
      backup = await runBackupSession(
        {
          ...spec(staging, {}),
          trees: vms.map((vm) => join(staging, vm)),
          objectScripts: Object.fromEntries(
            vms.map((vm) => [
              join(staging, vm),
              { preExec: objectHook('pre-exec.js', vm), postExec: objectHook('post-exec.js', vm) },
            ]),
          ),
        },
        { store },
      )
    } finally {
      clearInterval(sampler)
    }
    expect(backup.status, backup.messages.join('\n')).toBe('Completed')
    // Each object holds its own VM's file, and nothing of another.
    for (const [i, vm] of vms.entries())
      expect(
        backup.objects[i]!.files.map((f) => f.path.split('/').at(-1)).filter((f) => f?.endsWith('.xva')),
      ).toEqual([`127.0.0.1_${vm}.xva`])
    expect(samples).toBeGreaterThan(20)
    expect(most).toBe(1)
    expect(xvas()).toBe(0)
    expect(await powerStates(xapi)).toEqual(before)
  })

  it('a VM that fails ends the session "Completed with errors" (the post-exec reports it)', async () => {
    const { staging, config, store } = await setup({ mode: 'allOnline' })
    const backup = await runBackupSession(
      spec(staging, { preExec: hook('pre-exec.js', config), postExec: hook('post-exec.js', config) }),
      { store },
    )
    expect(backup.status).toBe('Completed with errors')
    expect(backup.exitCode).toBe(10)
    expect(backup.messages.map((m) => m.text)).toContain(
      'dpxen: FAILED in the backup: legacy-win: At least one sr used by legacy-win does not support snapshot',
    )
    expect(backup.objects[0]!.files.some((f) => f.path.endsWith('127.0.0.1_Debian_Snapshot.xva'))).toBe(true)
  })

  it('a failing pre-exec ends the session "Failed" and backs nothing up', async () => {
    const { staging, config, store, dir } = await setup({ mode: 'online', vmName: ['Debian'] })
    const bad = writeConfig(
      dir,
      { ...JSON.parse(readFileSync(config, 'utf8')), password: 'wrong' },
      'bad.json',
    )
    writeFileSync(join(staging, 'stale.txt'), 'x')
    const backup = await runBackupSession(
      spec(staging, { preExec: hook('pre-exec.js', bad), postExec: hook('post-exec.js', bad) }),
      { store },
    )
    expect(backup.status).toBe('Failed')
    expect(backup.exitCode).toBe(12)
    expect(backup.objects).toEqual([])
    expect(
      backup.messages.some(
        (m) => m.source === 'pre-exec' && /refused the password of user root/.test(m.text),
      ),
    ).toBe(true)
    expect(backup.messages.some((m) => m.source === 'post-exec')).toBe(false)
  })

  it('a Data Protector preview changes nothing, even with the session scripts running (PREVIEW=1)', async () => {
    const { xapi, staging, config, store } = await setup({ mode: 'allOffline' })
    const before = await powerStates(xapi)
    const preview = await runBackupSession(
      spec(staging, {
        preExec: hook('pre-exec.js', config),
        postExec: hook('post-exec.js', config),
        execScriptOnPreview: true,
      }),
      { store, preview: true },
    )
    expect(preview.status).toBe('Completed')
    expect(preview.type).toBe('preview')
    expect(preview.messages.some((m) => /preview: mode allOffline would back up 3 VM/.test(m.text))).toBe(
      true,
    )
    expect(readdirSync(staging)).toEqual([])
    expect(await powerStates(xapi)).toEqual(before)
    expect(await snapshots(xapi)).toEqual([])
  })

  it('aborts a script silent longer than the inactivity timeout', async () => {
    const dir = tempDir()
    const script = join(dir, 'silent.mjs')
    writeFileSync(script, 'setTimeout(() => {}, 60_000)\n')
    const store = new Store(join(dir, 'store'))
    mkdirSync(join(dir, 'tree'))
    const started = Date.now()
    const backup = await runBackupSession(
      spec(join(dir, 'tree'), { preExec: `"${process.execPath}" "${script}"`, inactivityTimeout: 0.5 }),
      { store },
    )
    expect(backup.status).toBe('Aborted')
    expect(backup.exitCode).toBe(13)
    expect(Date.now() - started).toBeLessThan(15_000)
    expect(backup.messages.map((m) => m.text)).toContain(
      '[Critical] The pre-exec command was silent for 0.5 s: aborted',
    )
  })

  it('passes the documented environment to session scripts, SMEXIT to the post-exec', async () => {
    const dir = tempDir()
    const script = join(dir, 'env.mjs')
    writeFileSync(
      script,
      "for (const k of ['DATALIST','MODE','OWNER','PREVIEW','RESTARTED','SESSIONID','SESSIONKEY','SMEXIT']) console.log(k + '=' + (process.env[k] ?? '-'))\n",
    )
    mkdirSync(join(dir, 'tree'))
    writeFileSync(join(dir, 'tree', 'a.txt'), 'hello')
    const run = `"${process.execPath}" "${script}"`
    const backup = await runBackupSession(spec(join(dir, 'tree'), { preExec: run, postExec: run }), {
      store: new Store(join(dir, 'store')),
    })
    const pre = backup.messages.filter((m) => m.source === 'pre-exec').map((m) => m.text)
    const post = backup.messages.filter((m) => m.source === 'post-exec').map((m) => m.text)
    expect(pre).toEqual(
      expect.arrayContaining([
        'DATALIST=xen',
        'MODE=full',
        'OWNER=root.sys@dp',
        'PREVIEW=0',
        'RESTARTED=0',
        `SESSIONID=${backup.id}`,
        'SMEXIT=-',
      ]),
    )
    expect(pre.find((l) => l.startsWith('SESSIONKEY='))).not.toBe('SESSIONKEY=-')
    expect(post).toContain('SMEXIT=0')
  })

  it('splits commands without a shell and refuses pipes and redirections', () => {
    expect(splitCommand('"/opt/my dir/node" /x/pre.js "C:\\tmp\\a b.json"')).toEqual([
      '/opt/my dir/node',
      '/x/pre.js',
      'C:\\tmp\\a b.json',
    ])
    for (const bad of ['a | b', 'a > out', 'a < in', 'a; b', 'a & b'])
      expect(() => splitCommand(bad)).toThrow(/special character/)
    expect(() => splitCommand('"unbalanced')).toThrow(/unbalanced quote/)
  })

  it('restores with the conflict choices, into another folder, and never corrupts the store', async () => {
    const dir = tempDir()
    const tree = join(dir, 'tree')
    mkdirSync(join(tree, 'sub'), { recursive: true })
    writeFileSync(join(tree, 'a.txt'), 'backed up')
    writeFileSync(join(tree, 'sub', 'b.txt'), 'b')
    const store = new Store(join(dir, 'store'))
    const backup = await runBackupSession(spec(tree, {}), { store })
    writeFileSync(join(tree, 'a.txt'), 'newer')
    const keep = await runRestoreSession({
      store,
      session: backup.id,
      trees: [],
      conflict: 'keep-most-recent',
    })
    expect(readFileSync(join(tree, 'a.txt'), 'utf8')).toBe('newer')
    expect(keep.status).toBe('Completed')
    utimesSync(join(tree, 'a.txt'), new Date(0), new Date(0))
    await runRestoreSession({ store, session: backup.id, trees: [], conflict: 'keep-most-recent' })
    expect(readFileSync(join(tree, 'a.txt'), 'utf8')).toBe('backed up')
    writeFileSync(join(tree, 'a.txt'), 'changed')
    await runRestoreSession({ store, session: backup.id, trees: [], conflict: 'no-overwrite' })
    expect(readFileSync(join(tree, 'a.txt'), 'utf8')).toBe('changed')
    await runRestoreSession({
      store,
      session: backup.id,
      trees: [join(tree, 'sub')],
      conflict: 'overwrite',
      into: join(dir, 'elsewhere'),
    })
    expect(readFileSync(join(dir, 'elsewhere', 'sub', 'b.txt'), 'utf8')).toBe('b')
    expect(existsSync(join(dir, 'elsewhere', 'a.txt'))).toBe(false)
    // A session interrupted before it ended leaves nothing behind.
    const { dir: partial } = store.begin()
    expect(existsSync(partial)).toBe(true)
    const again = new Store(join(dir, 'store'))
    expect(existsSync(partial)).toBe(false)
    expect(again.list().map((s) => s.status)).toEqual([
      'Completed',
      'Completed',
      'Completed',
      'Completed',
      'Completed',
    ])
    void dirname
  })

  it('dp-sim executable: backup, list, show, restore, with omnib-like exit codes', async () => {
    const dir = tempDir()
    const tree = join(dir, 'tree')
    mkdirSync(tree)
    writeFileSync(join(tree, 'x.txt'), 'x')
    const specFile = join(dir, 'spec.yaml')
    writeFileSync(specFile, `name: files\nclient: dpclient\ntrees:\n  - ${tree}\n`)
    const env = { DP_SIM_STORE: join(dir, 'store') }
    const backup = await execa(DP_SIM, ['backup', specFile], { env, reject: false })
    expect(backup.exitCode).toBe(0)
    expect(backup.stdout).toMatch(/^Session \d{4}\/\d{2}\/\d{2}-1: Completed$/m)
    const id = /^Session (\S+): Completed$/m.exec(backup.stdout)![1]!
    expect((await execa(DP_SIM, ['list'], { env })).stdout).toMatch(
      new RegExp(`^${id} +backup +Completed +files$`, 'm'),
    )
    expect((await execa(DP_SIM, ['show', id], { env })).stdout).toContain(`${join(tree, 'x.txt')}  1  `)
    const restore = await execa(
      DP_SIM,
      [
        'restore',
        '--session',
        id,
        '--into',
        join(dir, 'out'),
        '--post-exec',
        `"${process.execPath}" -e "process.exit(3)"`,
      ],
      { env, reject: false },
    )
    expect(restore.exitCode).toBe(10)
    expect(restore.stdout).toMatch(/Completed with errors/)
    const bad = await execa(DP_SIM, ['backup', join(dir, 'nope.json')], { env, reject: false })
    expect(bad.exitCode).toBe(2)
    expect(bad.stderr).toMatch(/^dp-sim: spec .*nope\.json: cannot be read/)
  })

  it('npm run demo: a full simulated backup and restore that proves the VMs are back, then a restore test that boots them', async () => {
    const result = await execa(process.execPath, [join(dist, 'simulator/dp/demo.js')], { reject: false })
    expect(result.exitCode).toBe(0)
    expect(result.stdout).toMatch(
      /^demo passed: both VMs are back exactly as they were backed up, and their backups boot$/m,
    )
    expect(result.stdout).toMatch(/^ {4}post-exec \| dpxen: health checks: 2 passed, 0 failed$/m)
    expect(result.stdout).toMatch(/^ {4}result: Completed; copies left in the pool: 0$/m)
    // Over HTTPS, the certificate pinned as dpxen check offered it.
    expect(result.stdout).toMatch(
      /^ {2}pool: {4}xapi-sim, three hosts, master at https:\/\/127\.0\.0\.1:\d+ /m,
    )
    expect(result.stdout).toMatch(/^ {4}added the fingerprint line; dpxen check now says: ready$/m)
  })
})
