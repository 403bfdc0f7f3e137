// Incremental backups with changed block tracking (cbt: true) in Data Protector sessions on the
// pool of three hosts: the changed blocks read over NBD, the base kept with no data on the SR
// after each session, every point restored byte for byte; and each fallback said in a line, never a
// silent full and never a wrong delta. The faults of both delta paths (a base deleted, a read cut
// or stalled, SIGTERM mid-read) are test/reliability/incremental-faults.test.ts.
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { runRestoreSession } from '../../simulator/dp/restore.js'
import { runBackupSession } from '../../simulator/dp/session.js'
import { Store } from '../../simulator/dp/store.js'
import { OC_BASE_OF } from '../../src/pool/tags.js'
import { backupSpec } from '../helpers/dp.js'
import { run, terminateWhen } from '../helpers/hooks.js'
import { runPostExec } from '../../src/backup/post.js'
import { diskHashes, guestWrites, serveNbd } from '../helpers/pool.js'
import type { TestClient } from '../helpers/rpc.js'
import { world } from '../helpers/world.js'

const dist = fileURLToPath(new URL('../../dist/', import.meta.url))
const PRE_EXEC = join(dist, 'hooks', 'pre-exec.js')
const hook = (name: string, config: string): string =>
  `"${process.execPath}" "${join(dist, 'hooks', name)}" "${config}"`

type Rec = Record<string, unknown>

/** Every VDI dpxen keeps as a base, and every snapshot VM on the pool. */
async function kept(xapi: TestClient) {
  const vdis = Object.values(await xapi.call<Record<string, Rec>>('VDI.get_all_records')).filter(
    (r) => (r.other_config as Record<string, string>)[OC_BASE_OF],
  )
  const snapshotVms = Object.values(await xapi.call<Record<string, Rec>>('VM.get_all_records')).filter(
    (r) => r.is_a_snapshot === true,
  )
  return { vdis, snapshotVms }
}

async function cbtWorld(purpose: 'nbd' | 'insecure_nbd' | undefined, extra: Record<string, unknown> = {}) {
  const w = await world({ mode: 'online', vmName: ['Debian'], incremental: true, cbt: true, ...extra })
  mkdirSync(w.backupDir)
  if (purpose) await serveNbd(w.xapi, purpose)
  const store = new Store(join(w.dir, 'store'))
  const vm = await w.xapi.vmByName('Debian')
  const session = async () => {
    const backup = await runBackupSession(
      backupSpec(w.backupDir, {
        preExec: hook('pre-exec.js', w.config),
        postExec: hook('post-exec.js', w.config),
      }),
      { store },
    )
    const text = backup.messages.map((m) => m.text).join('\n')
    expect(backup.status, text).toBe('Completed')
    const files = backup.objects[0]!.files.map((f) => f.path.split('/').at(-1)!).filter(
      (f) => !f.startsWith('.'),
    )
    return { id: backup.id, text, files, hashes: await diskHashes(w.sim.url, w.xapi, vm) }
  }
  return { ...w, store, vm, session }
}

