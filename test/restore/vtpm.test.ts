// A VM with a vTPM (Windows 11, BitLocker) backed up as an XVA: xapi's export carries the vTPM's
// contents, and a restore gives the VM back disks and vTPM as they were at the backup.
import { mkdirSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { runPreExec } from '../../src/backup/run.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import { run } from '../helpers/hooks.js'
import { addVtpm, diskHashes, guestWrites, loseVm, macs } from '../helpers/pool.js'
import { world } from '../helpers/world.js'

const TPM = Buffer.from('sealed at backup time').toString('base64')
const LATER = Buffer.from('resealed since').toString('base64')

async function backedUp(mode: 'online' | 'offline') {
  const w = await world({
    mode,
    vmName: ['Debian'],
    keepRestoredFiles: false,
    restore: { startAfterRestore: true },
  })
  mkdirSync(w.backupDir)
  const vm = await w.xapi.vmByName('Debian')
  const vtpm = await addVtpm(w.xapi, vm, TPM)
  const hashes = await diskHashes(w.sim.url, w.xapi, vm)
  const pre = await run(runPreExec, [w.config])
  expect(pre.code, pre.text).toBe(0)
  return { ...w, vm, vtpm, hashes }
}

describe('vTPMs through XVA backups', () => {
  it('online: the disks restored onto the VM, and its vTPM as at the backup', async () => {
    const w = await backedUp('online')
    await w.xapi.call('VM.clean_shutdown', w.vm)
    await w.xapi.call('VTPM.set_contents', w.vtpm, LATER)
    await w.xapi.call('VM.start', w.vm, false, false)
    await guestWrites(w.sim, w.xapi, w.vm, 'since', 0.5)
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    expect(restore.text).toMatch(/Debian: its vTPM holds what it held at the backup/)
    expect(await diskHashes(w.sim.url, w.xapi, w.vm)).toEqual(w.hashes)
    expect(await w.xapi.call('VTPM.get_contents', w.vtpm)).toBe(TPM)
    expect(await w.xapi.call('VM.get_power_state', w.vm)).toBe('Running')
  })

  it('offline: a VM that is gone comes back with its uuid, MACs and vTPM', async () => {
    const w = await backedUp('offline')
    const uuid = await w.xapi.call<string>('VM.get_uuid', w.vm)
    const addresses = await macs(w.xapi, w.vm)
    const vtpmUuid = await w.xapi.call<string>('VTPM.get_uuid', w.vtpm)
    await loseVm(w.xapi, w.vm)
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    const made = await w.xapi.vmByName('Debian')
    expect(await w.xapi.call('VM.get_uuid', made)).toBe(uuid)
    expect(await macs(w.xapi, made)).toEqual(addresses)
    expect(await diskHashes(w.sim.url, w.xapi, made)).toEqual(w.hashes)
    const [vtpm] = await w.xapi.call<string[]>('VM.get_VTPMs', made)
    expect(await w.xapi.call('VTPM.get_uuid', vtpm)).toBe(vtpmUuid)
    expect(await w.xapi.call('VTPM.get_contents', vtpm)).toBe(TPM)
  })
})
