// Data Protector's own schedule driving the chains (followDataProtectorLevel): the session's
// level, which Data Protector gives its session scripts in MODE, decides Full or Incremental;
// fullEvery no longer does. A level-N incremental (incremental1…) is a delta against the VM's
// last run of a lower level, whose base snapshot stays on the host for it, since its restore in
// Data Protector holds only the last backup of a lower level and itself.
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { runRestoreSession } from '../../simulator/dp/restore.js'
import { runBackupSession } from '../../simulator/dp/session.js'
import { Store } from '../../simulator/dp/store.js'
import { backupSpec } from '../helpers/dp.js'
import { baseRuns, diskHashes, guestWrites, serveNbd, snapshots } from '../helpers/pool.js'
import { world } from '../helpers/world.js'

const dist = fileURLToPath(new URL('../../dist/', import.meta.url))
const hook = (name: string, config: string): string =>
  `"${process.execPath}" "${join(dist, 'hooks', name)}" "${config}"`

describe("Data Protector's backup level drives the chain", () => {
  it('Full, Incremental, Incremental past fullEvery, Full, Incremental 1: each run as its level asks, the last restorable from its Data Protector restore chain', async () => {
    const w = await world({
      mode: 'online',
      vmName: ['Debian'],
      incremental: true,
      followDataProtectorLevel: true,
      fullEvery: 2,
    })
    mkdirSync(w.backupDir)
    const store = new Store(join(w.dir, 'store'))
    const vm = await w.xapi.vmByName('Debian')
    const spec = backupSpec(w.backupDir, {
      preExec: hook('pre-exec.js', w.config),
      postExec: hook('post-exec.js', w.config),
    })
    const schedule: [string, RegExp][] = [
      ['full', /Debian: full run \(no base snapshot on the host/],
      [
        'incremental',
        /Debian: incremental run 1 of chain \S+, against run \S+ \(Data Protector's session is an Incremental\)/,
      ],
      // fullEvery 2 would make this one a full: Data Protector's level decides instead.
      [
        'incremental',
        /Debian: incremental run 2 of chain \S+, against run \S+ \(Data Protector's session is an Incremental\)/,
      ],
      ['full', /Debian: full run \(Data Protector's session is a Full \(MODE=full\)\)/],
      [
        'incremental1',
        /Debian: incremental run 1 of chain \S+, against run \S+ \(Data Protector's session is an Incremental 1: against its last run of a lower level\)/,
      ],
    ]
    let last = { id: '', files: [] as string[], hashes: [] as string[] }
    for (const [i, [level, line]] of schedule.entries()) {
      if (i > 0) await guestWrites(w.sim, w.xapi, vm, `day-${i}`, 0.2)
      const hashes = await diskHashes(w.sim.url, w.xapi, vm)
      const backup = await runBackupSession(spec, { store, level })
      const text = backup.messages.map((m) => m.text).join('\n')
      expect(backup.status, text).toBe('Completed')
      expect(text).toMatch(line)
      const files = backup.objects[0]!.files.map((f) => f.path.split('/').at(-1)!).filter(
        (f) => !f.startsWith('.'),
      )
      last = { id: backup.id, files, hashes }
    }
    // One restore of the Incremental 1 session (its chain: the Full and itself) brings the VM back.
    await guestWrites(w.sim, w.xapi, vm, 'damage', 1)
    const restore = await runRestoreSession({
      store,
      session: last.id,
      trees: [],
      conflict: 'overwrite',
      postExec: hook('restore-post-exec.js', w.config),
    })
    expect(restore.status, restore.messages.map((m) => m.text).join('\n')).toBe('Completed')
    expect(await diskHashes(w.sim.url, w.xapi, vm)).toEqual(last.hashes)
  })

  it('without followDataProtectorLevel, MODE is ignored and fullEvery decides', async () => {
    const w = await world({ mode: 'online', vmName: ['Debian'], incremental: true, fullEvery: 2 })
    mkdirSync(w.backupDir)
    const store = new Store(join(w.dir, 'store'))
    const spec = backupSpec(w.backupDir, {
      preExec: hook('pre-exec.js', w.config),
      postExec: hook('post-exec.js', w.config),
    })
    const lines: string[] = []
    for (const level of ['incremental', 'incremental', 'incremental']) {
      const backup = await runBackupSession(spec, { store, level })
      expect(backup.status).toBe('Completed')
      lines.push(backup.messages.map((m) => m.text).find((t) => /Debian: (full|incremental) run/.test(t))!)
    }
    expect(lines[0]).toMatch(/full run \(no base snapshot/)
    expect(lines[1]).toMatch(/incremental run 1 of chain \S+, against run \S+$/)
    expect(lines[2]).toMatch(/full run \(the chain has 2 run\(s\) \(fullEvery 2\)\)/)
  })

  it.each([
    { path: 'VHD deltas', cbt: false },
    { path: 'CBT over NBD, bases without data', cbt: true },
  ])(
    'leveled Incrementals ($path): each a delta against the last run of a lower level, one base kept per level, any point one restore away',
    async ({ cbt }) => {
      const w = await world({
        mode: 'online',
        vmName: ['Debian'],
        incremental: true,
        followDataProtectorLevel: true,
        cbt,
      })
      mkdirSync(w.backupDir)
      if (cbt) await serveNbd(w.xapi)
      const store = new Store(join(w.dir, 'store'))
      const vm = await w.xapi.vmByName('Debian')
      const spec = backupSpec(w.backupDir, {
        preExec: hook('pre-exec.js', w.config),
        postExec: hook('post-exec.js', w.config),
      })
      const runs: { id: string; run: string; hashes: string[] }[] = []
      const against = (i: number): string => runs[i]!.run
      // Full, Incr1, Incr2, Incr1, Incr3 (which runs as an Incr2: no Incr2 since the last Incr1).
      const schedule: [string, (() => RegExp) | RegExp, number][] = [
        ['full', /Debian: full run \(no base snapshot/, 1],
        [
          'incremental1',
          () =>
            new RegExp(
              `incremental run 1 of chain \\S+, against run ${against(0)} \\(Data Protector's session is an Incremental 1`,
            ),
          2,
        ],
        [
          'incremental2',
          () =>
            new RegExp(
              `incremental run 2 of chain \\S+, against run ${against(1)} \\(Data Protector's session is an Incremental 2`,
            ),
          3,
        ],
        [
          'incremental1',
          () => new RegExp(`incremental run 1 of chain \\S+, against run ${against(0)} \\(`),
          2,
        ],
        [
          'incremental3',
          () => new RegExp(`incremental run 2 of chain \\S+, against run ${against(3)} \\(`),
          3,
        ],
      ]
      for (const [i, [level, line, bases]] of schedule.entries()) {
        if (i > 0) await guestWrites(w.sim, w.xapi, vm, `day-${i}`, 0.2)
        const hashes = await diskHashes(w.sim.url, w.xapi, vm)
        const backup = await runBackupSession(spec, { store, level })
        const text = backup.messages.map((m) => m.text).join('\n')
        expect(backup.status, text).toBe('Completed')
        expect(text).toMatch(typeof line === 'function' ? line() : line)
        const run = /Debian: run (\S+) is the base of the next incremental run/.exec(text)![1]!
        runs.push({ id: backup.id, run, hashes })
        // Bases kept: one per level below the newest, and the newest.
        expect(await baseRuns(w.xapi), `after ${level}`).toHaveLength(bases)
        if (cbt) {
          expect(text).not.toMatch(/warning|instead|a new chain/)
          expect(await snapshots(w.xapi), `after ${level}`).toEqual([])
        }
      }
      // Data Protector's restore of the last session brings back the Full, the second Incr1 and it.
      await guestWrites(w.sim, w.xapi, vm, 'damage', 1)
      const restore = await runRestoreSession({
        store,
        session: runs[4]!.id,
        trees: [],
        conflict: 'overwrite',
        postExec: hook('restore-post-exec.js', w.config),
      })
      const text = restore.messages.map((m) => m.text).join('\n')
      expect(restore.status, text).toBe('Completed')
      expect(text).toContain(`sessions ${runs[0]!.id}, ${runs[3]!.id}, ${runs[4]!.id}`)
      expect(text).toMatch(/Debian: 2 disk\(s\) rebuilt from run \S+ \(a full and 2 incremental run\(s\)\)/)
      expect(await diskHashes(w.sim.url, w.xapi, vm)).toEqual(runs[4]!.hashes)
    },
  )
})
