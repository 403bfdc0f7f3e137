// VMs xapi refuses to snapshot for reasons the SR does not give: a USB device passed through
// (VM_HAS_VUSBS, even unplugged: licence dongles) and a disk reset at each boot (on_boot=reset,
// VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION), as xapi_vm_lifecycle.ml check_operation_error
// has them. The simulator refuses as xapi does; dpxen says so in one line before any snapshot,
// and the VM backs up offline.
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runPreExec } from '../../src/backup/run.js'
import { runDpxen } from '../../src/cli/dpxen.js'
import { run, tempDir, writeConfig } from '../helpers/hooks.js'
import { records } from '../helpers/pool.js'
import { demoSim } from '../helpers/sim.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

async function pool() {
  const { sim, xapi } = await demoSim({
    demo: false,
    seed: {
      srs: [{ name: 'L', type: 'ext', default: true }],
      vms: [
        { name: 'dongle', powerState: 'Running', usb: true, disks: [{ sr: 'L', size: '4MiB', fill: 0.5 }] },
        { name: 'kiosk', powerState: 'Running', disks: [{ sr: 'L', size: '4MiB', fill: 0.5 }] },
        { name: 'plain', powerState: 'Running', disks: [{ sr: 'L', size: '4MiB', fill: 0.5 }] },
      ],
    },
  })
  const kiosk = await xapi.vmByName('kiosk')
  const vbd = (await xapi.call<string[]>('VM.get_VBDs', kiosk))[0]!
  await xapi.call('VDI.set_on_boot', await xapi.call<string>('VBD.get_VDI', vbd), 'reset')
  const dir = tempDir()
  const config = (mode: string, vmName: string[]) =>
    writeConfig(
      dir,
      { url: sim.url, username: 'root', password: SIM_PASSWORD, backupDir: join(dir, mode), mode, vmName },
      `${mode}.json`,
    )
  return { sim, xapi, kiosk, dongle: await xapi.vmByName('dongle'), config }
}

describe('VMs xapi cannot snapshot', () => {
  it('xapi-sim refuses their snapshot with xapi codes and parameters, and does not offer it', async () => {
    const { xapi, kiosk, dongle } = await pool()
    expect(await xapi.failure('VM.snapshot', dongle, 'x')).toEqual(['VM_HAS_VUSBS', dongle])
    expect(await xapi.failure('VM.snapshot', kiosk, 'x')).toEqual([
      'VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION',
    ])
    for (const vm of [dongle, kiosk])
      expect(await xapi.call('VM.get_allowed_operations', vm)).not.toContain('snapshot')
  })

  it('an online backup says why in one line before any snapshot, the others go on; offline backs them up', async () => {
    const { xapi, config } = await pool()
    const online = await run(runPreExec, [config('online', ['dongle', 'kiosk', 'plain'])])
    // The others' files are backed up: the post-exec reports the failures (Completed with errors).
    expect(online.code, online.text).toBe(0)
    expect(online.text).toMatch(/1 VM\(s\) backed up, 2 failure\(s\)/)
    expect(online.lines).toContain(
      'dpxen: dongle: FAILED: dongle has a USB device passed through: xapi cannot snapshot it, even with the device unplugged (VM_HAS_VUSBS); back it up with mode offline',
    )
    expect(online.lines).toContain(
      'dpxen: kiosk: FAILED: disk 0 of kiosk is reset at each boot (on_boot=reset): xapi cannot snapshot it (VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION); back it up with mode offline',
    )
    expect(online.text).toMatch(/dpxen: plain: done/)
    expect(Object.values(await records(xapi, 'VM')).filter((v) => v.is_a_snapshot)).toEqual([])
    const check = await run(runDpxen, ['check', config('online', ['dongle', 'kiosk'])])
    expect(check.text).toMatch(/PROBLEM dongle .*\n.*\n\s+dongle has a USB device passed through/)
    expect(check.text).toMatch(/PROBLEM kiosk /)
    const offline = await run(runPreExec, [config('offline', ['dongle', 'kiosk'])])
    expect(offline.code, offline.text).toBe(0)
  })
})
