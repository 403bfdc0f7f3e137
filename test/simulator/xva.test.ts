// XVA over HTTP: the export layout, compression, checksums, and import with xapi's checks.
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import xxhash from 'xxhash-wasm'
import { describe, expect, it } from 'vitest'
import { request } from 'undici'
import type { TestClient } from '../helpers/rpc.js'
import { demoSim, singleHost } from '../helpers/sim.js'
import { parseValue } from '../../src/core/xml-parse.js'
import { download, entries, pack, rawDisk, sha256, upload, type TarEntry } from '../helpers/xva.js'

// One host's handlers and model, spoken to directly.
singleHost()

const { create64 } = await xxhash()

type Rec = Record<string, unknown>
const MiB = 1024 * 1024

async function diskVdis(xapi: TestClient, vm: string): Promise<string[]> {
  const out: [string, string][] = []
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
    const rec = await xapi.call<Rec>('VBD.get_record', vbd)
    if (rec.type === 'Disk') out.push([String(rec.userdevice), String(rec.VDI)])
  }
  return out.sort().map(([, vdi]) => vdi)
}

async function exportVm(url: string, xapi: TestClient, name: string, extra = ''): Promise<Buffer> {
  const vm = await xapi.vmByName(name)
  const { status, body } = await download(`${url}/export?session_id=${xapi.session}&ref=${vm}${extra}`)
  expect(status).toBe(200)
  return body
}

