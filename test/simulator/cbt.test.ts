// xapi-sim's changed block tracking against what xapi and SM do (xapi_vdi.ml, sm libs/sm/VDI.py):
// the bitmap list_changed_blocks answers (64 KiB a bit, most significant bit first, base64), the
// chain of logs through snapshots, data_destroy keeping the log and freeing the space, and each
// refusal with xapi's code and parameters.
import { describe, expect, it } from 'vitest'
import type { XapiSim } from '../../simulator/xapi/server.js'
import type { TestClient } from '../helpers/rpc.js'
import { demoSim } from '../helpers/sim.js'

const CBT_BLOCK = 64 * 1024
const MiB = 1024 * 1024

/** The blocks a bitmap names, read as SM writes it (bit 0 is the top bit of byte 0). */
function blocksOf(base64: string): number[] {
  const bytes = Buffer.from(base64, 'base64')
  const out: number[] = []
  for (let i = 0; i < bytes.length * 8; i++) if (bytes[i >> 3]! & (0x80 >> (i & 7))) out.push(i)
  return out
}

/** The 64 KiB blocks of the 1 MiB chunks `chunks`. */
const blocksOfChunks = (chunks: number[]): number[] =>
  chunks.flatMap((n) => Array.from({ length: MiB / CBT_BLOCK }, (_, i) => n * (MiB / CBT_BLOCK) + i))

async function debianDisk(sim: XapiSim, xapi: TestClient) {
  const vm = await xapi.vmByName('Debian')
  const vbd = (await xapi.call<string[]>('VM.get_VBDs', vm))[0]!
  const vdi = await xapi.call<string>('VBD.get_VDI', vbd)
  const uuid = await xapi.call<string>('VDI.get_uuid', vdi)
  const size = Number(await xapi.call('VDI.get_virtual_size', vdi))
  /** A guest rewriting `share` of the disk; the 1 MiB chunks it wrote. */
  const writes = (seed: string, share: number, offset = 0) =>
    sim.context.disks.change(uuid, size, share, seed, offset)
  return { vm, vdi, uuid, size, writes }
}

