// Backups end to end against the simulator: each mode, the VM that cannot be snapshotted, the
// files written, what the pool looks like afterwards, and the post-exec's cleanup and report.
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runPostExec } from '../../src/backup/post.js'
import { runPreExec } from '../../src/backup/run.js'
import { run, writeConfig } from '../helpers/hooks.js'
import { diskHashes, powerStates, snapshots } from '../helpers/pool.js'
import { world } from '../helpers/world.js'
import { rebuiltDiskHashes } from '../helpers/xva.js'
import type { XapiSimOptions } from '../../simulator/xapi/server.js'
import { OC_BACKUP_RUN, OC_CREATED, OC_OWNER } from '../../src/pool/tags.js'

const setup = (values: Record<string, unknown>, simOptions: XapiSimOptions = {}) =>
  world({ progressInterval: 0.2, ...values }, simOptions)

function files(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).sort() : []
}

describe('backup (dpxen-pre-exec, dpxen-post-exec)', () => {
  it('online: exports snapshots of the named VMs, leaves them running and no snapshot behind', async () => {
    const { sim, xapi, backupDir, config } = await setup({ mode: 'online', vmName: ['Debian', 'vm2'] })
    const before = await powerStates(xapi)
    const hashes = {
      Debian: (await diskHashes(sim.url, xapi, await xapi.vmByName('Debian'))).sort(),
      vm2: (await diskHashes(sim.url, xapi, await xapi.vmByName('vm2'))).sort(),
    }
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    expect(result.text).toMatch(/^dpxen: Debian: backup started \(online, Running, 2 disk\(s\), up to /m)
    expect(result.text).toMatch(
      /^dpxen: Debian: done, 8\.0 MiB in [\d.]+ s \([\d.]+ MB\/s\) -> 127\.0\.0\.1_Debian_Snapshot\.xva$/m,
    )
    expect(result.text).toMatch(/^dpxen: all 2 VM\(s\) backed up$/m)
    // The lock holds the folder for Data Protector's backup and this session's post-exec.
    expect(files(backupDir)).toEqual([
      '.dpxen-lock',
      '.dpxen-state.json',
      '127.0.0.1_Debian_Snapshot.xva',
      '127.0.0.1_Debian_Snapshot.xva.manifest.json',
      '127.0.0.1_vm2_Snapshot.xva',
      '127.0.0.1_vm2_Snapshot.xva.manifest.json',
    ])
    for (const name of ['Debian', 'vm2'] as const) {
      const xva = readFileSync(join(backupDir, `127.0.0.1_${name}_Snapshot.xva`))
      expect(await rebuiltDiskHashes(xva)).toEqual(hashes[name])
    }
    expect(await snapshots(xapi)).toEqual([])
    expect(await powerStates(xapi)).toEqual(before)
    expect(sim.openSessions()).toBe(1)
    expect(statSync(join(backupDir, '127.0.0.1_vm2_Snapshot.xva')).mode & 0o777).toBe(0o600)
  })

  it('writes a manifest with the VM, its disks and VIFs, and the file checksum', async () => {
    const { xapi, backupDir, config } = await setup({ mode: 'online', vmName: ['Debian'] })
    await run(runPreExec, [config])
    const manifest = JSON.parse(
      readFileSync(join(backupDir, '127.0.0.1_Debian_Snapshot.xva.manifest.json'), 'utf8'),
    )
    const xva = readFileSync(join(backupDir, '127.0.0.1_Debian_Snapshot.xva'))
    const { h64Raw: xxh64 } = await (await import('xxhash-wasm')).default()
    expect(manifest).toMatchObject({
      format: 'dpxen-manifest/1',
      mode: 'online',
      server: '127.0.0.1',
      vm: {
        name: 'Debian',
        uuid: await xapi.call('VM.get_uuid', await xapi.vmByName('Debian')),
        powerStateAtBackup: 'Running',
      },
      file: {
        name: '127.0.0.1_Debian_Snapshot.xva',
        bytes: xva.length,
        xxh64: xxh64(xva).toString(16).padStart(16, '0'),
        checksum: 'xxhash',
      },
    })
    expect(
      manifest.disks.map((d: { userdevice: string; srName: string }) => [d.userdevice, d.srName]),
    ).toEqual([
      ['0', 'Local storage'],
      ['1', 'Shared Storage'],
    ])
    expect(manifest.vifs[0].mac).toMatch(/^[0-9a-f:]{17}$/)
  })

  it('online: reports the VM whose disk cannot be snapshotted, backs up the others, post-exec fails the session', async () => {
    const { xapi, backupDir, config } = await setup({ mode: 'allOnline' })
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    expect(result.lines).toContain(
      'dpxen: legacy-win: FAILED: At least one sr used by legacy-win does not support snapshot',
    )
    expect(result.text).toMatch(
      /^dpxen: 2 VM\(s\) backed up, 1 failure\(s\); the post-exec will report them/m,
    )
    expect(files(backupDir).filter((f) => f.endsWith('.xva'))).toEqual([
      '127.0.0.1_Debian_Snapshot.xva',
      '127.0.0.1_vm2_Snapshot.xva',
    ])
    expect(await snapshots(xapi)).toEqual([])
    writeFileSync(join(backupDir, 'not-ours.txt'), 'keep me')
    writeFileSync(join(backupDir, 'someone-else.xva'), 'keep me too')
    const post = await run(runPostExec, [config])
    expect(post.code).toBe(5)
    expect(post.lines).toContain(
      'dpxen: FAILED in the backup: legacy-win: At least one sr used by legacy-win does not support snapshot',
    )
    expect(files(backupDir)).toEqual(['not-ours.txt', 'someone-else.xva'])
  })

  it('offline: stops a running VM, exports it, starts it again; a halted VM stays halted', async () => {
    const { sim, xapi, backupDir, config } = await setup({ mode: 'offline', vmName: ['Debian', 'vm2'] })
    const hashes = (await diskHashes(sim.url, xapi, await xapi.vmByName('Debian'))).sort()
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    expect(files(backupDir)).toContain('127.0.0.1_Debian.xva')
    expect(await rebuiltDiskHashes(readFileSync(join(backupDir, '127.0.0.1_Debian.xva')))).toEqual(hashes)
    expect(await powerStates(xapi)).toMatchObject({ Debian: 'Running', vm2: 'Halted' })
    // The session says when the VM was shut down and when it ran again, in that order.
    const down = result.lines.findIndex((l) => /^dpxen: Debian: shut down in [\d.]+ s$/.test(l))
    const up = result.lines.indexOf('dpxen: Debian: running again')
    expect(down, result.text).toBeGreaterThan(-1)
    expect(up).toBeGreaterThan(down)
    expect(result.lines.some((l) => /^dpxen: vm2: (shut down|running again)/.test(l))).toBe(false)
    const post = await run(runPostExec, [config])
    expect(post.code).toBe(0)
    expect(files(backupDir)).toEqual([])
  })

  it('offline: exports a suspended VM as it is and leaves it suspended', async () => {
    const { xapi, backupDir, config } = await setup({ mode: 'offline', vmName: ['vm2'] })
    const vm2 = await xapi.vmByName('vm2')
    await xapi.call('VM.start', vm2, false, false)
    await xapi.call('VM.suspend', vm2)
    expect((await run(runPreExec, [config])).code).toBe(0)
    expect(files(backupDir)).toContain('127.0.0.1_vm2.xva')
    expect(await xapi.call('VM.get_power_state', vm2)).toBe('Suspended')
  })

  it('allOffline with concurrency 2, zstd and the pool database', async () => {
    const { xapi, backupDir, config } = await setup({
      mode: 'allOffline',
      concurrency: 2,
      compression: 'zstd',
      metadata: true,
    })
    const before = await powerStates(xapi)
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    expect(files(backupDir).filter((f) => !f.endsWith('.json'))).toEqual([
      '.dpxen-lock',
      '127.0.0.1_Debian.xva',
      '127.0.0.1_legacy-win.xva',
      '127.0.0.1_pool-database.xml',
      '127.0.0.1_vm2.xva',
    ])
    expect([...readFileSync(join(backupDir, '127.0.0.1_vm2.xva')).subarray(0, 4)]).toEqual([
      0x28, 0xb5, 0x2f, 0xfd,
    ])
    expect(readFileSync(join(backupDir, '127.0.0.1_pool-database.xml'), 'utf8')).toMatch(/^<\?xml/)
    expect(await powerStates(xapi)).toEqual(before)
  })

  it('fails a name that matches no VM, and one that several VMs share, and goes on', async () => {
    const { xapi, config } = await setup({ mode: 'online', vmName: ['nosuchvm', 'twin', 'vm2'] })
    const vm2 = await xapi.vmByName('vm2')
    for (let i = 0; i < 2; i++)
      await xapi.call('VM.set_name_label', await xapi.call<string>('VM.clone', vm2, 'twin'), 'twin')
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    expect(result.lines).toContain(
      'dpxen: nosuchvm: FAILED: no VM is named nosuchvm (check vmName; names are case-sensitive)',
    )
    expect(result.text).toMatch(
      /^dpxen: twin: FAILED: 2 VMs are named twin; name one by its uuid in vmName \([0-9a-f-]+, [0-9a-f-]+\)$/m,
    )
    expect(result.text).toMatch(/^dpxen: vm2: done/m)
  })

  it('allOffline leaves out what exclude and the tags say, each with a line; includeTags takes only tagged VMs', async () => {
    const { xapi, dir, backupDir, config } = await setup({
      mode: 'allOffline',
      exclude: ['vm2'],
      excludeTags: ['no-backup'],
    })
    await xapi.call('VM.add_tags', await xapi.vmByName('Debian'), 'gold')
    await xapi.call('VM.add_tags', await xapi.vmByName('legacy-win'), 'no-backup')
    const result = await run(runPreExec, [config])
    expect(result.code, result.text).toBe(0)
    expect(result.lines).toContain('dpxen: vm2: not backed up: it is in exclude')
    expect(result.lines).toContain(
      'dpxen: legacy-win: not backed up: it carries the tag "no-backup" (excludeTags)',
    )
    expect(files(backupDir).filter((f) => f.endsWith('.xva'))).toEqual(['127.0.0.1_Debian.xva'])
    expect((await run(runPostExec, [config])).code).toBe(0)

    const values = JSON.parse(readFileSync(config, 'utf8')) as Record<string, unknown>
    const onlyGold = writeConfig(
      dir,
      { ...values, exclude: undefined, excludeTags: undefined, includeTags: ['gold'] },
      'gold.json',
    )
    const tagged = await run(runPreExec, [onlyGold])
    expect(tagged.code, tagged.text).toBe(0)
    expect(tagged.lines).toContain(
      'dpxen: vm2: not backed up: it carries none of the tags "gold" (includeTags)',
    )
    expect(files(backupDir).filter((f) => f.endsWith('.xva'))).toEqual(['127.0.0.1_Debian.xva'])
  })

  it('takes VMs by uuid and gives colliding names distinct files', async () => {
    const { xapi, backupDir, config } = await setup({ mode: 'allOnline' })
    const vm2 = await xapi.vmByName('vm2')
    const clone = await xapi.call<string>('VM.clone', vm2, 'a/b')
    await xapi.call('VM.set_name_label', vm2, 'a:b')
    await run(runPreExec, [config])
    const uuids = [await xapi.call<string>('VM.get_uuid', vm2), await xapi.call<string>('VM.get_uuid', clone)]
    const names = files(backupDir).filter((f) => f.startsWith('127.0.0.1_a_b'))
    expect(names.filter((f) => f.endsWith('.xva')).sort()).toEqual(
      uuids.map((u) => `127.0.0.1_a_b_${u.slice(0, 8)}_Snapshot.xva`).sort(),
    )
  })

  it('exits non-zero when nothing was backed up', async () => {
    const { config } = await setup({ mode: 'online', vmName: ['legacy-win'] })
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(5)
    expect(result.lines.at(-1)).toBe('dpxen: nothing was backed up: 1 failure(s), see above')
  })

  it('fails the session at once with failSessionOnError', async () => {
    const { config } = await setup({ mode: 'allOnline', failSessionOnError: true })
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(5)
    expect(result.lines.at(-1)).toMatch(/failing the session \(failSessionOnError\)$/)
  })

  it('fails a VM early when backupDir has no room for it', async () => {
    const { xapi, backupDir, config } = await setup(
      { mode: 'allOffline' },
      {
        demo: false,
        seed: {
          srs: [{ name: 'big', type: 'ext', default: true, size: '64TiB' }],
          vms: [
            { name: 'huge', disks: [{ sr: 'big', size: '8TiB' }] },
            { name: 'small', disks: [{ sr: 'big', size: '2MiB', fill: 1 }] },
          ],
        },
      },
    )
    const result = await run(runPreExec, [config])
    expect(result.text).toMatch(
      new RegExp(
        `^dpxen: huge: FAILED: not enough space in ${backupDir}: the export needs up to 8\\.0 TiB, .* free \\(free space or set backupDir to a larger disk\\)$`,
        'm',
      ),
    )
    expect(result.text).toMatch(/^dpxen: small: done/m)
    expect(await powerStates(xapi)).toMatchObject({ huge: 'Halted' })
  })

  it('removes what an earlier run left: its files, partial files, and its snapshots', async () => {
    const { xapi, backupDir, config } = await setup({ mode: 'online', vmName: ['vm2'] })
    await run(runPreExec, [config])
    writeFileSync(join(backupDir, '127.0.0.1_Debian_Snapshot.xva.partial'), 'half')
    // A snapshot tagged by a dpxen process on this machine that no longer runs.
    const snap = await xapi.call<string>(
      'VM.snapshot',
      await xapi.vmByName('Debian'),
      'dpxen backup Debian old',
    )
    await xapi.call('VM.add_to_other_config', snap, OC_BACKUP_RUN, 'old-run')
    await xapi.call('VM.add_to_other_config', snap, OC_CREATED, new Date().toISOString())
    await xapi.call(
      'VM.add_to_other_config',
      snap,
      OC_OWNER,
      `${(await import('node:os')).hostname()}:999999`,
    )
    // A snapshot somebody else made stays.
    await xapi.call<string>('VM.snapshot', await xapi.vmByName('Debian'), 'manual')
    const vdisBefore = (await xapi.call<string[]>('VDI.get_all')).length
    const result = await run(runPreExec, [config])
    expect(result.lines).toContain(
      'dpxen: removed the partial file 127.0.0.1_Debian_Snapshot.xva.partial of an interrupted run',
    )
    expect(result.text).toMatch(/^dpxen: removed the files of an earlier run/m)
    expect(result.lines).toContain(
      'dpxen: removed the leftover snapshot "dpxen backup Debian old" of an earlier run',
    )
    expect((await snapshots(xapi)).map((s) => s.name_label)).toEqual(['manual'])
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdisBefore - 2)
  })

  it('leaves the snapshot of another dpxen that is still running', async () => {
    const { xapi, config } = await setup({ mode: 'online', vmName: ['vm2'] })
    const snap = await xapi.call<string>(
      'VM.snapshot',
      await xapi.vmByName('Debian'),
      'dpxen backup Debian busy',
    )
    await xapi.call('VM.add_to_other_config', snap, OC_BACKUP_RUN, 'other-run')
    await xapi.call('VM.add_to_other_config', snap, OC_CREATED, new Date().toISOString())
    await xapi.call(
      'VM.add_to_other_config',
      snap,
      OC_OWNER,
      `${(await import('node:os')).hostname()}:${process.pid}`,
    )
    await run(runPreExec, [config])
    expect((await snapshots(xapi)).map((s) => s.name_label)).toEqual(['dpxen backup Debian busy'])
  })

  it.each([[[]], [[OC_BACKUP_RUN]], [[OC_BACKUP_RUN, OC_CREATED]]])(
    'leaves the snapshot of another dpxen caught while it tags it (tagged %j so far)',
    async (tags) => {
      const { xapi, config } = await setup({ mode: 'online', vmName: ['vm2'] })
      // Named as makeSnapshot names it, by this (living) process, and only partly tagged.
      const name = `dpxen backup Debian ${new Date().toISOString()} (${(await import('node:os')).hostname()}:${process.pid})`
      const snap = await xapi.call<string>('VM.snapshot', await xapi.vmByName('Debian'), name)
      for (const tag of tags)
        await xapi.call(
          'VM.add_to_other_config',
          snap,
          tag,
          tag === OC_CREATED ? new Date().toISOString() : 'other-run',
        )
      const pre = await run(runPreExec, [config])
      expect(pre.code, pre.text).toBe(0)
      expect((await snapshots(xapi)).map((s) => s.name_label)).toEqual([name])
    },
  )

  it('never deletes outside what it wrote, even through a symlink in the state file', async () => {
    const { backupDir, dir, config } = await setup({ mode: 'online', vmName: ['vm2'] })
    await run(runPreExec, [config])
    const outside = join(dir, 'precious.xva')
    writeFileSync(outside, 'precious')
    symlinkSync(outside, join(backupDir, 'link.xva'))
    const state = JSON.parse(readFileSync(join(backupDir, '.dpxen-state.json'), 'utf8'))
    state.files.push('link.xva', '../precious.xva', '/etc/passwd', '.')
    writeFileSync(join(backupDir, '.dpxen-state.json'), JSON.stringify(state))
    await run(runPostExec, [config])
    expect(readFileSync(outside, 'utf8')).toBe('precious')
    expect(files(backupDir)).toEqual(['link.xva'])
  })

  it('changes nothing in a Data Protector preview (PREVIEW=1)', async () => {
    const { xapi, backupDir, config } = await setup({ mode: 'allOffline' })
    const before = await powerStates(xapi)
    const pre = await run(runPreExec, [config], { env: { PREVIEW: '1' } })
    expect(pre.code).toBe(0)
    expect(pre.text).toMatch(/^dpxen: preview: mode allOffline would back up 3 VM\(s\)/m)
    const post = await run(runPostExec, [config], { env: { PREVIEW: '1' } })
    expect(post.code).toBe(0)
    expect(files(backupDir)).toEqual([])
    expect(await powerStates(xapi)).toEqual(before)
    expect(await snapshots(xapi)).toEqual([])
  })

  it('prints a progress line at least every progressInterval while exporting', async () => {
    const { config } = await setup(
      { mode: 'online', vmName: ['vm2'], progressInterval: 0.1 },
      { faults: ['export-stall:1'] },
    )
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(0)
    expect(
      result.lines.filter((l) => /^dpxen: vm2: exporting, [\d.]+ (MiB|KiB|B) so far/.test(l)).length,
    ).toBeGreaterThanOrEqual(3)
  })
})
