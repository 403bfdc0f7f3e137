// dp-sim's backup levels and restore chains, as Data Protector documents them: an Incremental
// takes the files changed since the last backup, an Incremental N those since the last backup of
// a lower level; a restore of a session brings back its whole chain, files deleted since
// included unless "Omit deleted files" is chosen.
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runRestoreSession } from '../../simulator/dp/restore.js'
import { runBackupSession } from '../../simulator/dp/session.js'
import { Store } from '../../simulator/dp/store.js'
import { backupSpec } from '../helpers/dp.js'
import { tempDir } from '../helpers/hooks.js'

function world() {
  const dir = tempDir()
  const tree = join(dir, 'MYDIR')
  mkdirSync(tree)
  const store = new Store(join(dir, 'store'))
  const write = (name: string): void => writeFileSync(join(tree, name), name)
  const backup = async (level: string) => {
    const record = await runBackupSession(backupSpec(tree), { store, level })
    expect(record.status).toBe('Completed')
    return record
  }
  return { dir, tree, store, write, backup }
}

describe('dp-sim: Data Protector backup levels and restore chains', () => {
  it('the support tip "Omit deleted files": a restore of the incremental brings back 1, 2 and 3 without it, 2 and 3 with it', async () => {
    const w = world()
    w.write('1.txt')
    w.write('2.txt')
    const full = await w.backup('full')
    expect(full.objects[0]!.files.map((f) => f.path.split('/').at(-1))).toEqual(['1.txt', '2.txt'])
    rmSync(join(w.tree, '1.txt'))
    w.write('3.txt')
    const incr = await w.backup('incremental')
    expect(incr.objects[0]!.level).toBe(1)
    expect(incr.objects[0]!.reference).toBe(full.id)
    expect(incr.objects[0]!.files.map((f) => f.path.split('/').at(-1))).toEqual(['3.txt'])
    for (const [omit, expected] of [
      [false, ['1.txt', '2.txt', '3.txt']],
      [true, ['2.txt', '3.txt']],
    ] as const) {
      const into = join(w.dir, `into-${omit}`)
      const restore = await runRestoreSession({
        store: w.store,
        session: incr.id,
        trees: [],
        into,
        conflict: 'overwrite',
        omitDeletedFiles: omit,
      })
      expect(restore.status).toBe('Completed')
      expect(readdirSync(into).sort()).toEqual(expected)
      expect(restore.messages.map((m) => m.text).join('\n')).toContain(
        `Restore chain of dpclient:${w.tree}: sessions ${full.id}, ${incr.id}`,
      )
    }
  })

  it('leveled incrementals: each since the last backup of a lower level; an Incr3 with no Incr2 runs as one; no Full yet: a Full', async () => {
    const w = world()
    w.write('a')
    const first = await w.backup('incremental2')
    expect(first.objects[0]!.level).toBe(0)
    expect(first.messages.map((m) => m.text).join('\n')).toMatch(
      /no earlier Full backup of the object: performed as a Full/,
    )
    w.write('b')
    const incr1 = await w.backup('incremental1')
    expect([incr1.objects[0]!.level, incr1.objects[0]!.reference]).toEqual([1, first.id])
    w.write('c')
    const incr3 = await w.backup('incremental3')
    expect([incr3.objects[0]!.level, incr3.objects[0]!.reference]).toEqual([2, incr1.id])
    w.write('d')
    // Another Incr1: since the Full, so it holds b, c and d; its chain is the Full and itself.
    const again = await w.backup('incremental1')
    expect(again.objects[0]!.reference).toBe(first.id)
    expect(again.objects[0]!.files.map((f) => f.path.split('/').at(-1))).toEqual(['b', 'c', 'd'])
    const into = join(w.dir, 'into')
    const restore = await runRestoreSession({
      store: w.store,
      session: again.id,
      trees: [],
      into,
      conflict: 'overwrite',
    })
    expect(readdirSync(into).sort()).toEqual(['a', 'b', 'c', 'd'])
    expect(restore.messages.map((m) => m.text).join('\n')).toContain(`sessions ${first.id}, ${again.id}`)
  })
})
