// Incremental backups in Data Protector sessions (dp-sim): a full and three incrementals with
// the guest changing blocks in between, then a restore of the second incremental's point from
// the files of the three sessions that make it; every disk byte-identical to that point.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { runRestoreSession } from '../../simulator/dp/restore.js'
import { runBackupSession } from '../../simulator/dp/session.js'
import { Store } from '../../simulator/dp/store.js'
import { backupSpec } from '../helpers/dp.js'
import { tempDir } from '../helpers/hooks.js'
import { diskHashes, guestWrites, snapshots } from '../helpers/pool.js'
import type { TestClient } from '../helpers/rpc.js'
import { readVhd } from '../helpers/vhd.js'
import { world } from '../helpers/world.js'
import { OC_BASE_OF } from '../../src/pool/tags.js'

const dist = fileURLToPath(new URL('../../dist/', import.meta.url))
const hook = (name: string, config: string): string =>
  `"${process.execPath}" "${join(dist, 'hooks', name)}" "${config}"`

async function bases(xapi: TestClient): Promise<Record<string, unknown>[]> {
  const all = await xapi.call<Record<string, Record<string, unknown>>>('VM.get_all_records')
  return Object.values(all).filter((r) => (r.other_config as Record<string, string>)[OC_BASE_OF])
}