describe('GET /export', () => {
  it('streams HTTP/1.0 with no Content-Length and a task-id header; the task succeeds', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    const task = await xapi.call<string>('task.create', 'my export', '')
    const res = await request(
      `${sim.url}/export?session_id=${xapi.session}&uuid=${await xapi.call('VM.get_uuid', vm)}&task_id=${task}`,
    )
    const body = Buffer.from(await res.body.arrayBuffer())
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-length']).toBeUndefined()
    expect(res.headers['transfer-encoding']).toBeUndefined()
    expect(res.headers['task-id']).toBe(task)
    expect(body.length % 512).toBe(0)
    expect(body.subarray(-1024).equals(Buffer.alloc(1024))).toBe(true)
    expect(await xapi.waitTask(task)).toMatchObject({ status: 'success' })
  })

  it('puts ova.xml first, then each disk in Ref-id string order with 1 MiB chunks and XXH64 entries', async () => {
    const { sim, xapi } = await demoSim()
    const list = await entries(await exportVm(sim.url, xapi, 'vm2'))
    expect(list[0]!.name).toBe('ova.xml')
    expect(list[0]!.data.toString().startsWith('<value><struct><member><name>version</name>')).toBe(true)
    const chunks = list.slice(1).filter((e) => !e.name.endsWith('.xxhash'))
    // vm2 has one 6 MiB disk, half data: chunks 0 (always), 1, 3, 5 (last, always) — zero chunks 2 and 4 left out.
    expect(chunks.map((e) => e.name.split('/')[1])).toEqual(['00000000', '00000001', '00000003', '00000005'])
    for (const [i, entry] of list.slice(1).entries()) {
      if (i % 2 === 0) continue
      const data = list[i]!.data
      const hash = create64(0n)
      hash.update(data)
      expect(entry.name).toBe(`${list[i]!.name}.xxhash`)
      expect(entry.data.toString()).toBe(hash.digest().toString(16).toUpperCase().padStart(16, '0'))
      expect(entry.data.toString()).toMatch(/^[0-9A-F]{16}$/)
    }
  })

  it('rebuilds exactly the disk from the chunks (gaps are zero)', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('Debian')
    const snap = await xapi.call<string>('VM.snapshot', vm, 'for-export')
    const list = await entries(
      (await download(`${sim.url}/export?session_id=${xapi.session}&ref=${snap}`)).body,
    )
    const ova = list[0]!.data.toString()
    expect(ova).toContain('<name>is_a_template</name><value><boolean>1</boolean></value>')
    const ids = [...new Set(list.slice(1).map((e) => e.name.split('/')[0]!))]
    expect([...ids].sort()).toEqual(ids)
    // Each disk of the archive, by the Ref id ova.xml gives its VDI: rebuilt from its own
    // entries (chunk N at N MiB, absent chunks zero), it is the snapshot's disk byte for byte.
    const header = parseValue(ova) as {
      objects: { class: string; id: string; snapshot: Record<string, unknown> }[]
    }
    const vdis = header.objects.filter((o) => o.class === 'VDI' && ids.includes(o.id))
    expect(vdis.map((v) => v.id).sort()).toEqual(ids)
    expect(ids).toHaveLength(2)
    for (const vdi of vdis) {
      const disk = Buffer.alloc(Number(vdi.snapshot.virtual_size))
      for (const e of list)
        if (e.name.startsWith(`${vdi.id}/`) && !e.name.endsWith('.xxhash'))
          e.data.copy(disk, Number(e.name.split('/')[1]) * MiB)
      const ref = await xapi.call<string>('VDI.get_by_uuid', vdi.snapshot.uuid)
      const original = await rawDisk(sim.url, xapi.session, ref)
      expect(original.length).toBe(disk.length)
      expect(sha256(disk)).toBe(sha256(original))
    }
  })

  it('writes .checksum SHA-1 entries (40 lower-case hex) when started with checksum sha1', async () => {
    const { sim, xapi } = await demoSim({ checksum: 'sha1' })
    const list = await entries(await exportVm(sim.url, xapi, 'vm2'))
    const sums = list.filter((e) => e.name.endsWith('.checksum'))
    expect(sums.length).toBe(4)
    for (const sum of sums) {
      const data = list.find((e) => e.name === sum.name.replace(/\.checksum$/, ''))!.data
      expect(sum.data.toString()).toBe(createHash('sha1').update(data).digest('hex'))
    }
  })

  it.each(['gzip', 'zstd', 'true'])('compresses the whole stream with use_compression=%s', async (mode) => {
    const { sim, xapi } = await demoSim()
    const body = await exportVm(sim.url, xapi, 'vm2', `&use_compression=${mode}`)
    const magic = mode === 'zstd' ? [0x28, 0xb5, 0x2f, 0xfd] : [0x1f, 0x8b]
    expect([...body.subarray(0, magic.length)]).toEqual(magic)
    const list = await entries(body)
    expect(list[0]!.name).toBe('ova.xml')
    expect(list.filter((e) => e.name.endsWith('.xxhash'))).toHaveLength(4)
  })

  it('refuses a running VM: HTTP 500 and a task failed with VM_BAD_POWER_STATE', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('Debian')
    const task = await xapi.call<string>('task.create', 'export', '')
    const { status } = await download(
      `${sim.url}/export?session_id=${xapi.session}&ref=${vm}&task_id=${task}`,
    )
    expect(status).toBe(500)
    expect(await xapi.waitTask(task)).toMatchObject({
      status: 'failure',
      error_info: ['VM_BAD_POWER_STATE', vm, 'halted, suspended', 'running'],
    })
  })

  it('asks for credentials (401) without a valid session, and accepts HTTP Basic auth', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    const denied = await request(`${sim.url}/export?session_id=OpaqueRef:bad&ref=${vm}`)
    await denied.body.dump()
    expect(denied.statusCode).toBe(401)
    expect(denied.headers['www-authenticate']).toMatch(/^Basic realm=/)
    const basic = await request(`${sim.url}/export?ref=${vm}`, {
      headers: { authorization: `Basic ${Buffer.from('root:xenroot').toString('base64')}` },
    })
    await basic.body.arrayBuffer()
    expect(basic.statusCode).toBe(200)
    expect(sim.openSessions()).toBe(1)
  })
})

async function roundTrip(
  xvaBody: Buffer,
  url: string,
  xapi: TestClient,
  query = '',
): Promise<{ status: number; task: Rec }> {
  const task = await xapi.call<string>('task.create', 'import', '')
  const status = await upload(`${url}/import?session_id=${xapi.session}&task_id=${task}${query}`, xvaBody)
  return { status, task: await xapi.waitTask(task) }
}

function imported(task: Rec): string {
  const match = /^<value><array><data><value>(OpaqueRef:[0-9a-f-]+)<\/value><\/data><\/array><\/value>$/.exec(
    String(task.result),
  )
  if (!match)
    throw new Error(`unexpected import result ${String(task.result)} ${JSON.stringify(task.error_info)}`)
  return match[1]!
}

