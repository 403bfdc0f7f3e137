// Restores the way administrators restore: as a copy beside the original, into another pool
// where a VM of the same name is someone else's, and again over a VM an earlier restore made.
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { describe, expect, it } from 'vitest'
import { runPreExec } from '../../src/backup/run.js'
import { runPostExec } from '../../src/backup/post.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import { run } from '../helpers/hooks.js'
import { damage, diskHashes, powerStates, records, vdiCount } from '../helpers/pool.js'
import type { TestClient } from '../helpers/rpc.js'
import { demoSim } from '../helpers/sim.js'
import { world } from '../helpers/world.js'

type Rec = Record<string, unknown>

const DPXEN = fileURLToPath(new URL('../../dist/hooks/dpxen.js', import.meta.url))

/** The same files serve several restores here. */
async function workflowWorld(mode: string) {
  const w = await world({ mode, vmName: ['Debian'], keepRestoredFiles: true })
  return { ...w, config: w.configFor }
}

async function macs(xapi: TestClient, vm: string): Promise<string[]> {
  return Promise.all(
    (await xapi.call<string[]>('VM.get_VIFs', vm)).map((v) => xapi.call<string>('VIF.get_MAC', v)),
  )
}

/** Everything about a pool's VMs a restore could change: names, power states, disks. */
async function poolState(url: string, xapi: TestClient) {
  const vms = Object.values(await records(xapi, 'VM')).filter((v) => !v.is_control_domain)
  const disks: Record<string, string[]> = {}
  for (const [ref, vm] of Object.entries(await records(xapi, 'VM')))
    if (!vm.is_a_template && !vm.is_a_snapshot && !vm.is_control_domain)
      disks[String(vm.uuid)] = await diskHashes(url, xapi, ref)
  return {
    vms: vms.map((v) => `${String(v.name_label)}:${String(v.uuid)}`).sort(),
    power: await powerStates(xapi),
    disks,
    vdis: await vdiCount(xapi),
  }
}

