// An incremental chain is only as good as its runs all holding the same disks at the same sizes.
// A disk grown between two runs (VDI.resize, as an administrator grows it) must start a new
// chain with a line saying why, and that run must restore byte for byte at the new size; xapi
// itself would have made a delta against the smaller base (vhd-tool compares no sizes).
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runPostExec } from '../../src/backup/post.js'
import { runPreExec } from '../../src/backup/run.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import { deltaRefusal, type VmPlan } from '../../src/backup/select.js'
import { run, tempDir } from '../helpers/hooks.js'
import { attachDisk, diskHashes, guestWrites, snapshots } from '../helpers/pool.js'
import type { TestClient } from '../helpers/rpc.js'
import { readVhd } from '../helpers/vhd.js'
import { world } from '../helpers/world.js'

const MiB = 1024 * 1024

/** The VDI at a VM's disk position. */
async function diskAt(xapi: TestClient, vm: string, userdevice: string): Promise<string> {
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
    const rec = await xapi.call<Record<string, unknown>>('VBD.get_record', vbd)
    if (rec.type === 'Disk' && rec.userdevice === userdevice) return String(rec.VDI)
  }
  throw new Error(`no disk at ${userdevice}`)
}

/** One running VM of 4 MiB named `name`, its disk on `sr`: "Local" (ext) or "GFS2" (gfs2). */
function oneVmWorld(name: string, sr: 'Local' | 'GFS2') {
  const seed = {
    srs: [
      { name: 'Local', type: 'ext', default: true },
      { name: 'GFS2', type: 'gfs2', shared: true },
    ],
    vms: [{ name, powerState: 'Running' as const, disks: [{ sr, size: '4MiB', fill: 0.5 }] }],
  }
  return world({ mode: 'online', vmName: [name], incremental: true }, { seed, demo: false })
}