describe('PUT /import', () => {
  it('imports an export into the default SR as a new VM with equal disks, new uuid and new MACs', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    const body = await exportVm(sim.url, xapi, 'vm2')
    const { status, task } = await roundTrip(body, sim.url, xapi)
    expect(status).toBe(200)
    const copy = imported(task)
    const [orig, made] = [
      await xapi.call<Rec>('VM.get_record', vm),
      await xapi.call<Rec>('VM.get_record', copy),
    ]
    expect(made).toMatchObject({
      name_label: 'vm2',
      power_state: 'Halted',
      is_a_template: false,
      version: '0',
    })
    expect(made.uuid).not.toBe(orig.uuid)
    const [origDisk, newDisk] = [(await diskVdis(xapi, vm))[0]!, (await diskVdis(xapi, copy))[0]!]
    expect(sha256(await rawDisk(sim.url, xapi.session, newDisk))).toBe(
      sha256(await rawDisk(sim.url, xapi.session, origDisk)),
    )
    const pool = Object.values(await xapi.call<Record<string, Rec>>('pool.get_all_records'))[0]!
    expect(await xapi.call('VDI.get_SR', newDisk)).toBe(pool.default_SR)
    const macs = async (ref: string): Promise<unknown[]> =>
      Promise.all((await xapi.call<string[]>('VM.get_VIFs', ref)).map((vif) => xapi.call('VIF.get_MAC', vif)))
    expect(await macs(copy)).not.toEqual(await macs(vm))
  })

  it('honours restore=true: uuid and MACs kept, an existing halted VM with that uuid replaced', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    const before = await xapi.call<Rec>('VM.get_record', vm)
    const macBefore = await xapi.call('VIF.get_MAC', (before.VIFs as string[])[0])
    const body = await exportVm(sim.url, xapi, 'vm2')
    // Same version as the VM that exists: xapi refuses to replace it unless forced.
    const refused = await roundTrip(body, sim.url, xapi, '&restore=true')
    expect(refused.task.error_info).toEqual(['VM_TO_IMPORT_IS_NOT_NEWER_VERSION', vm, '0', '0'])
    const oldDisks = await diskVdis(xapi, vm)
    const { task } = await roundTrip(body, sim.url, xapi, '&restore=true&force=true')
    const made = imported(task)
    expect(made).not.toBe(vm)
    const rec = await xapi.call<Rec>('VM.get_record', made)
    expect(rec.uuid).toBe(before.uuid)
    expect(await xapi.call('VIF.get_MAC', (rec.VIFs as string[])[0])).toBe(macBefore)
    expect(await xapi.failure('VM.get_record', vm)).toEqual(['HANDLE_INVALID', 'VM', vm])
    // xapi's replace destroys the old VM record but leaves its disks behind.
    expect(await xapi.call<Rec>('VDI.get_record', oldDisks[0])).toMatchObject({ VBDs: [] })
    expect(await xapi.call<string[]>('VM.get_by_name_label', 'vm2')).toEqual([made])
  })

  it('refuses restore=true over a running VM with VM_BAD_POWER_STATE', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    const body = await exportVm(sim.url, xapi, 'vm2')
    await xapi.call('VM.start', vm, false, false)
    const { task } = await roundTrip(body, sim.url, xapi, '&restore=true&force=false')
    expect(task.error_info).toEqual(['VM_BAD_POWER_STATE', vm, 'halted', 'running'])
  })

  it('refuses restore=true when another VM has the same MAC seed (DUPLICATE_MAC_SEED)', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    const seed = (await xapi.call<Record<string, string>>('VM.get_other_config', vm)).mac_seed!
    const body = await exportVm(sim.url, xapi, 'vm2')
    const other = await xapi.vmByName('Debian')
    await xapi.call('VM.remove_from_other_config', other, 'mac_seed')
    await xapi.call('VM.add_to_other_config', other, 'mac_seed', seed)
    const { task } = await roundTrip(body, sim.url, xapi, '&restore=true')
    expect(task.error_info).toEqual(['DUPLICATE_MAC_SEED', seed])
  })

  it('imports gzip and zstd XVAs, and into a chosen SR by sr_id or sr_uuid', async () => {
    const { sim, xapi } = await demoSim()
    const shared = (await xapi.call<string[]>('SR.get_by_name_label', 'Shared Storage'))[0]!
    const gzip = await exportVm(sim.url, xapi, 'vm2', '&use_compression=gzip')
    const zstd = await exportVm(sim.url, xapi, 'vm2', '&use_compression=zstd')
    for (const [body, query] of [
      [gzip, `&sr_id=${shared}`],
      [zstd, `&sr_uuid=${await xapi.call('SR.get_uuid', shared)}`],
    ] as const) {
      const made = imported((await roundTrip(body, sim.url, xapi, query)).task)
      expect(await xapi.call('VDI.get_SR', (await diskVdis(xapi, made))[0])).toBe(shared)
    }
  })

  it('refuses a chunked body with 403 and IMPORT_ERROR_CANNOT_HANDLE_CHUNKED', async () => {
    const { sim, xapi } = await demoSim()
    const body = await exportVm(sim.url, xapi, 'vm2')
    const task = await xapi.call<string>('task.create', 'import', '')
    const res = await request(`${sim.url}/import?session_id=${xapi.session}&task_id=${task}`, {
      method: 'PUT',
      // A body of unknown length goes out chunked.
      body: Readable.from([body]),
    })
    await res.body.dump()
    expect(res.statusCode).toBe(403)
    expect((await xapi.waitTask(task)).error_info).toEqual(['IMPORT_ERROR_CANNOT_HANDLE_CHUNKED'])
  })

  it('fails DEFAULT_SR_NOT_FOUND without sr_id when the pool has no default SR', async () => {
    const { sim, xapi } = await demoSim()
    const pool = (await xapi.call<string[]>('pool.get_all'))[0]!
    await xapi.call('pool.set_default_SR', pool, 'OpaqueRef:NULL')
    const { status, task } = await roundTrip(await exportVm(sim.url, xapi, 'vm2'), sim.url, xapi)
    expect(status).toBe(500)
    expect(task.error_info).toEqual(['DEFAULT_SR_NOT_FOUND', 'OpaqueRef:NULL'])
  })

  it.each([
    ['an ISO SR', 'DVD drives', 400, 'SR_OPERATION_NOT_SUPPORTED'],
    ['a udev SR (no VDI create)', 'Removable storage', 200, 'SR_OPERATION_NOT_SUPPORTED'],
  ])('refuses to import into %s', async (_what, srName, status, code) => {
    const { sim, xapi } = await demoSim()
    const sr = (await xapi.call<string[]>('SR.get_by_name_label', srName))[0]!
    const vmsBefore = (await xapi.call<string[]>('VM.get_all')).length
    const result = await roundTrip(await exportVm(sim.url, xapi, 'vm2'), sim.url, xapi, `&sr_id=${sr}`)
    expect(result.status).toBe(status)
    expect(result.task.error_info).toEqual([code, sr])
    expect((await xapi.call<string[]>('VM.get_all')).length).toBe(vmsBefore)
  })

  it('fails SR_FULL when the disks do not fit, leaving nothing behind', async () => {
    const { sim, xapi } = await demoSim({
      demo: false,
      seed: {
        srs: [
          { name: 'big', type: 'ext', default: true },
          { name: 'tiny', type: 'ext', size: '2MiB' },
        ],
        vms: [{ name: 'v', disks: [{ sr: 'big', size: '4MiB', fill: 0.5 }] }],
      },
    })
    const tiny = (await xapi.call<string[]>('SR.get_by_name_label', 'tiny'))[0]!
    const vdisBefore = (await xapi.call<string[]>('VDI.get_all')).length
    const { task } = await roundTrip(await exportVm(sim.url, xapi, 'v'), sim.url, xapi, `&sr_id=${tiny}`)
    expect(task.error_info).toEqual(['SR_FULL', String(4 * MiB), String(2 * MiB)])
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdisBefore)
  })

  async function damaged(
    transform: (list: TarEntry[]) => TarEntry[],
  ): Promise<{ error: unknown; vms: number; vdis: number; before: [number, number] }> {
    const { sim, xapi } = await demoSim()
    const list = await entries(await exportVm(sim.url, xapi, 'vm2'))
    const before: [number, number] = [
      (await xapi.call<string[]>('VM.get_all')).length,
      (await xapi.call<string[]>('VDI.get_all')).length,
    ]
    const { task } = await roundTrip(await pack(transform(list)), sim.url, xapi)
    return {
      error: task.error_info,
      vms: (await xapi.call<string[]>('VM.get_all')).length,
      vdis: (await xapi.call<string[]>('VDI.get_all')).length,
      before,
    }
  }

  it.each<[string, (list: TarEntry[]) => TarEntry[], string[] | RegExp]>([
    [
      'a bad checksum',
      (l) => l.map((e, i) => (i === 4 ? { ...e, data: Buffer.from('0123456789ABCDEF') } : e)),
      ['IMPORT_ERROR_SOME_CHECKSUMS_FAILED'],
    ],
    [
      'a flipped data byte',
      (l) =>
        l.map((e, i) =>
          i === 3 ? { ...e, data: Buffer.concat([Buffer.from([e.data[0]! ^ 1]), e.data.subarray(1)]) } : e,
        ),
      ['IMPORT_ERROR_SOME_CHECKSUMS_FAILED'],
    ],
    [
      'ova.xml not first',
      (l) => [l[1]!, l[2]!, l[0]!, ...l.slice(3)],
      [
        'IMPORT_ERROR_UNEXPECTED_FILE',
        'ova.xml',
        expect.stringMatching(/^Ref:\d+\/00000000$/) as unknown as string,
      ],
    ],
    [
      'chunks out of order',
      (l) => [l[0]!, l[3]!, l[4]!, l[1]!, l[2]!, ...l.slice(5)],
      [
        'IMPORT_ERROR_UNEXPECTED_FILE',
        expect.stringMatching(/after/) as unknown as string,
        expect.any(String) as unknown as string,
      ],
    ],
    ['the last chunk missing', (l) => l.slice(0, -2), ['IMPORT_ERROR_PREMATURE_EOF']],
    [
      'a checksum entry missing',
      (l) => l.filter((_e, i) => i !== 2),
      ['IMPORT_ERROR', expect.stringMatching(/checksum/) as unknown as string],
    ],
  ])('rejects an XVA with %s and removes what it created', async (_what, transform, error) => {
    const result = await damaged(transform)
    expect(result.error).toEqual(error)
    expect([result.vms, result.vdis]).toEqual(result.before)
  })

  it('fails IMPORT_ERROR_PREMATURE_EOF when the body is shorter than its Content-Length', async () => {
    const { sim, xapi } = await demoSim()
    const body = await exportVm(sim.url, xapi, 'vm2')
    const task = await xapi.call<string>('task.create', 'import', '')
    const vdisBefore = (await xapi.call<string[]>('VDI.get_all')).length
    const { connect } = await import('node:net')
    const { hostname, port } = new URL(sim.url)
    await new Promise<void>((resolve) => {
      const socket = connect(Number(port), hostname, () => {
        socket.write(
          `PUT /import?session_id=${xapi.session}&task_id=${task} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`,
        )
        socket.write(body.subarray(0, 3 * MiB), () => setTimeout(() => socket.destroy(), 100))
      })
      socket.on('close', () => resolve())
      socket.on('error', () => resolve())
    })
    expect((await xapi.waitTask(task)).error_info).toEqual(['IMPORT_ERROR_PREMATURE_EOF'])
    expect((await xapi.call<string[]>('VDI.get_all')).length).toBe(vdisBefore)
  })

  it('writes and reads disk contents with /import_raw_vdi and /export_raw_vdi', async () => {
    const { sim, xapi } = await demoSim()
    const vdi = (await diskVdis(xapi, await xapi.vmByName('vm2')))[0]!
    const data = Buffer.alloc(6 * MiB, 7)
    const task = await xapi.call<string>('task.create', 'raw', '')
    expect(
      await upload(
        `${sim.url}/import_raw_vdi?session_id=${xapi.session}&vdi=${vdi}&format=raw&task_id=${task}`,
        data,
      ),
    ).toBe(200)
    expect(await xapi.waitTask(task)).toMatchObject({ status: 'success', result: `<value>${vdi}</value>` })
    expect((await rawDisk(sim.url, xapi.session, vdi)).equals(data)).toBe(true)
  })

  it('dumps the pool database at /pool/xmldbdump', async () => {
    const { sim, xapi } = await demoSim()
    const { status, body } = await download(`${sim.url}/pool/xmldbdump?session_id=${xapi.session}`)
    expect(status).toBe(200)
    const text = body.toString()
    expect(text).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?><database>/)
    expect(text).toContain('<table name="VM">')
    expect(text).toContain('name_label="Debian"')
    expect(text.endsWith('</database>')).toBe(true)
  })
})