describe('restore workflows', () => {
  it.each(['online', 'offline'])(
    'restoreAs copy (%s backup): a new VM beside the original, new uuid and MACs; the original byte-identical and running',
    async (mode) => {
      const { sim, xapi, config } = await workflowWorld(mode)
      const original = await xapi.vmByName('Debian')
      const path = config()
      expect((await run(runPreExec, [path])).code).toBe(0)
      const before = await poolState(sim.url, xapi)
      const result = await run(runRestorePostExec, [
        config({ restoreAs: 'copy', copyName: '{name} copy {uuid}' }),
      ])
      expect(result.code, result.text).toBe(0)
      const uuid = String(await xapi.call('VM.get_uuid', original))
      const copy = await xapi.vmByName(`Debian copy ${uuid.slice(0, 8)}`)
      expect(result.lines).toContainEqual(
        expect.stringMatching(
          /^dpxen: Debian: restored from .* as a copy, "Debian copy .*"; Debian was not touched$/,
        ),
      )
      // The original: as it was.
      expect(await diskHashes(sim.url, xapi, original)).toEqual(before.disks[uuid])
      expect(await xapi.call('VM.get_power_state', original)).toBe('Running')
      // The copy: another VM, the backup's disks, halted, not a template.
      const rec = await xapi.call<Rec>('VM.get_record', copy)
      expect(rec.uuid).not.toBe(uuid)
      expect(rec.is_a_template).toBe(false)
      expect(rec.power_state).toBe('Halted')
      expect(await diskHashes(sim.url, xapi, copy)).toEqual(before.disks[uuid])
      const theirs = await macs(xapi, original)
      for (const mac of await macs(xapi, copy)) expect(theirs).not.toContain(mac)
      expect((await poolState(sim.url, xapi)).vms).toEqual(
        [...before.vms, `Debian copy ${uuid.slice(0, 8)}:${String(rec.uuid)}`].sort(),
      )
    },
  )

  it.each(['online', 'offline'])(
    'another pool (%s backup): its VM of the same name is refused and untouched, restored with matchByName, copied with restoreAs copy',
    async (mode) => {
      const first = await workflowWorld(mode)
      expect((await run(runPreExec, [first.config()])).code).toBe(0)
      const backedUp = await diskHashes(first.sim.url, first.xapi, await first.xapi.vmByName('Debian'))
      const { sim, xapi } = await demoSim()
      const theirs = await xapi.vmByName('Debian')
      await damage(sim.url, xapi, theirs)
      const untouched = await poolState(sim.url, xapi)

      const refused = await run(runRestorePostExec, [first.config({ url: sim.url })])
      expect(refused.code).toBe(5)
      expect(refused.lines).toContainEqual(
        expect.stringMatching(
          /^dpxen: Debian: FAILED: a VM named Debian exists but it is not the one backed up \(its uuid is not [0-9a-f-]+\); it was not touched: set matchByName: true to restore over it, or restoreAs: copy$/,
        ),
      )
      expect(await poolState(sim.url, xapi)).toEqual(untouched)

      const copied = await run(runRestorePostExec, [first.config({ url: sim.url, restoreAs: 'copy' })])
      expect(copied.code, copied.text).toBe(0)
      expect(await diskHashes(sim.url, xapi, theirs)).toEqual(
        untouched.disks[String(await xapi.call('VM.get_uuid', theirs))],
      )

      const matched = await run(runRestorePostExec, [first.config({ url: sim.url, matchByName: true })])
      expect(matched.code, matched.text).toBe(0)
      const now = await xapi.call<string[]>('VM.get_by_name_label', 'Debian')
      expect(now).toHaveLength(1)
      expect(await diskHashes(sim.url, xapi, now[0]!)).toEqual(backedUp)
    },
  )

  it('offline: a second restore of the same backup finds the VM the first one put in place (new uuid)', async () => {
    const { sim, xapi, config } = await workflowWorld('offline')
    const path = config()
    expect((await run(runPreExec, [path])).code).toBe(0)
    const hashes = await diskHashes(sim.url, xapi, await xapi.vmByName('Debian'))
    for (let round = 0; round < 2; round++) {
      await damage(sim.url, xapi, await xapi.vmByName('Debian'))
      const result = await run(runRestorePostExec, [path])
      expect(result.code, result.text).toBe(0)
      expect(await diskHashes(sim.url, xapi, await xapi.vmByName('Debian'))).toEqual(hashes)
    }
  })

  it('dpxen restore runs the restore by hand, its options over the configuration, which it does not change', async () => {
    const { sim, xapi, config } = await workflowWorld('online')
    const path = config()
    expect((await run(runPreExec, [path])).code).toBe(0)
    const text = readFileSync(path, 'utf8')
    const preview = await execa(DPXEN, ['restore', '--as', 'copy', '--preview', path], { reject: false })
    expect(preview.exitCode, preview.stdout).toBe(0)
    expect(preview.stdout).toMatch(
      /^dpxen: preview: would restore Debian from 127\.0\.0\.1_Debian_Snapshot\.xva as a copy into SR "Local storage"$/m,
    )
    // The command line's --mode and --vm apply over an all* configuration that narrows with exclude.
    const allPath = config({ mode: 'allOnline', vmName: undefined, exclude: ['vm2'] })
    const result = await execa(
      DPXEN,
      ['restore', '--mode', 'online', '--vm', 'Debian', '--as', 'copy', '--name', '{name}-by-hand', allPath],
      { reject: false },
    )
    expect(result.exitCode, result.stdout).toBe(0)
    expect(await xapi.vmByName('Debian-by-hand')).toMatch(/^OpaqueRef:/)
    expect(readFileSync(path, 'utf8')).toBe(text)
    const wrong = await execa(DPXEN, ['restore', '--frobnicate', path], { reject: false })
    expect(wrong.exitCode).toBe(2)
    expect(wrong.stdout).toMatch(/^dpxen: Unknown option '--frobnicate'.*\(usage: dpxen restore /)
    void sim
  })

  it("a configuration's restore section applies to restores only; a typo in it stops every hook", async () => {
    const { xapi, config } = await workflowWorld('online')
    const path = config({ restore: { restoreAs: 'copy', copyName: '{name} from the section' } })
    const backup = await run(runPreExec, [path])
    expect(backup.code, backup.text).toBe(0)
    expect(backup.text).not.toMatch(/copy/)
    const restore = await run(runRestorePostExec, [path])
    expect(restore.code, restore.text).toBe(0)
    expect(await xapi.vmByName('Debian from the section')).toMatch(/^OpaqueRef:/)
    const typo = await run(runPostExec, [config({ restore: { restorAs: 'copy' } })])
    expect(typo.code).toBe(2)
    expect(typo.lines).toContainEqual(
      expect.stringMatching(/: restore\.restorAs: unknown key \(did you mean restoreAs\?\)$/),
    )
  })
})