describe('xapi-sim: changed block tracking', () => {
  it('lists exactly the 64 KiB blocks written between two snapshots, MSB first, one bit per block of the disk', async () => {
    const { sim, xapi } = await demoSim()
    const d = await debianDisk(sim, xapi)
    await xapi.call('VDI.enable_cbt', d.vdi)
    await xapi.call('VDI.enable_cbt', d.vdi) // idempotent
    expect(await xapi.call('VDI.get_cbt_enabled', d.vdi)).toBe(true)
    await d.writes('before', 0.3)
    const s1 = await xapi.call<string>('VDI.snapshot', d.vdi, {})
    expect(await xapi.call('VDI.get_cbt_enabled', s1)).toBe(true)
    const first = await d.writes('first', 0.1, 1)
    // One guest write of 4 KiB, across no 64 KiB boundary: one bit.
    sim.context.disks.touch(d.uuid, 5 * CBT_BLOCK + 100, 4096)
    const s2 = await xapi.call<string>('VDI.snapshot', d.vdi, {})
    const second = await d.writes('second', 0.1, 3)
    const s3 = await xapi.call<string>('VDI.snapshot', d.vdi, {})

    const bitmap = await xapi.call<string>('VDI.list_changed_blocks', s1, s2)
    expect(Buffer.from(bitmap, 'base64').length).toBe(Math.ceil(d.size / CBT_BLOCK / 8))
    expect(blocksOf(bitmap)).toEqual([...new Set([...blocksOfChunks(first), 5])].sort((a, b) => a - b))
    expect(blocksOf(await xapi.call<string>('VDI.list_changed_blocks', s2, s3))).toEqual(
      blocksOfChunks(second),
    )
    // Along the chain: the OR of both.
    const both = [...new Set([...blocksOfChunks(first), 5, ...blocksOfChunks(second)])].sort((a, b) => a - b)
    expect(blocksOf(await xapi.call<string>('VDI.list_changed_blocks', s1, s3))).toEqual(both)
    // The running VM's disk cannot be vdi_to: it is attached (xapi checks vdi_to, SM would read its open log).
    expect(await xapi.failure('VDI.list_changed_blocks', s3, d.vdi)).toEqual([
      'VDI_IN_USE',
      d.vdi,
      'list_changed_blocks',
    ])

    // A snapshot destroyed in the middle: its blocks are merged into the next one's log.
    await xapi.call('VDI.destroy', s2)
    expect(blocksOf(await xapi.call<string>('VDI.list_changed_blocks', s1, s3))).toEqual(both)
  })

  it('data_destroy keeps the log and frees the data: cbt_metadata, the SR holds less, list_changed_blocks still answers', async () => {
    const { sim, xapi } = await demoSim()
    const d = await debianDisk(sim, xapi)
    await xapi.call('VDI.enable_cbt', d.vdi)
    const base = await xapi.call<string>('VDI.snapshot', d.vdi, {})
    const sr = await xapi.call<string>('VDI.get_SR', base)
    await xapi.call('SR.scan', sr)
    const held = Number(await xapi.call('SR.get_physical_utilisation', sr))
    await xapi.call('VDI.data_destroy', base)
    await xapi.call('VDI.data_destroy', base) // again: nothing
    expect(await xapi.call('VDI.get_type', base)).toBe('cbt_metadata')
    expect(Number(await xapi.call('VDI.get_physical_utilisation', base))).toBe(0)
    expect(Number(await xapi.call('SR.get_physical_utilisation', sr))).toBe(held - d.size)
    const written = await d.writes('after', 0.2, 2)
    const next = await xapi.call<string>('VDI.snapshot', d.vdi, {})
    expect(blocksOf(await xapi.call<string>('VDI.list_changed_blocks', base, next))).toEqual(
      blocksOfChunks(written),
    )
    // What a cbt_metadata VDI refuses, and what it still allows.
    for (const call of [
      ['VDI.clone', base, {}],
      ['VDI.copy', base, sr],
      ['VDI.snapshot', base, {}],
      ['VDI.resize', base, String(2 * d.size)],
    ] as const)
      expect(await xapi.failure(call[0], ...call.slice(1))).toEqual([
        'VDI_INCOMPATIBLE_TYPE',
        base,
        'cbt_metadata',
      ])
    await xapi.call('VDI.destroy', base)
  })

  it('a snapshot VM still holding the disk: data_destroy waits for its VBDs, then removes them', async () => {
    const { sim, xapi } = await demoSim()
    const d = await debianDisk(sim, xapi)
    await xapi.call('VDI.enable_cbt', d.vdi)
    const snapVm = await xapi.call<string>('VM.snapshot', d.vm, 'kept')
    let snapVdi = ''
    for (const vbd of await xapi.call<string[]>('VM.get_VBDs', snapVm))
      if ((await xapi.call('VBD.get_userdevice', vbd)) === '0')
        snapVdi = await xapi.call<string>('VBD.get_VDI', vbd)
    expect(await xapi.call('VDI.get_cbt_enabled', snapVdi)).toBe(true)
    const started = Date.now()
    await xapi.call('VDI.data_destroy', snapVdi)
    expect(Date.now() - started).toBeGreaterThanOrEqual(3900)
    expect(await xapi.call('VDI.get_VBDs', snapVdi)).toEqual([])
  })

  it('refuses as xapi refuses, with its codes and parameters', async () => {
    const { sim, xapi } = await demoSim()
    const d = await debianDisk(sim, xapi)
    const plain = await xapi.call<string>('VDI.snapshot', d.vdi, {})
    expect(await xapi.failure('VDI.data_destroy', d.vdi)).toEqual([
      'OPERATION_NOT_ALLOWED',
      `VDI is not a snapshot: ${d.vdi}`,
    ])
    expect(await xapi.failure('VDI.data_destroy', plain)).toEqual(['VDI_NO_CBT_METADATA', plain])
    expect(await xapi.failure('VDI.enable_cbt', plain)).toEqual([
      'OPERATION_NOT_ALLOWED',
      `VDI is a snapshot: ${plain}`,
    ])
    await xapi.call('VDI.enable_cbt', d.vdi)
    expect(await xapi.failure('VDI.set_on_boot', d.vdi, 'reset')).toEqual(['VDI_CBT_ENABLED', d.vdi])
    const s1 = await xapi.call<string>('VDI.snapshot', d.vdi, {})
    const failed = (reason: string) => [
      'SR_BACKEND_FAILURE_460',
      '',
      `Failed to calculate changed blocks for given VDIs. [opterr=${reason}]`,
      '',
    ]
    expect(await xapi.failure('VDI.list_changed_blocks', s1, s1)).toEqual(
      failed('Source and target VDI are same'),
    )
    // From before CBT was enabled: no log, unrelated.
    expect(await xapi.failure('VDI.list_changed_blocks', plain, s1)).toEqual(
      failed('Source and target VDI are unrelated'),
    )
    // Backwards: the chain runs from the older to the newer.
    const s2 = await xapi.call<string>('VDI.snapshot', d.vdi, {})
    expect(await xapi.failure('VDI.list_changed_blocks', s2, s1)).toEqual(
      failed('Source and target VDI are unrelated'),
    )
    // Turned off and on again: a new set, which the old snapshots cannot be compared with.
    await xapi.call('VDI.disable_cbt', d.vdi)
    expect(await xapi.call('VDI.get_cbt_enabled', d.vdi)).toBe(false)
    await xapi.call('VDI.enable_cbt', d.vdi)
    const s3 = await xapi.call<string>('VDI.snapshot', d.vdi, {})
    expect(await xapi.failure('VDI.list_changed_blocks', s2, s3)).toEqual(
      failed('Source and target VDI are unrelated'),
    )
    // No licence for CBT.
    sim.faults.add('cbt-unlicensed')
    await xapi.call('VDI.disable_cbt', d.vdi)
    expect(await xapi.failure('VDI.enable_cbt', d.vdi)).toEqual(['LICENCE_RESTRICTION', 'CBT'])
  })

  it('cbt-reset: the next snapshot finds CBT turned off under it, and cannot be compared with the last', async () => {
    const { sim, xapi } = await demoSim()
    const d = await debianDisk(sim, xapi)
    await xapi.call('VDI.enable_cbt', d.vdi)
    const s1 = await xapi.call<string>('VDI.snapshot', d.vdi, {})
    sim.faults.add('cbt-reset')
    const s2 = await xapi.call<string>('VDI.snapshot', d.vdi, {})
    expect(await xapi.call('VDI.get_cbt_enabled', d.vdi)).toBe(false)
    expect(await xapi.call('VDI.get_cbt_enabled', s2)).toBe(false)
    expect((await xapi.failure('VDI.list_changed_blocks', s1, s2))[0]).toBe('SR_BACKEND_FAILURE_460')
  })
})
