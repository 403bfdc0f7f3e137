// The third reliability matrix, the cases that lost data: a disk detached or replaced by a
// bigger one between incremental runs, a clock stepped back, a clock that gives two runs the
// same time. (A copy restore of a chain, once refused, now makes a copy: chain-rebuild.test.ts.) Real hooks in process against xapi-sim on port 0.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { runPostExec } from '../../src/backup/post.js'
import { runPreExec } from '../../src/backup/run.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import { startVm } from '../../simulator/xapi/model/vmops.js'
import type { ChainManifest } from '../../src/staging/chain.js'
import { run, tempDir } from '../helpers/hooks.js'
import { attachDisk, diskHashes, guestWrites, newDisk } from '../helpers/pool.js'
import { world } from '../helpers/world.js'

async function chainWorld(extra: Record<string, unknown> = {}) {
  const w = await world({ mode: 'online', vmName: ['Debian'], incremental: true, ...extra })
  mkdirSync(w.backupDir)
  const kept = tempDir()
  const vm = await w.xapi.vmByName('Debian')
  const backUp = async (): Promise<string> => {
    const pre = await run(runPreExec, [w.config])
    expect(pre.code, pre.text).toBe(0)
    for (const f of readdirSync(w.backupDir).filter((n) => !n.startsWith('.')))
      copyFileSync(join(w.backupDir, f), join(kept, f))
    await run(runPostExec, [w.config])
    return pre.text
  }
  const manifests = (): ChainManifest[] =>
    readdirSync(kept)
      .filter((n) => n.endsWith('.chain.json'))
      .map((n) => JSON.parse(readFileSync(join(kept, n), 'utf8')) as ChainManifest)
  const putBack = (): void => {
    for (const f of readdirSync(kept)) copyFileSync(join(kept, f), join(w.backupDir, f))
  }
  /** The VBD at a position of the VM. */
  const vbdAt = async (position: string): Promise<string> => {
    for (const vbd of await w.xapi.call<string[]>('VM.get_VBDs', vm))
      if ((await w.xapi.call('VBD.get_userdevice', vbd)) === position) return vbd
    throw new Error(`no VBD at ${position}`)
  }
  const detach = async (position: string): Promise<void> => {
    const vbd = await vbdAt(position)
    await w.xapi.call('VBD.unplug', vbd)
    await w.xapi.call('VBD.destroy', vbd)
  }
  return { ...w, kept, vm, backUp, manifests, putBack, vbdAt, detach }
}

afterEach(() => {
  vi.useRealTimers()
})

