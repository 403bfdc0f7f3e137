// Every fault the simulator can inject, set at start or while it runs.
import { describe, expect, it, vi } from 'vitest'
import { request } from 'undici'
import { parseFault } from '../../simulator/xapi/faults.js'
import { TestClient } from '../helpers/rpc.js'
import { demoSim } from '../helpers/sim.js'
import { download, entries, rawDisk, sha256, upload } from '../helpers/xva.js'

const MiB = 1024 * 1024

describe('fault injection', () => {
  it('export-truncate:SIZE cuts the body after SIZE bytes and fails the task', async () => {
    const { sim, xapi } = await demoSim({ faults: ['export-truncate:2MiB'] })
    const vm = await xapi.vmByName('vm2')
    const task = await xapi.call<string>('task.create', 'export', '')
    const res = await request(`${sim.url}/export?session_id=${xapi.session}&ref=${vm}&task_id=${task}`)
    let received = 0
    try {
      for await (const chunk of res.body) received += (chunk as Buffer).length
    } catch {
      // the connection is cut: some clients see an error, some a plain end
    }
    expect(received).toBe(2 * MiB)
    expect(await xapi.waitTask(task)).toMatchObject({
      status: 'failure',
      error_info: ['VDI_IO_ERROR', 'Device I/O errors'],
    })
    expect(await xapi.call('VM.get_current_operations', vm)).toEqual({})
  })

  it('export-stall:SECONDS stops sending mid-export for that long', async () => {
    const { sim, xapi } = await demoSim({ faults: ['export-stall:1'] })
    const vm = await xapi.vmByName('vm2')
    const res = await request(`${sim.url}/export?session_id=${xapi.session}&ref=${vm}`)
    const arrivals: number[] = []
    let total = 0
    for await (const chunk of res.body) {
      total += (chunk as Buffer).length
      arrivals.push(Date.now())
    }
    expect(total).toBeGreaterThan(4 * MiB)
    const gaps = arrivals.slice(1).map((t, i) => t - arrivals[i]!)
    expect(Math.max(...gaps)).toBeGreaterThanOrEqual(900)
  })

  it("export-keepalive emits xapi's empty chunk entries; numbers stop matching offsets, the import still works", async () => {
    const { sim, xapi } = await demoSim({ faults: ['export-keepalive'] })
    const vm = await xapi.vmByName('vm2')
    const { body } = await download(`${sim.url}/export?session_id=${xapi.session}&ref=${vm}`)
    const list = await entries(body)
    const empty = list.filter(
      (e) => !e.name.endsWith('.xxhash') && e.name !== 'ova.xml' && e.data.length === 0,
    )
    expect(empty.length).toBeGreaterThan(0)
    // The checksum of an empty chunk is XXH64 of nothing.
    expect(list.find((e) => e.name === `${empty[0]!.name}.xxhash`)!.data.toString()).toBe('EF46DB3751D8E999')
    const task = await xapi.call<string>('task.create', 'import', '')
    await upload(`${sim.url}/import?session_id=${xapi.session}&task_id=${task}`, body)
    const result = await xapi.waitTask(task)
    const made = /OpaqueRef:[0-9a-f-]+/.exec(String(result.result))![0]
    const disk = async (ref: string): Promise<string> => {
      const vbd = (await xapi.call<string[]>('VM.get_VBDs', ref))[0]!
      return sha256(await rawDisk(sim.url, xapi.session, await xapi.call<string>('VBD.get_VDI', vbd)))
    }
    expect(await disk(made)).toBe(await disk(vm))
  })

  it('snapshot-fail makes VM.snapshot fail with SR_BACKEND_FAILURE_109 (chain too long)', async () => {
    const { xapi } = await demoSim({ faults: ['snapshot-fail'] })
    const vm = await xapi.vmByName('Debian')
    expect(await xapi.failure('VM.snapshot', vm, 'x')).toEqual([
      'SR_BACKEND_FAILURE_109',
      '',
      'The snapshot chain is too long',
      '',
    ])
    expect(await xapi.call('VM.get_snapshots', vm)).toEqual([])
  })

  it('vdi-in-use-once fails the first VDI.destroy with VDI_IN_USE, then lets it through', async () => {
    const { sim, xapi } = await demoSim()
    const snap = await xapi.call<string>('VM.snapshot', await xapi.vmByName('vm2'), 's')
    const vbd = (await xapi.call<string[]>('VM.get_VBDs', snap))[0]!
    const vdi = await xapi.call<string>('VBD.get_VDI', vbd)
    sim.faults.add('vdi-in-use-once')
    expect(await xapi.failure('VDI.destroy', vdi)).toEqual(['VDI_IN_USE', vdi, 'destroy'])
    await xapi.call('VDI.destroy', vdi)
    expect(await xapi.failure('VDI.get_record', vdi)).toEqual(['HANDLE_INVALID', 'VDI', vdi])
  })

  it('session-invalid-once ends the session of the next call, as an expiry would; a new login works', async () => {
    const { sim, xapi } = await demoSim()
    sim.faults.add('session-invalid-once')
    expect(await xapi.failure('VM.get_all')).toEqual(['SESSION_INVALID', xapi.session])
    expect(sim.openSessions()).toBe(0)
    const again = await TestClient.login(sim.url)
    expect((await again.call<string[]>('VM.get_all')).length).toBeGreaterThan(0)
  })

  it('import-fail fails the import task after the body was read, leaving nothing behind', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    const { body } = await download(`${sim.url}/export?session_id=${xapi.session}&ref=${vm}`)
    const before = [
      (await xapi.call<string[]>('VM.get_all')).length,
      (await xapi.call<string[]>('VDI.get_all')).length,
    ]
    sim.faults.add('import-fail')
    const task = await xapi.call<string>('task.create', 'import', '')
    expect(await upload(`${sim.url}/import?session_id=${xapi.session}&task_id=${task}`, body)).toBe(200)
    expect((await xapi.waitTask(task)).error_info).toEqual(['VDI_IO_ERROR', 'Device I/O errors'])
    expect([
      (await xapi.call<string[]>('VM.get_all')).length,
      (await xapi.call<string[]>('VDI.get_all')).length,
    ]).toEqual(before)
  })

  it('start-fail makes VM.start fail; clearing the fault lets it start', async () => {
    const { sim, xapi } = await demoSim({ faults: ['start-fail'] })
    const vm = await xapi.vmByName('vm2')
    expect((await xapi.failure('VM.start', vm, false, false))[0]).toBe('HOST_NOT_ENOUGH_FREE_MEMORY')
    expect(await xapi.call('VM.get_power_state', vm)).toBe('Halted')
    sim.faults.clear('start-fail')
    await xapi.call('VM.start', vm, false, false)
    expect(await xapi.call('VM.get_power_state', vm)).toBe('Running')
  })

  it('import-stall:SECONDS holds the import; task.cancel ends it with TASK_CANCELLED and removes its objects', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    const { body } = await download(`${sim.url}/export?session_id=${xapi.session}&ref=${vm}`)
    const vdis = (await xapi.call<string[]>('VDI.get_all')).length
    sim.faults.add('import-stall:30')
    const task = await xapi.call<string>('task.create', 'import', '')
    const uploading = upload(`${sim.url}/import?session_id=${xapi.session}&task_id=${task}`, body).catch(
      () => 0,
    )
    await vi.waitFor(async () =>
      expect((await xapi.call<string[]>('VDI.get_all')).length).toBeGreaterThan(vdis),
    )
    const started = Date.now()
    await xapi.call('task.cancel', task)
    expect(await xapi.waitTask(task)).toMatchObject({
      status: 'cancelled',
      error_info: ['TASK_CANCELLED', task],
    })
    expect(Date.now() - started).toBeLessThan(5000)
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdis)
    await uploading
  })

  it.each([
    ['no-such-fault', /unknown fault "no-such-fault"/],
    ['export-truncate:lots', /not a size/],
    ['export-stall:soon', /export-stall needs seconds/],
  ])('rejects the bad fault spec %s with a clear message', (spec, message) => {
    expect(() => parseFault(spec)).toThrow(message)
  })
})
