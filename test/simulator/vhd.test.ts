// xapi-sim's VHD transfers (export_raw_vdi / import_raw_vdi with format=vhd), checked with
// qemu-img (Debian's qemu-utils) and a VHD reader of the tests' own (helpers/vhd.ts).
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { tempDir } from '../helpers/hooks.js'
import { demoSim, singleHost } from '../helpers/sim.js'
import { applyTo, readVhd } from '../helpers/vhd.js'
import { upload } from '../helpers/xva.js'
import type { TestClient } from '../helpers/rpc.js'

// One host's handlers and model, spoken to directly.
singleHost()

const BLOCK = 2 * 1024 * 1024

async function get(url: string): Promise<{ status: number; body: Buffer; task: string }> {
  const res = await request(url)
  return {
    status: res.statusCode,
    body: Buffer.from(await res.body.arrayBuffer()),
    task: String(res.headers['task-id']),
  }
}

async function firstDisk(
  xapi: TestClient,
  vmName: string,
): Promise<{ vdi: string; uuid: string; size: number }> {
  const vm = await xapi.vmByName(vmName)
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
    if ((await xapi.call('VBD.get_type', vbd)) !== 'Disk') continue
    const vdi = await xapi.call<string>('VBD.get_VDI', vbd)
    return {
      vdi,
      uuid: await xapi.call<string>('VDI.get_uuid', vdi),
      size: Number(await xapi.call('VDI.get_virtual_size', vdi)),
    }
  }
  throw new Error('no disk')
}

