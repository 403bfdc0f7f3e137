// Restores end to end against the simulator: disks of online backups, whole VMs of offline
// backups, the target SR, and what must not change when something is wrong.
import { copyFileSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { runPreExec } from '../../src/backup/run.js'
import { runDpxen } from '../../src/cli/dpxen.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import type { XapiSimOptions } from '../../simulator/xapi/server.js'
import { run, terminateWhen } from '../helpers/hooks.js'
import { damage, diskHashes, powerStates, records, snapshots } from '../helpers/pool.js'
import type { TestClient } from '../helpers/rpc.js'
import { world } from '../helpers/world.js'

const RESTORE = fileURLToPath(new URL('../../dist/hooks/restore-post-exec.js', import.meta.url))
type Rec = Record<string, unknown>

async function setup(values: Record<string, unknown>, simOptions: XapiSimOptions = {}) {
  const w = await world({ progressInterval: 0.2, ...values }, simOptions)
  return {
    ...w,
    config: (extra: Record<string, unknown> = {}, name = 'dpxen.json') => w.configFor(extra, name),
  }
}

async function vbdLayout(xapi: TestClient, vm: string): Promise<string[]> {
  const out: string[] = []
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
    const r = await xapi.call<Rec>('VBD.get_record', vbd)
    out.push(`${String(r.userdevice)}:${String(r.type)}:${r.bootable ? 'boot' : '-'}:${String(r.mode)}`)
  }
  return out.sort()
}

/** The VDI of a VM's first disk (not its CD drive). */
async function diskVdi(xapi: TestClient, vm: string): Promise<string> {
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
    const r = await xapi.call<Rec>('VBD.get_record', vbd)
    if (r.type === 'Disk') return String(r.VDI)
  }
  throw new Error('no disk')
}

/** Deletes a VM and its disks: the damage a disaster recovery undoes. */
async function deleteVm(xapi: TestClient, vm: string): Promise<void> {
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
    const vdi = await xapi.call<string>('VBD.get_VDI', vbd)
    if (vdi !== 'OpaqueRef:NULL') await xapi.call('VDI.destroy', vdi)
  }
  await xapi.call('VM.destroy', vm)
}

async function vifMacs(xapi: TestClient, vm: string): Promise<string[]> {
  return Promise.all(
    (await xapi.call<string[]>('VM.get_VIFs', vm)).map((v) => xapi.call<string>('VIF.get_MAC', v)),
  )
}

