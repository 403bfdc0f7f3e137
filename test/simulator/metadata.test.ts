// xapi-sim's /export_metadata and /import_metadata (export.ml, import.ml metadata_handler) and
// its vTPMs (xapi_vtpm.ml): the records of a VM without its disks, made again over VDIs that
// exist, with the vTPM's contents carried through.
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { demoSim, singleHost } from '../helpers/sim.js'
import { entries, upload } from '../helpers/xva.js'
import { newDisk } from '../helpers/pool.js'
import type { TestClient } from '../helpers/rpc.js'

singleHost()

const TPM = Buffer.from('a sealed key and a platform hierarchy').toString('base64')

async function world(): Promise<{ url: string; xapi: TestClient }> {
  const { sim, xapi } = await demoSim({
    demo: false,
    seed: {
      srs: [{ name: 'sr', type: 'ext', default: true }],
      vms: [
        { name: 'win11', powerState: 'Running', vifs: 2, vtpm: TPM, disks: [{ sr: 'sr', size: '4MiB' }] },
      ],
    },
  })
  return { url: sim.url, xapi }
}

async function exportMetadata(url: string, xapi: TestClient, vm: string): Promise<Buffer> {
  const uuid = await xapi.call<string>('VM.get_uuid', vm)
  const res = await request(
    `${url}/export_metadata?session_id=${xapi.session}&uuid=${uuid}&export_snapshots=false`,
  )
  expect(res.statusCode).toBe(200)
  expect(res.headers['content-length']).toBeDefined()
  const body = Buffer.from(await res.body.arrayBuffer())
  expect((await xapi.waitTask(String(res.headers['task-id']))).status).toBe('success')
  return body
}

async function importMetadata(url: string, xapi: TestClient, body: Buffer, query: string) {
  const task = await xapi.call<string>('task.create', 'import', '')
  const status = await upload(
    `${url}/import_metadata?session_id=${xapi.session}&task_id=${task}${query}`,
    body,
  )
  expect(status).toBe(200)
  return xapi.waitTask(task)
}

describe('xapi-sim metadata export and import', () => {
  it('exports ova.xml alone, with the power state and the vTPM contents; imports it over existing VDIs with uuid, MACs and vTPM', async () => {
    const { url, xapi } = await world()
    const vm = await xapi.vmByName('win11')
    const uuid = await xapi.call<string>('VM.get_uuid', vm)
    const macs = async (ref: string): Promise<string[]> =>
      (
        await Promise.all(
          (await xapi.call<string[]>('VM.get_VIFs', ref)).map((v) => xapi.call<string>('VIF.get_MAC', v)),
        )
      ).sort()
    const before = await macs(vm)
    const body = await exportMetadata(url, xapi, vm)
    const list = await entries(body)
    expect(list.map((e) => e.name)).toEqual(['ova.xml'])
    const xml = list[0]!.data.toString()
    expect(xml).toContain('<name>power_state</name><value>Running</value>')
    expect(xml).toContain(`<name>vTPM'_content</name><value>${TPM}</value>`)

    // The VM lost, its disk kept (as a restore finds it: a new VDI rebuilt elsewhere).
    let disk = ''
    for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm))
      if ((await xapi.call('VBD.get_type', vbd)) === 'Disk')
        disk = await xapi.call<string>('VBD.get_VDI', vbd)
    const diskUuid = await xapi.call<string>('VDI.get_uuid', disk)
    await xapi.call('VM.hard_shutdown', vm)
    await xapi.call('VM.destroy', vm)
    expect(await xapi.call<string[]>('VTPM.get_all')).toEqual([])
    const sr = (await xapi.call<string[]>('SR.get_by_name_label', 'sr'))[0]!
    const fresh = await newDisk(xapi, sr, 4 * 1024 * 1024, 'rebuilt')
    const freshUuid = await xapi.call<string>('VDI.get_uuid', fresh)

    // No map and no VDI at the old location: xapi's own refusal, nothing made.
    await xapi.call('VDI.destroy', disk)
    const refused = await importMetadata(url, xapi, body, '&restore=true')
    expect(refused.status).toBe('failure')
    expect(refused.error_info).toEqual(['VDI_LOCATION_MISSING', sr, diskUuid])
    expect(await xapi.call<string[]>('VM.get_by_name_label', 'win11')).toEqual([])

    const done = await importMetadata(url, xapi, body, `&restore=true&vdi:${diskUuid}=${freshUuid}`)
    expect(done.status).toBe('success')
    const made = (await xapi.call<string[]>('VM.get_by_name_label', 'win11'))[0]!
    expect(done.result).toContain(made)
    expect(await xapi.call('VM.get_uuid', made)).toBe(uuid)
    expect(await xapi.call('VM.get_power_state', made)).toBe('Halted')
    expect(await macs(made)).toEqual(before)
    const vbds = await xapi.call<string[]>('VM.get_VBDs', made)
    const vdis = await Promise.all(vbds.map((v) => xapi.call<string>('VBD.get_VDI', v)))
    expect(vdis).toContain(fresh)
    const [vtpm] = await xapi.call<string[]>('VM.get_VTPMs', made)
    expect(await xapi.call('VTPM.get_contents', vtpm)).toBe(TPM)

    // restore=true again, the VM there: xapi's version rule; as a copy: new uuid, MACs and vTPM.
    const again = await importMetadata(url, xapi, body, `&restore=true&vdi:${diskUuid}=${freshUuid}`)
    expect((again.error_info as string[])[0]).toBe('VM_TO_IMPORT_IS_NOT_NEWER_VERSION')
    const copy = await importMetadata(url, xapi, body, `&vdi:${diskUuid}=${freshUuid}`)
    expect(copy.status).toBe('success')
    const copies = await xapi.call<string[]>('VM.get_by_name_label', 'win11')
    const other = copies.find((r) => r !== made)!
    expect(await xapi.call('VM.get_uuid', other)).not.toBe(uuid)
    expect((await macs(other)).some((m) => before.includes(m))).toBe(false)
    const [copiedTpm] = await xapi.call<string[]>('VM.get_VTPMs', other)
    expect(copiedTpm).not.toBe(vtpm)
    expect(await xapi.call('VTPM.get_contents', copiedTpm)).toBe(TPM)
  })

  it('keeps one vTPM per VM, made only while halted, and copies it with a snapshot', async () => {
    const { xapi } = await world()
    const vm = await xapi.vmByName('win11')
    expect(await xapi.failure('VTPM.create', vm, false)).toEqual([
      'VM_BAD_POWER_STATE',
      vm,
      'halted',
      'running',
    ])
    await xapi.call('VM.hard_shutdown', vm)
    expect(await xapi.failure('VTPM.create', vm, false)).toEqual(['VTPM_MAX_AMOUNT_REACHED', '1'])
    const snap = await xapi.call<string>('VM.snapshot', vm, 'before')
    const [own] = await xapi.call<string[]>('VM.get_VTPMs', vm)
    const [copied] = await xapi.call<string[]>('VM.get_VTPMs', snap)
    expect(copied).not.toBe(own)
    expect(await xapi.call('VTPM.get_contents', copied)).toBe(TPM)
    expect((await xapi.failure('VTPM.set_contents', own, 'not base64!'))[0]).toBe('INTERNAL_ERROR')
    await xapi.call('VTPM.destroy', own)
    expect(await xapi.call('VM.get_VTPMs', vm)).toEqual([])
  })
})
