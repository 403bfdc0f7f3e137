// A VM made again from its incremental chain: the run's VM metadata (saved with every run) over
// the disks rebuilt from the chain. Real hooks in process against the three-host xapi-sim.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runPostExec } from '../../src/backup/post.js'
import { runPreExec } from '../../src/backup/run.js'
import { runDpxen } from '../../src/cli/dpxen.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import type { ChainManifest } from '../../src/staging/chain.js'
import { run, tempDir } from '../helpers/hooks.js'
import { addVtpm, diskHashes, guestWrites, loseVm, macs } from '../helpers/pool.js'
import { world } from '../helpers/world.js'

const TPM = Buffer.from('the sealed BitLocker key of a Windows 11 guest').toString('base64')

/** Three runs (a full and two incrementals), each run's files kept apart, and the point at run 1. */
async function threeRuns(extra: Record<string, unknown> = {}) {
  const w = await world({ mode: 'online', vmName: ['Debian'], incremental: true, ...extra })
  mkdirSync(w.backupDir)
  const vm = await w.xapi.vmByName('Debian')
  await addVtpm(w.xapi, vm, TPM)
  const kept = tempDir()
  const points: { run: string; hashes: string[] }[] = []
  for (const seed of ['full', 'inc-1', 'inc-2']) {
    if (seed !== 'full') await guestWrites(w.sim, w.xapi, vm, seed, 0.25)
    const hashes = await diskHashes(w.sim.url, w.xapi, vm)
    const pre = await run(runPreExec, [w.config])
    expect(pre.code, pre.text).toBe(0)
    const staged = readdirSync(w.backupDir).filter((n) => !n.startsWith('.'))
    expect(staged.filter((n) => n.endsWith('.metadata.tar'))).toHaveLength(1)
    const manifest = staged.find((n) => n.endsWith('.chain.json'))!
    const m = JSON.parse(readFileSync(join(w.backupDir, manifest), 'utf8')) as ChainManifest
    expect(m.vmMetadata?.vtpm).toBe(true)
    for (const f of staged) copyFileSync(join(w.backupDir, f), join(kept, f))
    expect((await run(runPostExec, [w.config])).code).toBe(0)
    points.push({ run: m.run, hashes })
  }
  /** Puts back the files of runs 0..n, as Data Protector's restore of run n's session does. */
  const putBack = (n: number): void => {
    for (const f of readdirSync(kept))
      if (points.slice(0, n + 1).some((p) => f.includes(`_${p.run}`)))
        copyFileSync(join(kept, f), join(w.backupDir, f))
  }
  return { ...w, vm, points, putBack }
}