describe('xapi-sim VHD transfers', () => {
  it('a full export is a dynamic VHD that qemu-img turns into the disk, byte for byte', async () => {
    const { sim, xapi } = await demoSim()
    const disk = await firstDisk(xapi, 'Debian')
    const res = await get(`${sim.url}/export_raw_vdi?session_id=${xapi.session}&vdi=${disk.vdi}&format=vhd`)
    expect(res.status).toBe(200)
    expect((await xapi.waitTask(res.task)).status).toBe('success')
    const image = readVhd(res.body)
    expect(image.type).toBe(3)
    expect(image.size).toBe(disk.size)
    expect(image.uuid).toBe(disk.uuid.replaceAll('-', ''))
    const dir = tempDir()
    writeFileSync(join(dir, 'disk.vhd'), res.body)
    execFileSync('qemu-img', [
      'convert',
      '-f',
      'vpc',
      '-O',
      'raw',
      join(dir, 'disk.vhd'),
      join(dir, 'disk.raw'),
    ])
    const raw = readFileSync(join(dir, 'disk.raw'))
    const original = readFileSync(sim.context.disks.path(disk.uuid))
    // qemu sizes a VHD whose creator is not one it knows ("caml", as xapi writes) by its CHS
    // geometry, which rounds the size down: what it gives must be the disk's first bytes...
    const chs = res.body.readUInt16BE(56) * res.body[58]! * res.body[59]! * 512
    expect(raw.length).toBe(chs)
    expect(disk.size - chs).toBeLessThan(63 * 16 * 512)
    expect(raw.equals(original.subarray(0, chs))).toBe(true)
    // ...and the tests' own reader gives all of them.
    const whole = Buffer.alloc(disk.size)
    applyTo(whole, image)
    expect(whole.equals(original)).toBe(true)
    // Blocks without data are left out: the demo disk is not all data.
    const withData = new Set<number>()
    for (let at = 0; at < disk.size; at += BLOCK)
      if (original.subarray(at, at + BLOCK).some((b) => b !== 0)) withData.add(at / BLOCK)
    expect([...image.blocks.keys()]).toEqual([...withData])
  })

  it('a delta against a snapshot holds exactly the changed blocks; full then delta rebuilds the disk in a new VDI', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('Debian')
    const disk = await firstDisk(xapi, 'Debian')
    const snap = await xapi.call<string>('VM.snapshot', vm, 'base')
    const snapVdi = (await firstDisk(xapi, 'base')).vdi
    const full = await get(`${sim.url}/export_raw_vdi?session_id=${xapi.session}&vdi=${snapVdi}&format=vhd`)
    const chunks = await sim.context.disks.change(disk.uuid, disk.size, 0.25, 'run-1')
    const changedBlocks = [...new Set(chunks.map((c) => Math.floor((c * 1024 * 1024) / BLOCK)))]
    const delta = await get(
      `${sim.url}/export_raw_vdi?session_id=${xapi.session}&vdi=${disk.vdi}&format=vhd&base=${snapVdi}`,
    )
    expect((await xapi.waitTask(delta.task)).status).toBe('success')
    const image = readVhd(delta.body)
    expect(image.type).toBe(4)
    expect(image.parentUuid).toBe((await xapi.call<string>('VDI.get_uuid', snapVdi)).replaceAll('-', ''))
    expect([...image.blocks.keys()]).toEqual(changedBlocks)
    // The tests' own reader rebuilds the disk from the two files...
    const rebuilt = Buffer.alloc(disk.size)
    applyTo(rebuilt, readVhd(full.body))
    applyTo(rebuilt, image)
    const current = readFileSync(sim.context.disks.path(disk.uuid))
    expect(rebuilt.equals(current)).toBe(true)
    // ...and so does xapi-sim's import, into a new VDI: the full, then the delta.
    const sr = await xapi.call<string>('VDI.get_SR', disk.vdi)
    const fresh = await xapi.call<string>('VDI.create', {
      name_label: 'rebuilt',
      name_description: '',
      xenstore_data: {},
      sm_config: {},
      tags: [],
      SR: sr,
      virtual_size: String(disk.size),
      type: 'user',
      sharable: false,
      read_only: false,
      other_config: {},
    })
    for (const body of [full.body, delta.body]) {
      expect(
        await upload(`${sim.url}/import_raw_vdi?session_id=${xapi.session}&vdi=${fresh}&format=vhd`, body),
      ).toBe(200)
    }
    const freshUuid = await xapi.call<string>('VDI.get_uuid', fresh)
    expect(readFileSync(sim.context.disks.path(freshUuid)).equals(current)).toBe(true)
    expect(snap).toMatch(/^OpaqueRef:/)
  })

  it('refuses what xapi refuses: chunked VHD, Transfer-Encoding, no VDI, an unknown format, an image larger than the VDI', async () => {
    const { sim, xapi } = await demoSim()
    const disk = await firstDisk(xapi, 'Debian')
    const small = await firstDisk(xapi, 'vm2')
    expect(small.size).toBeLessThan(disk.size)
    const vhd = (await get(`${sim.url}/export_raw_vdi?session_id=${xapi.session}&vdi=${disk.vdi}&format=vhd`))
      .body
    const base = `${sim.url}/import_raw_vdi?session_id=${xapi.session}`
    expect(await upload(`${base}&vdi=${small.vdi}&format=vhd&chunked=true`, vhd)).toBe(404)
    expect(await upload(`${base}&format=vhd`, vhd)).toBe(400)
    expect(await upload(`${base}&vdi=${small.vdi}&format=qcow3`, vhd)).toBe(404)
    const res = await request(`${base}&vdi=${small.vdi}&format=vhd`, {
      method: 'PUT',
      body: vhd,
      headers: { 'content-length': String(vhd.length) },
    })
    await res.body.dump()
    expect(res.statusCode).toBe(200)
    const task = await xapi.waitTask(String(res.headers['task-id']))
    expect(task.status).toBe('failure')
    expect((task.error_info as string[])[0]).toBe('VDI_IO_ERROR')
    const own = (
      await get(`${sim.url}/export_raw_vdi?session_id=${xapi.session}&vdi=${small.vdi}&format=vhd`)
    ).body
    const bad = Buffer.from(own)
    bad[70] = bad[70]! ^ 0xff // the footer's checksum no longer matches
    const res2 = await request(`${base}&vdi=${small.vdi}&format=vhd`, {
      method: 'PUT',
      body: bad,
      headers: { 'content-length': String(bad.length) },
    })
    await res2.body.dump()
    expect((await xapi.waitTask(String(res2.headers['task-id']))).error_info).toEqual([
      'VDI_IO_ERROR',
      'Device I/O errors: footer checksum',
    ])
  })

  it('a base that is gone: 200, then the error page inside the body, and the task failed', async () => {
    const { sim, xapi } = await demoSim()
    const disk = await firstDisk(xapi, 'Debian')
    const snap = await xapi.call<string>('VM.snapshot', await xapi.vmByName('Debian'), 'base')
    const base = (await firstDisk(xapi, 'base')).vdi
    sim.faults.add('vhd-base-gone')
    const res = await get(
      `${sim.url}/export_raw_vdi?session_id=${xapi.session}&vdi=${disk.vdi}&format=vhd&base=${base}`,
    )
    expect(res.status).toBe(200)
    expect(res.body.toString('latin1').startsWith('HTTP/1.1 500')).toBe(true)
    expect((await xapi.waitTask(res.task)).error_info).toEqual(['UUID_INVALID', 'VDI', base])
    expect(await xapi.failure('VM.get_uuid', snap)).toEqual(['HANDLE_INVALID', 'VM', snap])
  })

  it('seed churn: the guest rewrites that share of its disk after each snapshot, so deltas find it', async () => {
    const { sim, xapi } = await demoSim({
      demo: false,
      seed: {
        srs: [{ name: 'L', type: 'ext', default: true }],
        vms: [
          { name: 'busy', powerState: 'Running', disks: [{ sr: 'L', size: '16MiB', fill: 1, churn: 0.25 }] },
        ],
      },
    })
    const vm = await xapi.vmByName('busy')
    const disk = await firstDisk(xapi, 'busy')
    const first = await xapi.call<string>('VM.snapshot', vm, 'one')
    const base = (await firstDisk(xapi, 'one')).vdi
    expect(first).toMatch(/^OpaqueRef:/)
    const delta = await get(
      `${sim.url}/export_raw_vdi?session_id=${xapi.session}&vdi=${disk.vdi}&format=vhd&base=${base}`,
    )
    // 4 of the 16 chunks rewritten, spread: in 4 of the 8 blocks.
    expect([...readVhd(delta.body).blocks.keys()]).toHaveLength(4)
    const snapDisk = readFileSync(sim.context.disks.path(await xapi.call<string>('VDI.get_uuid', base)))
    expect(snapDisk.equals(readFileSync(sim.context.disks.path(disk.uuid)))).toBe(false)
  })

  it('a disk over 2040 GiB (sparse): format=vhd answers 200, then the task fails VDI_TOO_LARGE as export_raw_vdi.ml does', async () => {
    const { sim, xapi } = await demoSim({
      demo: false,
      seed: {
        srs: [{ name: 'L', type: 'ext', default: true, size: '8TiB' }],
        vms: [{ name: 'huge', disks: [{ sr: 'L', size: '2041GiB' }] }],
      },
    })
    const disk = await firstDisk(xapi, 'huge')
    expect(disk.size).toBe(2041 * 1024 ** 3)
    const task = await xapi.call<string>('task.create', 'vhd', '')
    const res = await get(
      `${sim.url}/export_raw_vdi?session_id=${xapi.session}&task_id=${task}&vdi=${disk.vdi}&format=vhd`,
    )
    expect(res.status).toBe(200)
    expect(await xapi.call('task.get_error_info', task)).toEqual(['VDI_TOO_LARGE', disk.vdi, '2190433320960'])
  })
})
