// Three weeks as a Data Protector administrator schedules incremental VMs: a Full every Sunday,
// an Incremental every other day, dpxen following Data Protector's level (MODE); the guest
// changes blocks every day, a disk is grown mid-week, and at the end the VM is deleted. One Data
// Protector restore of a mid-week session (its restore chain, "Omit deleted files" off) brings
// the VM back as it was at that point: its uuid, its MACs, every disk byte for byte. Runs over
// HTTPS (vitest.config.ts), with the three-host pool's members serving the local disks.
import { mkdirSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { runRestoreSession } from '../../simulator/dp/restore.js'
import { runBackupSession } from '../../simulator/dp/session.js'
import { Store } from '../../simulator/dp/store.js'
import { backupSpec } from '../helpers/dp.js'
import { diskHashes, guestWrites, loseVm, macs } from '../helpers/pool.js'
import type { TestClient } from '../helpers/rpc.js'
import { world } from '../helpers/world.js'

const dist = fileURLToPath(new URL('../../dist/', import.meta.url))
const hook = (name: string, config: string): string =>
  `"${process.execPath}" "${join(dist, 'hooks', name)}" "${config}"`
const text = (record: { messages: { text: string }[] }): string =>
  record.messages.map((m) => m.text).join('\n')

/** Disk 0 of the VM grown by `bytes`, as an administrator grows it: the VM halted for it. */
async function grow(xapi: TestClient, vm: string, bytes: number): Promise<void> {
  await xapi.call('VM.clean_shutdown', vm)
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
    if ((await xapi.call('VBD.get_userdevice', vbd)) !== '0') continue
    const vdi = await xapi.call<string>('VBD.get_VDI', vbd)
    await xapi.call('VDI.resize', vdi, String(Number(await xapi.call('VDI.get_virtual_size', vdi)) + bytes))
  }
  await xapi.call('VM.start', vm, false, false)
}

describe('three weeks of Data Protector sessions, then the VM lost', () => {
  it('Full on Sundays, Incrementals between, a disk grown on Wednesday; the VM rebuilt from one restore of a Friday session', async () => {
    const w = await world({
      mode: 'online',
      vmName: ['Debian'],
      incremental: true,
      followDataProtectorLevel: true,
    })
    mkdirSync(w.backupDir)
    const store = new Store(join(w.dir, 'store'))
    const spec = backupSpec(w.backupDir, {
      preExec: hook('pre-exec.js', w.config),
      postExec: hook('post-exec.js', w.config),
    })
    const vm = await w.xapi.vmByName('Debian')
    const days: { id: string; level: string; hashes: string[] }[] = []
    for (let day = 0; day < 21; day++) {
      if (day > 0) await guestWrites(w.sim, w.xapi, vm, `day-${day}`, 0.1)
      if (day === 10) await grow(w.xapi, vm, 4 * 1024 * 1024)
      const level = day % 7 === 0 ? 'full' : 'incremental'
      const hashes = await diskHashes(w.sim.url, w.xapi, vm)
      const session = await runBackupSession(spec, { store, level })
      expect(session.status, text(session)).toBe('Completed')
      expect(readdirSync(w.backupDir)).toEqual([])
      if (day === 0) expect(text(session)).toMatch(/Debian: full run \(no base snapshot/)
      else if (day === 10) expect(text(session)).toMatch(/Debian: full run \(disk 0 changed size since run/)
      else if (level === 'full')
        expect(text(session)).toMatch(/Debian: full run \(Data Protector's session is a Full/)
      else
        expect(text(session)).toMatch(
          /Debian: incremental run \d+ of chain \S+, against run \S+ \(Data Protector's session is an Incremental\)/,
        )
      days.push({ id: session.id, level, hashes })
    }
    // The Friday of the second week: Data Protector's chain is Sunday's Full and five
    // Incrementals; dpxen's, Wednesday's new chain (the grown disk) and its two runs since.
    const friday = days[12]!
    const uuid = await w.xapi.call<string>('VM.get_uuid', vm)
    const addresses = await macs(w.xapi, vm)
    await loseVm(w.xapi, vm)

    const restoreHook = hook('restore-post-exec.js', w.config)
    // "Omit deleted files" on: the staging folder was emptied after every session, so only the
    // Friday session's own files come back, and the post-exec refuses the gap; nothing changes.
    const omitted = await runRestoreSession({
      store,
      session: friday.id,
      trees: [],
      conflict: 'overwrite',
      omitDeletedFiles: true,
      postExec: restoreHook,
    })
    expect(omitted.status).toBe('Completed with errors')
    expect(text(omitted)).toMatch(
      /Debian: FAILED: run \S+ holds the changes since run \S+, whose files are not in backupDir/,
    )
    expect(await w.xapi.call<string[]>('VM.get_by_name_label', 'Debian')).toEqual([])

    const restore = await runRestoreSession({
      store,
      session: friday.id,
      trees: [],
      conflict: 'overwrite',
      postExec: restoreHook,
    })
    expect(restore.status, text(restore)).toBe('Completed')
    expect(text(restore)).toContain(
      `sessions ${days
        .slice(7, 13)
        .map((d) => d.id)
        .join(', ')}`,
    )
    expect(text(restore)).toMatch(
      /Debian: made again from run \S+ \(a full and 2 incremental run\(s\)\): it no longer existed; uuid and MAC addresses kept/,
    )
    const made = await w.xapi.vmByName('Debian')
    expect(await w.xapi.call('VM.get_uuid', made)).toBe(uuid)
    expect(await macs(w.xapi, made)).toEqual(addresses)
    expect(await diskHashes(w.sim.url, w.xapi, made)).toEqual(friday.hashes)
    expect(readdirSync(w.backupDir).filter((n) => !n.startsWith('.'))).toEqual([])
  }, 300_000)
})