describe('reliability, third matrix: data that was lost', () => {
  it('a disk detached between runs: the next run is a full, and that point restores', async () => {
    const w = await chainWorld()
    await w.backUp()
    await w.detach('1')
    const text = await w.backUp()
    expect(text).toMatch(/Debian: full run \(the disk\(s\) at position\(s\) 1 were removed since run /)
    const now = await diskHashes(w.sim.url, w.xapi, w.vm)
    await guestWrites(w.sim, w.xapi, w.vm, 'damage', 0.5)
    w.putBack()
    // Only the newest chain's files are the point: the older full is followed by it.
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(now)
  })

  it('a disk replaced by a bigger one: the next run is a full, not a failure every night, and the point after it restores', async () => {
    const w = await chainWorld()
    await w.backUp()
    await w.detach('1')
    const sr = await w.xapi.call<string>(
      'VDI.get_SR',
      await w.xapi.call<string>('VBD.get_VDI', await w.vbdAt('0')),
    )
    const vdi = await newDisk(w.xapi, sr, 16 * 1024 * 1024, 'bigger')
    const vbd = await attachDisk(w.xapi, w.vm, vdi, '1')
    await w.xapi.call('VBD.plug', vbd)
    let hashes: string[] = []
    for (let i = 0; i < 2; i++) {
      await guestWrites(w.sim, w.xapi, w.vm, `after-${i}`, 0.25)
      hashes = await diskHashes(w.sim.url, w.xapi, w.vm)
      const text = await w.backUp()
      expect(text).toMatch(i === 0 ? /Debian: full run \(disk 1 / : /Debian: incremental run 1 of chain/)
    }
    await guestWrites(w.sim, w.xapi, w.vm, 'damage', 1)
    w.putBack()
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(hashes)
  })

  it('a disk added between runs: the next run is a full naming the position, and that point restores with the new disk', async () => {
    const w = await chainWorld()
    await w.backUp()
    const sr = await w.xapi.call<string>(
      'VDI.get_SR',
      await w.xapi.call<string>('VBD.get_VDI', await w.vbdAt('0')),
    )
    const vdi = await newDisk(w.xapi, sr, 4 * 1024 * 1024, 'added')
    await w.xapi.call('VBD.plug', await attachDisk(w.xapi, w.vm, vdi, '2'))
    await guestWrites(w.sim, w.xapi, w.vm, 'with-a-third-disk', 0.5)
    const now = await diskHashes(w.sim.url, w.xapi, w.vm)
    expect(now).toHaveLength(3)
    expect(await w.backUp()).toMatch(/Debian: full run \(the base has no disk at position\(s\) 2\)/)
    await guestWrites(w.sim, w.xapi, w.vm, 'damage', 1)
    w.putBack()
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(now)
  })

  it('the clock stepped back two hours between runs: the restore takes the newer run, by the chain', async () => {
    const w = await chainWorld()
    vi.useFakeTimers({ toFake: ['Date'], now: new Date('2026-12-02T10:00:00Z') })
    await w.backUp()
    await guestWrites(w.sim, w.xapi, w.vm, 'newer', 0.5)
    vi.setSystemTime(new Date('2026-12-02T08:00:00Z'))
    await w.backUp()
    vi.useRealTimers()
    const [a, b] = w.manifests().sort((x, y) => x.position - y.position)
    expect(b!.parentRun).toBe(a!.run)
    expect(b!.run > a!.run).toBe(true) // later than its parent by construction
    const now = await diskHashes(w.sim.url, w.xapi, w.vm)
    await guestWrites(w.sim, w.xapi, w.vm, 'damage', 0.5)
    w.putBack()
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    expect(restore.text).toContain(`rebuilt from run ${b!.run}`)
    expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(now)
  })

  it('a frozen clock: two runs get distinct ids, the second later than its parent', async () => {
    const w = await chainWorld()
    vi.useFakeTimers({ toFake: ['Date'], now: new Date('2026-12-02T10:00:00Z') })
    await w.backUp()
    await guestWrites(w.sim, w.xapi, w.vm, 'one', 0.5)
    vi.setSystemTime(new Date('2026-12-02T10:00:00Z'))
    await w.backUp()
    vi.useRealTimers()
    const [a, b] = w.manifests().sort((x, y) => x.position - y.position)
    expect(b!.run).not.toBe(a!.run)
    expect(b!.parentRun).toBe(a!.run)
    expect(new Set(readdirSync(w.kept)).size).toBe(readdirSync(w.kept).length)
    expect(readdirSync(w.kept).filter((n) => n.includes(b!.run)).length).toBeGreaterThan(1)
  })
})

describe('reliability, third matrix: the pool left changed', () => {
  it('a chain manifest whose virtualSize disagrees with the VHD footer is refused before anything changes', async () => {
    const w = await chainWorld()
    await w.backUp()
    const name = readdirSync(w.kept).find((n) => n.endsWith('.chain.json'))!
    const manifest = JSON.parse(readFileSync(join(w.kept, name), 'utf8')) as ChainManifest
    manifest.disks[0]!.virtualSize = 64 * 1024 ** 3
    writeFileSync(join(w.kept, name), JSON.stringify(manifest))
    const now = await diskHashes(w.sim.url, w.xapi, w.vm)
    const vdis = (await w.xapi.call<string[]>('VDI.get_all')).length
    w.putBack()
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code).not.toBe(0)
    expect(restore.text).toMatch(
      /holds a disk of \d+ bytes in \d+ block\(s\), its chain manifest says 68719476736 in \d+: the manifest was changed; nothing was restored/,
    )
    expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(now)
    expect((await w.xapi.call<string[]>('VDI.get_all')).length).toBe(vdis)
    expect(await w.xapi.call('VM.get_power_state', w.vm)).toBe('Running')
  })

  it('a VM someone starts while it is stopped for an offline backup: the export failure is said, not a false start failure', async () => {
    const w = await world({ mode: 'offline', vmName: ['Debian'] })
    const vm = await w.xapi.vmByName('Debian')
    const db = w.sim.context.db
    // Someone starts it the moment it halts: before dpxen's export can lock it.
    const someone = (async () => {
      for (let i = 0; i < 1000; i++) {
        await db.waitForChange(10_000)
        if (db.get('VM', vm)?.power_state === 'Halted') return startVm(w.sim.context, vm)
      }
    })()
    const pre = await run(runPreExec, [w.config])
    await someone
    expect(pre.code).toBe(5)
    const failed = pre.lines.find((l) => l.startsWith('dpxen: Debian: FAILED: '))
    expect(failed, pre.text).toMatch(/VM_BAD_POWER_STATE|running/i)
    expect(failed).not.toMatch(/could not be started again|start it by hand/)
    expect(pre.text).toMatch(
      /Debian: was started by someone else while it was stopped for dpxen \(now Running\): left as it is/,
    )
    expect(await w.xapi.call('VM.get_power_state', vm)).toBe('Running')
  })
})