describe('chain breaks', () => {
  it('a disk grown between incremental runs: a new chain, said in a line; that run restores byte for byte at the new size', async () => {
    const w = await world({ mode: 'online', vmName: ['Debian'], incremental: true })
    mkdirSync(w.backupDir)
    const vm = await w.xapi.vmByName('Debian')
    for (const seed of ['full', 'one']) {
      if (seed !== 'full') await guestWrites(w.sim, w.xapi, vm, seed, 0.25)
      const pre = await run(runPreExec, [w.config])
      expect(pre.code, pre.text).toBe(0)
      expect((await run(runPostExec, [w.config])).code).toBe(0)
    }
    const vdi = await diskAt(w.xapi, vm, '0')
    const was = Number(await w.xapi.call<string>('VDI.get_virtual_size', vdi))
    // As xapi: not while the VM runs, never smaller; grown, the size is rounded to a VHD block.
    expect(await w.xapi.failure('VDI.resize', vdi, String(2 * was))).toEqual(['VDI_IN_USE', vdi, 'resize'])
    await w.xapi.call('VM.clean_shutdown', vm)
    expect(await w.xapi.failure('VDI.resize', vdi, String(was - MiB))).toEqual([
      'SR_BACKEND_FAILURE_79',
      '',
      'VDI Invalid size [opterr=shrinking not allowed]',
      '',
    ])
    await w.xapi.call('VDI.resize', vdi, String(2 * was + 1))
    const grown = Number(await w.xapi.call<string>('VDI.get_virtual_size', vdi))
    expect(grown).toBe(2 * was + 2 * MiB)
    await w.xapi.call('VM.start', vm, false, false)
    await guestWrites(w.sim, w.xapi, vm, 'after-growth', 0.25)
    const hashes = await diskHashes(w.sim.url, w.xapi, vm)

    const pre = await run(runPreExec, [w.config])
    expect(pre.code, pre.text).toBe(0)
    expect(pre.text).toMatch(
      new RegExp(`Debian: full run \\(disk 0 changed size since run \\S+ \\(${was} to ${grown} bytes\\)\\)`),
    )
    const kept = tempDir()
    const files = readdirSync(w.backupDir).filter((n) => !n.startsWith('.'))
    for (const f of files) copyFileSync(join(w.backupDir, f), join(kept, f))
    expect((await run(runPostExec, [w.config])).code).toBe(0)
    // The new chain's full of disk 0 holds the whole grown disk.
    const sizes = files.filter((f) => f.endsWith('.vhd')).map((f) => readVhd(readFileSync(join(kept, f))))
    expect(sizes.map((v) => [v.type, v.size])).toContainEqual([3, grown])
    // One base: the new chain's; the old chain's went when the new one was settled.
    expect((await snapshots(w.xapi)).length).toBe(1)

    await guestWrites(w.sim, w.xapi, vm, 'damage', 1)
    for (const f of files) copyFileSync(join(kept, f), join(w.backupDir, f))
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    const again = await w.xapi.vmByName('Debian')
    expect(await diskHashes(w.sim.url, w.xapi, again)).toEqual(hashes)
    expect(Number(await w.xapi.call<string>('VDI.get_virtual_size', await diskAt(w.xapi, again, '0')))).toBe(
      grown,
    )
    rmSync(kept, { recursive: true, force: true })
  })

  it('xapi-sim, as vhd-tool: a delta against a smaller base is made, with the grown disk own size', async () => {
    const w = await world({ mode: 'online', vmName: ['Debian'] })
    const vm = await w.xapi.vmByName('Debian')
    const vdi = await diskAt(w.xapi, vm, '0')
    const snap = await w.xapi.call<string>('VM.snapshot', vm, 'base')
    const baseVdi = await diskAt(w.xapi, snap, '0')
    await w.xapi.call('VM.clean_shutdown', vm)
    const was = Number(await w.xapi.call<string>('VDI.get_virtual_size', vdi))
    await w.xapi.call('VDI.resize', vdi, String(was + 4 * MiB))
    const res = await fetch(
      `${w.sim.url}/export_raw_vdi?session_id=${w.xapi.session}&vdi=${vdi}&format=vhd&base=${baseVdi}`,
    )
    expect(res.status).toBe(200)
    const vhd = readVhd(Buffer.from(await res.arrayBuffer()))
    expect(vhd.type).toBe(4)
    expect(vhd.size).toBe(was + 4 * MiB)
  })

  it('a VM on GFS2 (no VHD deltas there): backed up whole as an XVA at every run, said each time, no base kept; it restores', async () => {
    const w = await oneVmWorld('thin', 'GFS2')
    const vm = await w.xapi.vmByName('thin')
    const vdi = await diskAt(w.xapi, vm, '0')
    // As xapi: a delta of a disk that no VHD backs fails after the 200, the task says why.
    const task = await w.xapi.call<string>('task.create', 'delta', '')
    const delta = await fetch(
      `${w.sim.url}/export_raw_vdi?session_id=${w.xapi.session}&task_id=${task}&vdi=${vdi}&format=vhd&base=${vdi}`,
    )
    expect(delta.status).toBe(200)
    await delta.arrayBuffer()
    expect(await w.xapi.call('task.get_error_info', task)).toEqual([
      'INTERNAL_ERROR',
      'Cannot compute differences on non-VHD images',
    ])
    const kept = tempDir()
    let hashes: string[] = []
    for (const seedName of ['one', 'two']) {
      await guestWrites(w.sim, w.xapi, vm, seedName, 0.25)
      hashes = await diskHashes(w.sim.url, w.xapi, vm)
      const pre = await run(runPreExec, [w.config])
      expect(pre.code, pre.text).toBe(0)
      expect(pre.text).toMatch(
        /thin: disk 0 of thin is on SR "GFS2" \(gfs2, whose disks are QCOW2 images\), where xapi cannot compute VHD deltas: backed up whole as an XVA/,
      )
      const files = readdirSync(w.backupDir).filter((n) => !n.startsWith('.'))
      expect(files.filter((f) => f.endsWith('.vhd'))).toEqual([])
      expect(files.filter((f) => f.endsWith('.xva'))).toHaveLength(1)
      rmSync(kept, { recursive: true, force: true })
      mkdirSync(kept)
      for (const f of files) copyFileSync(join(w.backupDir, f), join(kept, f))
      expect((await run(runPostExec, [w.config])).code).toBe(0)
      expect(await snapshots(w.xapi)).toEqual([])
    }
    await guestWrites(w.sim, w.xapi, vm, 'damage', 1)
    for (const f of readdirSync(kept)) copyFileSync(join(kept, f), join(w.backupDir, f))
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    expect(await diskHashes(w.sim.url, w.xapi, await w.xapi.vmByName('thin'))).toEqual(hashes)
  })

  it('a chained VM whose disk moves to GFS2: whole from then on, and its base snapshot removed', async () => {
    const w = await oneVmWorld('mover', 'Local')
    const vm = await w.xapi.vmByName('mover')
    expect((await run(runPreExec, [w.config])).text).toMatch(/mover: full run \(no base snapshot/)
    expect((await run(runPostExec, [w.config])).code).toBe(0)
    expect(await snapshots(w.xapi)).toHaveLength(1)
    // The administrator moves the disk: a copy on GFS2 in its place, the old one gone.
    await w.xapi.call('VM.clean_shutdown', vm)
    const old = await diskAt(w.xapi, vm, '0')
    const [gfs2] = await w.xapi.call<string[]>('SR.get_by_name_label', 'GFS2')
    const moved = await w.xapi.call<string>('VDI.copy', old, gfs2)
    for (const vbd of await w.xapi.call<string[]>('VDI.get_VBDs', old)) await w.xapi.call('VBD.destroy', vbd)
    await w.xapi.call('VDI.destroy', old)
    await attachDisk(w.xapi, vm, moved, '0', true)
    await w.xapi.call('VM.start', vm, false, false)
    const pre = await run(runPreExec, [w.config])
    expect(pre.code, pre.text).toBe(0)
    expect(pre.text).toMatch(/mover: disk 0 of mover is on SR "GFS2" .*: backed up whole as an XVA/)
    expect(pre.text).toMatch(/mover: removed its base snapshot: a whole backup needs none/)
    expect((await run(runPostExec, [w.config])).code).toBe(0)
    expect(await snapshots(w.xapi)).toEqual([])
  })

  it('deltaRefusal names a QCOW2 or raw image and a disk over 2040 GiB; a VHD on ext passes', () => {
    const disk = { userdevice: '1', srName: 'Local', srType: 'ext', imageFormat: '', virtualSize: 8 * MiB }
    const plan = (d: Partial<typeof disk>) =>
      ({ name: 'big', disks: [{ ...disk, ...d }] }) as unknown as VmPlan
    expect(deltaRefusal(plan({}))).toBeUndefined()
    expect(deltaRefusal(plan({ imageFormat: 'qcow2' }))).toBe(
      'disk 1 of big is a qcow2 image, not a VHD, of which xapi cannot compute VHD deltas',
    )
    expect(deltaRefusal(plan({ virtualSize: 2041 * 1024 * MiB }))).toBe(
      'disk 1 of big is 2041 GiB, over the 2040 GiB xapi exports as a VHD (VDI_TOO_LARGE)',
    )
    expect(deltaRefusal(plan({ virtualSize: 2040 * 1024 * MiB }))).toBeUndefined()
  })

  it('a delta the host refuses for a reason its records did not show: that run backed up whole, in a line, and it restores; the next run a new chain', async () => {
    const w = await oneVmWorld('hidden', 'Local')
    const vm = await w.xapi.vmByName('hidden')
    expect((await run(runPreExec, [w.config])).code).toBe(0)
    expect((await run(runPostExec, [w.config])).code).toBe(0)
    w.sim.faults.add('delta-refused')
    await guestWrites(w.sim, w.xapi, vm, 'one', 0.25)
    const hashes = await diskHashes(w.sim.url, w.xapi, vm)
    const pre = await run(runPreExec, [w.config])
    expect(pre.code, pre.text).toBe(0)
    expect(pre.text).toMatch(
      /hidden: the host could not compute a delta of its disks \(INTERNAL_ERROR Cannot compute differences on non-VHD images\), which its records did not show: backed up whole as an XVA \(as mode online\), this run; the next run tries a new chain/,
    )
    const files = readdirSync(w.backupDir).filter((n) => !n.startsWith('.'))
    expect(files.filter((f) => !f.endsWith('.xva') && !f.endsWith('.manifest.json'))).toEqual([])
    expect(files).toHaveLength(2)
    // Only the XVA's own snapshot was made and removed: no delta's snapshot is left.
    expect(await snapshots(w.xapi)).toEqual([])
    await guestWrites(w.sim, w.xapi, vm, 'damage', 1)
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    expect(await diskHashes(w.sim.url, w.xapi, vm)).toEqual(hashes)
    w.sim.faults.clear('delta-refused')
    const next = await run(runPreExec, [w.config])
    expect(next.text).toMatch(/hidden: full run \(no base snapshot/)
  })

  it('a VM reverted to a snapshot older than the base: a new chain, said in a line (xapi repoints the base to the new disk, so only the VM tree tells); that run restores', async () => {
    const w = await oneVmWorld('reverted', 'Local')
    const vm = await w.xapi.vmByName('reverted')
    const before = await w.xapi.call<string>('VM.snapshot', vm, 'before the upgrade')
    for (const seed of ['one', 'two']) {
      await guestWrites(w.sim, w.xapi, vm, seed, 0.25)
      expect((await run(runPreExec, [w.config])).code).toBe(0)
      expect((await run(runPostExec, [w.config])).code).toBe(0)
    }
    await w.xapi.call('VM.revert', before)
    // As xapi: the disk is a clone of the snapshot's, and the base's disk a snapshot of it now.
    const disk = await diskAt(w.xapi, vm, '0')
    const [base] = (await snapshots(w.xapi)).filter((r) => String(r.name_label).startsWith('dpxen base'))
    const baseDisk = await diskAt(
      w.xapi,
      await w.xapi.call<string>('VM.get_by_uuid', String(base!.uuid)),
      '0',
    )
    expect(await w.xapi.call('VDI.get_snapshot_of', baseDisk)).toBe(disk)
    await w.xapi.call('VM.start', vm, false, false)
    await guestWrites(w.sim, w.xapi, vm, 'after', 0.1)
    const hashes = await diskHashes(w.sim.url, w.xapi, vm)
    const pre = await run(runPreExec, [w.config])
    expect(pre.code, pre.text).toBe(0)
    expect(pre.text).toMatch(/reverted: full run \(the VM was reverted to a snapshot taken before run \S+\)/)
    const kept = tempDir()
    for (const f of readdirSync(w.backupDir).filter((n) => !n.startsWith('.')))
      copyFileSync(join(w.backupDir, f), join(kept, f))
    expect((await run(runPostExec, [w.config])).code).toBe(0)
    // The next run is a delta again, and the new chain restores.
    expect((await run(runPreExec, [w.config])).text).toMatch(/reverted: incremental run 1 of chain/)
    expect((await run(runPostExec, [w.config])).code).toBe(0)
    await guestWrites(w.sim, w.xapi, vm, 'damage', 1)
    for (const f of readdirSync(kept)) copyFileSync(join(kept, f), join(w.backupDir, f))
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    expect(await diskHashes(w.sim.url, w.xapi, vm)).toEqual(hashes)
  })
})