describe('incremental backups with changed block tracking (cbt)', () => {
  it('over TLS NBD: deltas of the changed blocks, no snapshot data between sessions, every point restored byte for byte', async () => {
    const w = await cbtWorld('nbd')
    const runs = []
    for (const [i, seed] of ['full', 'inc-1', 'inc-2'].entries()) {
      if (i > 0) await guestWrites(w.sim, w.xapi, w.vm, seed, 0.25)
      const hashes = await diskHashes(w.sim.url, w.xapi, w.vm)
      const run = await w.session()
      expect(run.hashes).toEqual(hashes)
      runs.push(run)
      if (i === 0) expect(run.text).toMatch(/Debian: changed block tracking enabled on disk\(s\) 0, 1/)
      else expect(run.text).toMatch(new RegExp(`Debian: incremental run ${i} of chain`))
      expect(run.text).not.toMatch(/nbd purpose|instead|a new chain/)
      // After the session: no snapshot VM, and the base's disks hold no data.
      const { vdis, snapshotVms } = await kept(w.xapi)
      expect(snapshotVms).toEqual([])
      expect(vdis).toHaveLength(2)
      for (const vdi of vdis) {
        expect(vdi.type).toBe('cbt_metadata')
        expect(Number(vdi.physical_utilisation)).toBe(0)
      }
    }
    // The second run's deltas hold the changed blocks only (a quarter of the chunks, in 2 MiB blocks).
    const second = runs[1]!
    expect(second.files.filter((f) => f.endsWith('.vhd'))).toHaveLength(2)

    // Every point, each from the sessions that make it, after the disks were damaged.
    for (const point of [2, 0, 1]) {
      await guestWrites(w.sim, w.xapi, w.vm, `damage-${point}`, 1)
      for (const [i, s] of runs.slice(0, point + 1).entries()) {
        const restore = await runRestoreSession({
          store: w.store,
          session: s.id,
          trees: s.files.map((f) => join(w.backupDir, f)),
          conflict: 'overwrite',
          ...(i === point ? { postExec: hook('restore-post-exec.js', w.config) } : {}),
        })
        expect(restore.status, restore.messages.map((m) => m.text).join('\n')).toBe('Completed')
      }
      expect(await diskHashes(w.sim.url, w.xapi, w.vm), `point ${point}`).toEqual(runs[point]!.hashes)
    }
  })

  it('no network with an NBD purpose: said in the run, the VHD export used, the base keeps its data', async () => {
    const w = await cbtWorld(undefined)
    await w.session()
    await guestWrites(w.sim, w.xapi, w.vm, 'inc-1', 0.25)
    const run = await w.session()
    expect(run.text).toMatch(
      /Debian: warning: no network of the pool has the nbd purpose: .*deltas come from the host's VHD export instead/,
    )
    expect(run.text).toMatch(
      /the base keeps its data on the SR until one has \(give the storage network the nbd purpose/,
    )
    const { snapshotVms } = await kept(w.xapi)
    expect(snapshotVms).toHaveLength(1)
  })

  it('CBT turned off under the snapshot (cbt-reset): a new chain, said in a line; the next run turns it on again and goes on', async () => {
    const w = await cbtWorld('insecure_nbd')
    await w.session()
    await guestWrites(w.sim, w.xapi, w.vm, 'inc-1', 0.25)
    w.sim.faults.add('cbt-reset')
    const run = await w.session()
    expect(run.text).toMatch(
      /Debian: warning: changed block tracking is off on disk 0 \(turned off, or reset by a storage migration\): exporting whole disks: a new chain/,
    )
    // The next run turns CBT on again and goes on from the new chain.
    await guestWrites(w.sim, w.xapi, w.vm, 'inc-2', 0.25)
    const after = await w.session()
    expect(after.text).toMatch(/changed block tracking enabled on disk\(s\) 0/)
    expect(after.text).toMatch(/Debian: incremental run 1 of chain/)
    // Its base, taken while CBT was off, kept its data: that one delta comes from the VHD export.
    expect(after.text).toMatch(
      /cannot compare disk 0 with the base .*deltas come from the host's VHD export instead/,
    )
  })

  it("SIGTERM while the host's storage hangs under an NBD read: exit 130 within seconds, the busy disks left tagged and said, removed by the next hook once the host lets them go", async () => {
    const w = await cbtWorld('nbd', { progressInterval: 0.2 })
    await w.session()
    await guestWrites(w.sim, w.xapi, w.vm, 'inc-1', 0.25)
    const before = await kept(w.xapi)
    const vdis = (await w.xapi.call<string[]>('VDI.get_all')).length
    // The read is blocked in the host's storage: it holds the snapshot's disk (attached to dom0)
    // for 8 s, client or not. Without a bound, the cleanup would wait out the hang.
    w.sim.faults.add('nbd-hang:8')
    const { result, stopMs } = await terminateWhen(
      PRE_EXEC,
      [w.config],
      /reading the changed blocks of disk 0 over NBD/,
      200,
    )
    expect(result.exitCode, `${result.signal} ${result.stdout}\n${result.stderr}`).toBe(130)
    expect(stopMs).toBeLessThan(6_000)
    expect(result.stdout).toMatch(
      /^dpxen: Debian: warning: the snapshot of Debian could not be removed: VDI\.destroy failed: VDI_IN_USE .*\(the next run, or dpxen recover, removes it\)$/m,
    )
    expect(result.stdout).toMatch(/^dpxen: interrupted: stopped and cleaned up$/m)
    // The snapshot's record is gone; its disks wait, tagged, beside the base.
    expect((await kept(w.xapi)).snapshotVms).toEqual([])
    expect((await w.xapi.call<string[]>('VDI.get_all')).length).toBeGreaterThan(vdis)
    // Once the storage answers, the next hook (Data Protector's post-exec) removes them.
    w.sim.faults.clear()
    const dom0Disks = async (): Promise<number> => {
      const vms = await w.xapi.call<Record<string, Rec>>('VM.get_all_records')
      return Object.values(await w.xapi.call<Record<string, Rec>>('VBD.get_all_records')).filter(
        (v) => vms[String(v.VM)]?.is_control_domain === true && v.type === 'Disk',
      ).length
    }
    for (let i = 0; i < 150 && (await dom0Disks()) > 0; i++) await new Promise((r) => setTimeout(r, 100))
    expect(await dom0Disks()).toBe(0)
    const post = await run(runPostExec, [w.config])
    // It reports the aborted backup (exit 5) and removes what it left.
    expect(post.code, post.text).toBe(5)
    expect(post.text).toMatch(/^dpxen: FAILED in the backup: Debian: interrupted$/m)
    expect(post.text).toMatch(/^dpxen: removed the leftover snapshot "disk Debian root" of an earlier run$/m)
    expect((await w.xapi.call<string[]>('VDI.get_all')).length).toBe(vdis)
    expect((await kept(w.xapi)).vdis.map((v) => v.uuid)).toEqual(before.vdis.map((v) => v.uuid))
    expect((await w.session()).text).toMatch(/Debian: incremental run 1 of chain/)
  })

  it('no licence for CBT: said once a run, the base keeps its data, deltas from the VHD export', async () => {
    const w = await cbtWorld('nbd')
    w.sim.faults.add('cbt-unlicensed')
    const run = await w.session()
    expect(run.text).toMatch(
      /Debian: warning: changed block tracking cannot be enabled on disk 0 \(LICENCE_RESTRICTION CBT\): this run keeps a base snapshot with its data, as without cbt/,
    )
    expect((await kept(w.xapi)).snapshotVms).toHaveLength(1)
  })
})