describe('a VM made again from its incremental chain', () => {
  it('the VM deleted: made again from a mid-chain point with its uuid, MACs, vTPM and every disk byte for byte', async () => {
    const w = await threeRuns({ restore: { startAfterRestore: true } })
    const uuid = await w.xapi.call<string>('VM.get_uuid', w.vm)
    const addresses = await macs(w.xapi, w.vm)
    await loseVm(w.xapi, w.vm)
    w.putBack(1)
    const listed = await run(runDpxen, ['list', w.backupDir])
    expect(listed.text).toMatch(
      /Debian: restorable to run \S+ \(\S+ > \S+\); the whole VM with its vTPM, made again if it is gone/,
    )
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    expect(restore.text).toMatch(
      /Debian: made again from run \S+ \(a full and 1 incremental run\(s\)\): it no longer existed; uuid and MAC addresses kept, its vTPM, 2 disk\(s\) on SR "[^"]+", started/,
    )
    const made = await w.xapi.vmByName('Debian')
    expect(await w.xapi.call('VM.get_uuid', made)).toBe(uuid)
    expect(await macs(w.xapi, made)).toEqual(addresses)
    expect(await diskHashes(w.sim.url, w.xapi, made)).toEqual(w.points[1]!.hashes)
    const [vtpm] = await w.xapi.call<string[]>('VM.get_VTPMs', made)
    expect(await w.xapi.call('VTPM.get_contents', vtpm)).toBe(TPM)
    expect(await w.xapi.call('VM.get_power_state', made)).toBe('Running')
    expect(readdirSync(w.backupDir).filter((n) => !n.startsWith('.'))).toEqual([])

    // The next night: the rebuilt disks are other disks than the base's, so a new chain.
    const next = await run(runPreExec, [w.config])
    expect(next.code, next.text).toBe(0)
    expect(next.text).toMatch(/Debian: full run \(disk \d+ is another disk than at run/)
  })

  it('restoreAs: copy: a new VM beside the original, new uuid and MACs, halted, the point on its disks; the original untouched', async () => {
    const w = await threeRuns({ restore: { restoreAs: 'copy', copyName: '{name} as of {date}' } })
    const now = await diskHashes(w.sim.url, w.xapi, w.vm)
    const addresses = await macs(w.xapi, w.vm)
    const vdis = (await w.xapi.call<string[]>('VDI.get_all')).length
    w.putBack(1)
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    expect(restore.text).toMatch(
      /Debian: made as a copy, "Debian as of [^"]+" \(uuid \S+, new MAC addresses, its vTPM, halted\)/,
    )
    const all = await w.xapi.call<Record<string, Record<string, unknown>>>('VM.get_all_records')
    const [ref] = Object.entries(all).find(([, r]) => String(r.name_label).startsWith('Debian as of'))!
    expect(await w.xapi.call('VM.get_uuid', ref)).not.toBe(await w.xapi.call('VM.get_uuid', w.vm))
    expect((await macs(w.xapi, ref)).some((m) => addresses.includes(m))).toBe(false)
    expect(await diskHashes(w.sim.url, w.xapi, ref)).toEqual(w.points[1]!.hashes)
    expect(await w.xapi.call('VM.get_power_state', ref)).toBe('Halted')
    const [vtpm] = await w.xapi.call<string[]>('VM.get_VTPMs', ref)
    expect(await w.xapi.call('VTPM.get_contents', vtpm)).toBe(TPM)
    // The original: running, its disks as they were, nothing of its removed.
    expect(await w.xapi.call('VM.get_power_state', w.vm)).toBe('Running')
    expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(now)
    expect((await w.xapi.call<string[]>('VDI.get_all')).length).toBe(vdis + 2)
  })

  it('onto the existing VM: its disks and its vTPM as at the point, the vTPM changed since put back', async () => {
    const w = await threeRuns()
    const [vtpm] = await w.xapi.call<string[]>('VM.get_VTPMs', w.vm)
    await w.xapi.call('VM.clean_shutdown', w.vm)
    await w.xapi.call('VTPM.set_contents', vtpm, Buffer.from('resealed since').toString('base64'))
    await w.xapi.call('VM.start', w.vm, false, false)
    await guestWrites(w.sim, w.xapi, w.vm, 'since', 0.5)
    w.putBack(1)
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    expect(restore.text).toMatch(/Debian: its vTPM holds what it held at the backup/)
    expect(restore.text).toMatch(
      /Debian: 2 disk\(s\) rebuilt from run \S+ \(a full and 1 incremental run\(s\)\)/,
    )
    expect(await w.xapi.vmByName('Debian')).toBe(w.vm)
    expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(w.points[1]!.hashes)
    expect(await w.xapi.call('VM.get_VTPMs', w.vm)).toEqual([vtpm])
    expect(await w.xapi.call('VTPM.get_contents', vtpm)).toBe(TPM)
    expect(await w.xapi.call('VM.get_power_state', w.vm)).toBe('Running')
  })

  it.each(['.metadata.tar', '.vhd'])(
    'a file of the point that Data Protector did not put back (%s): one line naming it and what to restore, the pool unchanged',
    async (suffix) => {
      const w = await threeRuns()
      const before = await diskHashes(w.sim.url, w.xapi, w.vm)
      const vdis = (await w.xapi.call<string[]>('VDI.get_all')).length
      w.putBack(1)
      const lost = readdirSync(w.backupDir).find(
        (n) => n.includes(`_${w.points[1]!.run}`) && n.endsWith(suffix),
      )!
      rmSync(join(w.backupDir, lost))
      const restore = await run(runRestorePostExec, [w.config])
      expect(restore.code).not.toBe(0)
      expect(restore.text).toContain(
        `Debian: FAILED: ${lost} (run ${w.points[1]!.run}) is not in backupDir: restore that run's whole session with Data Protector`,
      )
      expect(restore.text).not.toMatch(/ENOENT|\n\s+at /)
      expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(before)
      expect((await w.xapi.call<string[]>('VDI.get_all')).length).toBe(vdis)
    },
  )
})