describe('restore (dpxen-restore-post-exec)', () => {
  it('online: puts back the disks of an existing VM, positions kept, VM running again, nothing left behind', async () => {
    const { sim, xapi, config, backupDir } = await setup({ mode: 'online', vmName: ['Debian'] })
    const vm = await xapi.vmByName('Debian')
    const hashes = await diskHashes(sim.url, xapi, vm)
    const layout = await vbdLayout(xapi, vm)
    expect((await run(runPreExec, [config()])).code).toBe(0)
    // The disks are damaged while the VM runs on.
    await xapi.call('VM.hard_shutdown', vm)
    await damage(sim.url, xapi, vm)
    await xapi.call('VM.start', vm, false, false)
    expect(await diskHashes(sim.url, xapi, vm)).not.toEqual(hashes)
    const vdisBefore = (await xapi.call<string[]>('VDI.get_all')).length
    const result = await run(runRestorePostExec, [config()])
    expect(result.code).toBe(0)
    expect(result.lines).toContain(
      'dpxen: Debian: 2 disk(s) restored from 127.0.0.1_Debian_Snapshot.xva (SR "Local storage")',
    )
    expect(await diskHashes(sim.url, xapi, vm)).toEqual(hashes)
    expect(await vbdLayout(xapi, vm)).toEqual(layout)
    expect(await xapi.call('VM.get_power_state', vm)).toBe('Running')
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdisBefore)
    expect(await snapshots(xapi)).toEqual([])
    expect(
      Object.values(await records(xapi, 'VM')).filter((v) => v.is_a_template && !v.is_default_template),
    ).toEqual([])
    // The restored file and its manifest are gone: the next backup will not store them again.
    expect(readdirSync(backupDir).filter((f) => f.includes('Debian'))).toEqual([])
    expect(result.lines).toContain(
      `dpxen: Debian: removed 127.0.0.1_Debian_Snapshot.xva from ${backupDir} (keepRestoredFiles: true keeps it)`,
    )
  })

  it('online: a halted VM stays halted; disks go to the SR named by sr', async () => {
    const { sim, xapi, config } = await setup({ mode: 'online', vmName: ['vm2'], sr: 'Shared Storage' })
    const vm = await xapi.vmByName('vm2')
    const hashes = await diskHashes(sim.url, xapi, vm)
    await run(runPreExec, [config()])
    await damage(sim.url, xapi, vm)
    expect((await run(runRestorePostExec, [config()])).code).toBe(0)
    expect(await diskHashes(sim.url, xapi, vm)).toEqual(hashes)
    expect(await xapi.call('VM.get_power_state', vm)).toBe('Halted')
    const vdi = await diskVdi(xapi, vm)
    expect(await xapi.call('SR.get_name_label', await xapi.call('VDI.get_SR', vdi))).toBe('Shared Storage')
  })

  it('online: originalSr puts each disk back on the SR it came from', async () => {
    const { sim, xapi, config } = await setup({ mode: 'online', vmName: ['Debian'], originalSr: true })
    const vm = await xapi.vmByName('Debian')
    await run(runPreExec, [config()])
    await xapi.call('VM.hard_shutdown', vm)
    await damage(sim.url, xapi, vm)
    const vdisBefore = (await xapi.call<string[]>('VDI.get_all')).length
    expect((await run(runRestorePostExec, [config()])).code).toBe(0)
    const srs: string[] = []
    for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
      const r = await xapi.call<Rec>('VBD.get_record', vbd)
      if (r.type === 'Disk')
        srs.push(
          `${String(r.userdevice)}:${await xapi.call<string>('SR.get_name_label', await xapi.call('VDI.get_SR', r.VDI))}`,
        )
    }
    expect(srs.sort()).toEqual(['0:Local storage', '1:Shared Storage'])
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdisBefore)
  })

  it('online: a VM that no longer exists is an error, unless restoreMissingVm creates it from the snapshot', async () => {
    const { sim, xapi, config } = await setup({ mode: 'online', vmName: ['vm2'] })
    const vm = await xapi.vmByName('vm2')
    const hashes = await diskHashes(sim.url, xapi, vm)
    const macs = await vifMacs(xapi, vm)
    await run(runPreExec, [config()])
    await deleteVm(xapi, vm)
    const refused = await run(runRestorePostExec, [config()])
    expect(refused.code).toBe(5)
    expect(refused.lines).toContain(
      'dpxen: vm2: FAILED: VM vm2 no longer exists: restore its offline backup, or set restoreMissingVm: true to create it from this online backup',
    )
    const made = await run(runRestorePostExec, [config({ restoreMissingVm: true }, 'dr.json')])
    expect(made.code).toBe(0)
    const again = await xapi.vmByName('vm2')
    expect(await xapi.call<Rec>('VM.get_record', again)).toMatchObject({
      is_a_template: false,
      power_state: 'Halted',
    })
    expect(await diskHashes(sim.url, xapi, again)).toEqual(hashes)
    expect(await vifMacs(xapi, again)).toEqual(macs)
    expect(
      Object.keys(await xapi.call<Record<string, string>>('VM.get_other_config', again)).filter((k) =>
        k.startsWith('dpxen:'),
      ),
    ).toEqual([])
  })

  it('offline: brings back a deleted VM with its uuid, MACs and disks, into the chosen SR', async () => {
    const { sim, xapi, config } = await setup({ mode: 'offline', vmName: ['vm2'], sr: 'Local storage' })
    const vm = await xapi.vmByName('vm2')
    const before = await xapi.call<Rec>('VM.get_record', vm)
    const hashes = await diskHashes(sim.url, xapi, vm)
    const macs = await vifMacs(xapi, vm)
    await run(runPreExec, [config()])
    await deleteVm(xapi, vm)
    const result = await run(runRestorePostExec, [config()])
    expect(result.code).toBe(0)
    expect(result.lines).toContain(
      'dpxen: vm2: restored from 127.0.0.1_vm2.xva as a new VM (uuid and MACs kept) on SR "Local storage", halted',
    )
    const again = await xapi.vmByName('vm2')
    expect(await xapi.call('VM.get_uuid', again)).toBe(before.uuid)
    expect(await vifMacs(xapi, again)).toEqual(macs)
    expect(await diskHashes(sim.url, xapi, again)).toEqual(hashes)
    const vdi = await diskVdi(xapi, again)
    expect(await xapi.call('SR.get_name_label', await xapi.call('VDI.get_SR', vdi))).toBe('Local storage')
  })

  it('offline: over an existing VM leaves exactly one VM of that name, its MACs, and no orphaned disk', async () => {
    const { sim, xapi, config } = await setup({
      mode: 'offline',
      vmName: ['Debian'],
      startAfterRestore: true,
    })
    const vm = await xapi.vmByName('Debian')
    const hashes = await diskHashes(sim.url, xapi, vm)
    const macs = await vifMacs(xapi, vm)
    const seed = (await xapi.call<Record<string, string>>('VM.get_other_config', vm)).mac_seed
    await run(runPreExec, [config()])
    await xapi.call('VM.hard_shutdown', vm)
    await damage(sim.url, xapi, vm)
    await xapi.call('VM.start', vm, false, false)
    const vdisBefore = (await xapi.call<string[]>('VDI.get_all')).length
    const result = await run(runRestorePostExec, [config()])
    expect(result.code).toBe(0)
    expect(result.lines).toContain(
      'dpxen: Debian: restored from 127.0.0.1_Debian.xva replacing the VM of that name (new uuid, MACs kept) on SR "Local storage", started',
    )
    const all = await xapi.call<string[]>('VM.get_by_name_label', 'Debian')
    expect(all).toHaveLength(1)
    expect(await diskHashes(sim.url, xapi, all[0]!)).toEqual(hashes)
    expect(await vifMacs(xapi, all[0]!)).toEqual(macs)
    expect((await xapi.call<Record<string, string>>('VM.get_other_config', all[0])).mac_seed).toBe(seed)
    expect(await xapi.call('VM.get_power_state', all[0])).toBe('Running')
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdisBefore)
  })

  it('allOnline and allOffline restore every file of their kind; a folder of the other kind says what to change', async () => {
    const { sim, xapi, config } = await setup({ mode: 'allOffline' })
    const before = await powerStates(xapi)
    await run(runPreExec, [config()])
    const wrongKind = await run(runRestorePostExec, [config({ mode: 'allOnline' }, 'online.json')])
    expect(wrongKind.code).toBe(5)
    expect(wrongKind.lines.at(-1)).toMatch(
      /no online backup files in .*; it holds offline backups \(127\.0\.0\.1_Debian\.xva, 127\.0\.0\.1_legacy-win\.xva, 127\.0\.0\.1_vm2\.xva\): set mode to offline or allOffline to restore them$/,
    )
    const all = await run(runRestorePostExec, [config()])
    expect(all.code).toBe(0)
    // legacy-win came from a udev SR; without originalSr its disk goes to the default SR.
    for (const name of ['Debian', 'vm2', 'legacy-win'])
      expect(all.text).toMatch(
        new RegExp(`^dpxen: ${name}: restored from 127\\.0\\.0\\.1_${name}\\.xva replacing`, 'm'),
      )
    expect(all.lines.at(-1)).toBe('dpxen: all 3 VM(s) restored')
    expect(Object.keys(await powerStates(xapi)).sort()).toEqual(Object.keys(before).sort())
    void sim
  })

  it('the kind of a file comes from its manifest or its ova.xml, not its name: an offline backup of "vm2_Snapshot"', async () => {
    const { xapi, config, backupDir } = await setup({
      mode: 'offline',
      vmName: ['vm2_Snapshot'],
      keepRestoredFiles: true,
    })
    await xapi.call('VM.set_name_label', await xapi.vmByName('vm2'), 'vm2_Snapshot')
    expect((await run(runPreExec, [config()])).code).toBe(0)
    const file = '127.0.0.1_vm2_Snapshot.xva'
    expect(readdirSync(backupDir)).toContain(file)
    for (const manifest of [true, false]) {
      if (!manifest) rmSync(join(backupDir, `${file}.manifest.json`))
      const online = await run(runRestorePostExec, [config({ mode: 'allOnline' }, 'online.json')])
      expect(online.code).toBe(5)
      expect(online.lines.at(-1)).toMatch(
        new RegExp(`no online backup files in .*; it holds offline backups \\(${file}\\)`),
      )
      const offline = await run(runRestorePostExec, [config()])
      expect(offline.code, offline.text).toBe(0)
      expect(offline.text).toMatch(
        /^dpxen: vm2_Snapshot: restored from 127\.0\.0\.1_vm2_Snapshot\.xva replacing/m,
      )
    }
  })

  it('uses the pool default SR when sr is empty, and asks for sr when there is none', async () => {
    const { xapi, config } = await setup({ mode: 'offline', vmName: ['vm2'] })
    await run(runPreExec, [config()])
    const pool = (await xapi.call<string[]>('pool.get_all'))[0]!
    await xapi.call('pool.set_default_SR', pool, 'OpaqueRef:NULL')
    const path = config()
    const result = await run(runRestorePostExec, [path])
    expect(result.code).toBe(2)
    expect(result.lines).toEqual([
      `dpxen: the pool has no default SR: set sr in ${path} to the SR to restore into`,
    ])
  })

  it('an unknown SR and an SR that cannot hold disks are clear errors; the pool is unchanged', async () => {
    const { xapi, config } = await setup({ mode: 'offline', vmName: ['vm2'] })
    await run(runPreExec, [config()])
    const vms = (await xapi.call<string[]>('VM.get_all')).length
    const unknown = await run(runRestorePostExec, [config({ sr: 'Nowhere' }, 'nowhere.json')])
    expect(unknown.code).toBe(2)
    expect(unknown.lines[0]).toMatch(
      /^dpxen: sr: no SR is named "Nowhere" \(the pool has "Local storage", "Shared Storage", "Removable storage"\); fix sr in /,
    )
    const udev = await run(runRestorePostExec, [config({ sr: 'Removable storage' }, 'udev.json')])
    expect(udev.code).toBe(5)
    expect(udev.lines).toContain(
      'dpxen: vm2: FAILED: SR "Removable storage" (type udev) cannot hold restored disks; set sr to another SR',
    )
    expect((await xapi.call<string[]>('VM.get_all')).length).toBe(vms)
  })

  it('a corrupt file fails before the pool is touched', async () => {
    const { xapi, backupDir, config } = await setup({ mode: 'offline', vmName: ['vm2'] })
    await run(runPreExec, [config()])
    const file = join(backupDir, '127.0.0.1_vm2.xva')
    const bytes = readFileSync(file)
    bytes[1024 * 1024 + 5000] = bytes[1024 * 1024 + 5000]! ^ 0xff
    writeFileSync(file, bytes)
    const vms = await records(xapi, 'VM')
    const result = await run(runRestorePostExec, [config()])
    expect(result.code).toBe(5)
    expect(result.text).toMatch(/^dpxen: 127\.0\.0\.1_vm2\.xva: FAILED: .*; the pool is unchanged$/m)
    expect(Object.keys(await records(xapi, 'VM')).sort()).toEqual(Object.keys(vms).sort())
  })

  it('a file that does not match its manifest fails before the pool is touched', async () => {
    const { backupDir, config } = await setup({ mode: 'offline', vmName: ['vm2', 'Debian'] })
    await run(runPreExec, [config()])
    // Debian's valid file under vm2's name: valid XVA, wrong manifest.
    copyFileSync(join(backupDir, '127.0.0.1_Debian.xva'), join(backupDir, '127.0.0.1_vm2.xva'))
    const result = await run(runRestorePostExec, [config()])
    expect(result.lines).toContain(
      'dpxen: 127.0.0.1_vm2.xva: FAILED: 127.0.0.1_vm2.xva does not match its manifest (size or XXH64 differ): the file is damaged; the pool is unchanged',
    )
  })

  it("a manifest edited to name another VM (its hash still right) is refused: that VM's disks stay", async () => {
    for (const mode of ['online', 'offline']) {
      const { sim, xapi, backupDir, config } = await setup({ mode, vmName: ['vm2'] })
      await run(runPreExec, [config()])
      const debian = await xapi.vmByName('Debian')
      const before = await diskHashes(sim.url, xapi, debian)
      const file = mode === 'online' ? '127.0.0.1_vm2_Snapshot.xva' : '127.0.0.1_vm2.xva'
      const manifestPath = join(backupDir, `${file}.manifest.json`)
      const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as { vm: Rec }
      const uuid = await xapi.call<string>('VM.get_uuid', debian)
      manifest.vm = { ...manifest.vm, name: 'Debian', uuid }
      writeFileSync(manifestPath, JSON.stringify(manifest))
      const result = await run(runRestorePostExec, [config()])
      expect(result.code).toBe(5)
      expect(result.text).toMatch(
        new RegExp(
          `^dpxen: ${file}: FAILED: ${file}: its manifest names VM Debian \\(${uuid}\\) but the file holds vm2 \\([0-9a-f-]{36}\\): .*restore refused; the pool is unchanged$`,
          'm',
        ),
      )
      expect(await diskHashes(sim.url, xapi, debian)).toEqual(before)
    }
  })

  it('says what it is doing while it verifies the files, before the import', async () => {
    const { config } = await setup(
      { mode: 'offline', vmName: ['big'], progressInterval: 0.05 },
      {
        demo: false,
        seed: {
          srs: [{ name: 'Local storage', type: 'ext', default: true, size: '1TiB' }],
          vms: [{ name: 'big', disks: [{ sr: 'Local storage', size: '384MiB', fill: 1 }] }],
        },
      },
    )
    expect((await run(runPreExec, [config()])).code).toBe(0)
    const result = await run(runRestorePostExec, [config()])
    expect(result.code).toBe(0)
    const verified = result.lines.findIndex((l) => /^dpxen: 127\.0\.0\.1_big\.xva: verified /.test(l))
    const ticks = result.lines
      .slice(0, verified)
      .filter((l) => /^dpxen: 127\.0\.0\.1_big\.xva: verifying, [\d.]+ MiB so far \([\d.]+ MB\/s\)$/.test(l))
    expect(ticks.length, result.text).toBeGreaterThan(0)
  })

  it('a failed import leaves the existing VM as it was (started again) and nothing behind', async () => {
    const { sim, xapi, config } = await setup({ mode: 'offline', vmName: ['Debian'] })
    const vm = await xapi.vmByName('Debian')
    const hashes = await diskHashes(sim.url, xapi, vm)
    await run(runPreExec, [config()])
    const vdis = (await xapi.call<string[]>('VDI.get_all')).length
    sim.faults.add('import-fail')
    const result = await run(runRestorePostExec, [config()])
    expect(result.code).toBe(5)
    expect(result.lines).toContain('dpxen: Debian: FAILED: import failed: VDI_IO_ERROR Device I/O errors')
    expect(await xapi.call<string[]>('VM.get_by_name_label', 'Debian')).toEqual([vm])
    expect(await xapi.call('VM.get_power_state', vm)).toBe('Running')
    expect(await diskHashes(sim.url, xapi, vm)).toEqual(hashes)
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdis)
  })

  it('online: a swap whose undo fails says so, keeps the VM halted and the journal; dpxen recover puts the old disks back', async () => {
    const { sim, xapi, config, backupDir } = await setup({ mode: 'online', vmName: ['Debian'] })
    const vm = await xapi.vmByName('Debian')
    const path = config()
    await run(runPreExec, [path])
    await damage(sim.url, xapi, vm)
    const damaged = await diskHashes(sim.url, xapi, vm)
    const layout = await vbdLayout(xapi, vm)
    const vdis = (await xapi.call<string[]>('VDI.get_all')).length
    // The second new disk cannot be attached, and neither can the old disks be put back.
    sim.faults.add('call-fail:VBD.create@2')
    const result = await run(runRestorePostExec, [path])
    expect(result.code).toBe(5)
    const warnings = result.lines.filter((l) => l.startsWith('dpxen: WARNING: Debian: could not put disk '))
    expect(warnings.length, result.text).toBe(2)
    expect(result.lines).toContainEqual(
      expect.stringMatching(
        /^dpxen: Debian: FAILED: .*INTERNAL_ERROR.*; putting the old disks back failed at position\(s\) 1, 0: run dpxen recover before starting Debian$/,
      ),
    )
    // Not started without its disks; the journal stays for the next run.
    expect(await xapi.call('VM.get_power_state', vm)).toBe('Halted')
    expect(existsSync(join(backupDir, '.dpxen-restore.json'))).toBe(true)

    sim.faults.clear()
    const recovered = await run(runDpxen, ['recover', path])
    expect(recovered.lines, recovered.text).toContain(
      'dpxen: recovered an interrupted restore: Debian put back as it was before the interrupted restore',
    )
    expect(await xapi.call('VM.get_power_state', vm)).toBe('Running')
    expect(await vbdLayout(xapi, vm)).toEqual(layout)
    expect(await diskHashes(sim.url, xapi, vm)).toEqual(damaged)
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdis)
    expect(existsSync(join(backupDir, '.dpxen-restore.json'))).toBe(false)
  })

  it('SIGTERM while the VM shuts down for a restore: stops at once, the VM keeps running, nothing is imported', async () => {
    const { sim, xapi, config, backupDir } = await setup({ mode: 'online', vmName: ['Debian'] })
    const vm = await xapi.vmByName('Debian')
    const path = config()
    await run(runPreExec, [path])
    const vdis = (await xapi.call<string[]>('VDI.get_all')).length
    sim.faults.add('shutdown-slow:60')
    const started = Date.now()
    const result = await run(runRestorePostExec, [path], { abortWhen: /^dpxen: Debian: shutting down/ })
    expect(result.code, result.text).toBe(130)
    // The guest would take a minute: the wait was given up, not sat out.
    expect(Date.now() - started).toBeLessThan(30_000)
    expect(await xapi.call('VM.get_power_state', vm)).toBe('Running')
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdis)
    expect(existsSync(join(backupDir, '.dpxen-restore.json'))).toBe(false)
  })

  it('names a requested VM that has no file', async () => {
    const { config, backupDir } = await setup({ mode: 'offline', vmName: ['vm2'] })
    await run(runPreExec, [config()])
    const result = await run(runRestorePostExec, [config({ vmName: ['vm2', 'ghost'] }, 'ghost.json')])
    expect(result.lines).toContain(
      `dpxen: ghost: FAILED: no offline backup file for ghost in ${backupDir}: select it in the Data Protector restore`,
    )
  })

  it('SIGTERM during the import: the executable removes what it imported, the VM is as it was, exit 130', async () => {
    const { sim, xapi, config } = await setup({ mode: 'online', vmName: ['Debian'] })
    const vm = await xapi.vmByName('Debian')
    const hashes = await diskHashes(sim.url, xapi, vm)
    const path = config()
    await run(runPreExec, [path])
    const vms = Object.keys(await records(xapi, 'VM')).sort()
    const vdis = (await xapi.call<string[]>('VDI.get_all')).length
    sim.faults.add('import-stall:30')
    const { result, stopMs } = await terminateWhen(RESTORE, [path], /restore started/, 600)
    expect(stopMs).toBeLessThan(10_000)
    expect(result.exitCode).toBe(130)
    expect(result.stdout).toMatch(/^dpxen: interrupted: stopped and cleaned up$/m)
    // The import task fails once the connection is gone; the simulator removes its objects.
    for (let i = 0; i < 50 && (await xapi.call<string[]>('VDI.get_all')).length !== vdis; i++)
      await new Promise((r) => setTimeout(r, 100))
    expect(Object.keys(await records(xapi, 'VM')).sort()).toEqual(vms)
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdis)
    expect(await xapi.call('VM.get_power_state', vm)).toBe('Running')
    expect(await diskHashes(sim.url, xapi, vm)).toEqual(hashes)
    expect(existsSync(path)).toBe(true)
  })
})