describe('incremental backups (dp-sim sessions)', () => {
  it('a full and three incrementals; the second incremental restored from its three sessions, byte for byte', async () => {
    const {
      sim,
      xapi,
      dir,
      backupDir: staging,
      config,
    } = await world({
      mode: 'online',
      vmName: ['Debian'],
      incremental: true,
    })
    mkdirSync(staging)
    const store = new Store(join(dir, 'store'))
    const vm = await xapi.vmByName('Debian')
    const sessions: { id: string; files: string[]; hashes: string[] }[] = []
    for (const [i, seed] of ['full', 'inc-1', 'inc-2', 'inc-3'].entries()) {
      if (i > 0) await guestWrites(sim, xapi, vm, seed, 0.25)
      const hashes = await diskHashes(sim.url, xapi, vm)
      const backup = await runBackupSession(
        backupSpec(staging, { preExec: hook('pre-exec.js', config), postExec: hook('post-exec.js', config) }),
        { store },
      )
      expect(backup.status, backup.messages.map((m) => m.text).join('\n')).toBe('Completed')
      const files = backup.objects[0]!.files.map((f) => f.path.split('/').at(-1)!).filter(
        (f) => !f.startsWith('.'),
      )
      sessions.push({ id: backup.id, files, hashes })
      expect(files.filter((f) => f.endsWith('.chain.json'))).toHaveLength(1)
      expect(files.filter((f) => f.endsWith('.vhd'))).toHaveLength(2)
      expect(readdirSync(staging)).toEqual([])
      // One base snapshot kept, and no other snapshot.
      expect(await bases(xapi)).toHaveLength(1)
      expect((await snapshots(xapi)).length).toBe(1)
      const text = backup.messages.map((m) => m.text).join('\n')
      expect(text).toMatch(
        i === 0 ? /Debian: full run \(no base snapshot/ : new RegExp(`Debian: incremental run ${i} of chain`),
      )
    }
    // Every run's files have names of their own: Data Protector keeps them all.
    const all = sessions.flatMap((s) => s.files)
    expect(new Set(all).size).toBe(all.length)

    // Damage the VM, then bring back the files of the full, inc-1 and inc-2, as an administrator
    // selects them in three sessions; the last restore session runs the restore post-exec.
    await guestWrites(sim, xapi, vm, 'damage', 1)
    for (const [i, s] of sessions.slice(0, 3).entries()) {
      const restore = await runRestoreSession({
        store,
        session: s.id,
        trees: s.files.map((f) => join(staging, f)),
        conflict: 'overwrite',
        ...(i === 2 ? { postExec: hook('restore-post-exec.js', config) } : {}),
      })
      expect(restore.status, restore.messages.map((m) => m.text).join('\n')).toBe('Completed')
      if (i === 2)
        expect(restore.messages.map((m) => m.text).join('\n')).toMatch(
          /rebuilt from run \d+T\d+Z \(a full and 2 incremental run\(s\)\)/,
        )
    }
    const again = await xapi.vmByName('Debian')
    expect(again).toBe(vm)
    expect(await diskHashes(sim.url, xapi, vm)).toEqual(sessions[2]!.hashes)
    expect(await diskHashes(sim.url, xapi, vm)).not.toEqual(sessions[3]!.hashes)
    expect(readdirSync(staging)).toEqual([])
  })

  it('an incremental holds the changed blocks only; a chain with a gap is refused before the pool changes', async () => {
    const {
      sim,
      xapi,
      backupDir: staging,
      config,
    } = await world({ mode: 'online', vmName: ['Debian'], incremental: true })
    mkdirSync(staging)
    const vm = await xapi.vmByName('Debian')
    const { runHook } = await import('../../src/hook/main.js')
    const { runPreExec } = await import('../../src/backup/run.js')
    const { runRestorePostExec } = await import('../../src/restore/run.js')
    const { runPostExec } = await import('../../src/backup/post.js')
    const { runDpxen } = await import('../../src/cli/dpxen.js')
    const out: string[] = []
    const ctx = {
      args: [config],
      env: {},
      cwd: staging,
      out: (l: string) => out.push(l),
      signal: new AbortController().signal,
    }
    // Data Protector keeps each run's files; the post-exec then empties the staging folder.
    const kept = tempDir()
    const backUp = async (): Promise<void> => {
      expect(await runHook(runPreExec, ctx), out.join('\n')).toBe(0)
      for (const f of readdirSync(staging).filter((n) => !n.startsWith('.')))
        copyFileSync(join(staging, f), join(kept, f))
      expect(await runHook(runPostExec, ctx), out.join('\n')).toBe(0)
    }
    await backUp()
    await guestWrites(sim, xapi, vm, 'one', 0.1)
    await backUp()
    await guestWrites(sim, xapi, vm, 'two', 0.1)
    await backUp()
    for (const f of readdirSync(kept)) copyFileSync(join(kept, f), join(staging, f))
    const names = readdirSync(staging).sort()
    const vhds = names.filter((n) => n.endsWith('.vhd'))
    expect(vhds).toHaveLength(6)
    const sizes = vhds.map((n) => readFileSync(join(staging, n)).length)
    const images = vhds.map((n) => readVhd(readFileSync(join(staging, n))))
    expect(images.filter((v) => v.type === 3)).toHaveLength(2)
    // The deltas are much smaller than the fulls.
    const fullBytes = sizes.filter((_, i) => images[i]!.type === 3).reduce((a, b) => a + b)
    const deltaBytes = sizes.filter((_, i) => images[i]!.type === 4).reduce((a, b) => a + b)
    expect(deltaBytes).toBeLessThan(fullBytes)
    // Remove the middle run's manifest: the last run's chain has a gap.
    const manifests = names.filter((n) => n.endsWith('.chain.json'))
    const middle = manifests[1]!
    const runs = manifests.map((m) => /_(\d{8}T\d+Z)\.chain\.json$/.exec(m)![1]!)
    const listed = async (): Promise<string> => {
      out.length = 0
      expect(await runHook(runDpxen, { ...ctx, args: ['list', staging] })).toBe(0)
      return out.join('\n')
    }
    expect(await listed()).toContain(`dpxen: Debian: restorable to run ${runs[2]} (${runs.join(' > ')})`)
    writeFileSync(join(staging, middle), '{}')
    expect(await listed()).toMatch(
      new RegExp(`Debian: not restorable: run ${runs[2]} holds the changes since run ${runs[1]}`),
    )
    const before = await diskHashes(sim.url, xapi, vm)
    out.length = 0
    expect(await runHook(runRestorePostExec, ctx)).toBe(5)
    expect(out.join('\n')).toMatch(
      /Debian: FAILED: run \S+ holds the changes since run \S+, whose files are not in backupDir/,
    )
    expect(await diskHashes(sim.url, xapi, vm)).toEqual(before)
  })
})
