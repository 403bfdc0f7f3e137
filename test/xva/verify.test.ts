// The streaming XVA verifier, on real simulator exports and on damaged ones.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { gzipSync } from 'node:zlib'
import xxhash from 'xxhash-wasm'
import { checkStream } from '../../src/xva/check.js'
import { XvaVerifier, type XvaSummary } from '../../src/xva/verify.js'
import { verifyFile } from '../../src/xva/verify-file.js'
import type { TestClient } from '../helpers/rpc.js'
import { tempDir } from '../helpers/hooks.js'
import { demoSim } from '../helpers/sim.js'
import { download, entries, pack, type TarEntry } from '../helpers/xva.js'

const { h64Raw: xxh64 } = await xxhash()

async function exportOf(url: string, xapi: TestClient, name: string, extra = ''): Promise<Buffer> {
  const vm = await xapi.vmByName(name)
  const snap = await xapi.call<string>('VM.snapshot', vm, 'for-verify')
  return (await download(`${url}/export?session_id=${xapi.session}&ref=${snap}${extra}`)).body
}

async function check(data: Buffer, pieces = 7777): ReturnType<typeof checkStream<XvaSummary>> {
  // Feed in odd-sized pieces so headers and entries straddle chunk boundaries.
  async function* source(): AsyncGenerator<Buffer> {
    for (let i = 0; i < data.length; i += pieces) yield data.subarray(i, i + pieces)
  }
  return checkStream(source(), new XvaVerifier(), { compressed: true })
}

describe('XVA verifier', () => {
  it.each([
    ['xxhash', {}, ''],
    ['sha1', { checksum: 'sha1' as const }, ''],
    ['gzip', {}, '&use_compression=gzip'],
    ['zstd', {}, '&use_compression=zstd'],
    ['keep-alive entries', { faults: ['export-keepalive'] }, ''],
  ])('accepts a simulator export (%s) and describes it', async (_what, options, extra) => {
    const { sim, xapi } = await demoSim(options)
    const body = await exportOf(sim.url, xapi, 'Debian', extra)
    const result = await check(body)
    expect(result.summary.vm.name).toBe('for-verify')
    expect(result.summary.disks.map((d) => [d.userdevice, d.virtualSize])).toEqual(
      expect.arrayContaining([
        ['0', 8 * 1024 * 1024],
        ['1', 4 * 1024 * 1024],
      ]),
    )
    expect(result.summary.checksum).toBe(options && 'checksum' in options ? 'sha1' : 'xxhash')
    expect(result.bytes).toBe(body.length)
  })

  async function damaged(transform: (list: TarEntry[]) => TarEntry[]): Promise<string> {
    const { sim, xapi } = await demoSim()
    const list = await entries(await exportOf(sim.url, xapi, 'vm2'))
    const error = await check(await pack(transform(list))).catch((e: unknown) => e)
    expect((error as { code?: string }).code).toBe('XVA_INVALID')
    return (error as Error).message
  }

  it.each<[string, (l: TarEntry[]) => TarEntry[], RegExp]>([
    [
      'a bad checksum',
      (l) => l.map((e, i) => (i === 2 ? { ...e, data: Buffer.from('0000000000000000') } : e)),
      /bad checksum for chunk Ref:\d+\/00000000/,
    ],
    [
      'a flipped byte',
      (l) =>
        l.map((e, i) =>
          i === 1 ? { ...e, data: Buffer.concat([Buffer.from([e.data[0]! ^ 0xff]), e.data.subarray(1)]) } : e,
        ),
      /bad checksum/,
    ],
    [
      'ova.xml not first',
      (l) => [l[1]!, l[2]!, l[0]!, ...l.slice(3)],
      /the first entry is "Ref:\d+\/00000000", not ova.xml/,
    ],
    ['reordered chunks', (l) => [l[0]!, l[3]!, l[4]!, l[1]!, l[2]!, ...l.slice(5)], /out of order/],
    ['the last chunk missing', (l) => l.slice(0, -2), /its last chunk is missing/],
    [
      'a checksum entry missing',
      (l) => l.filter((_e, i) => i !== 2),
      /is followed by ".*", not its checksum entry/,
    ],
    [
      'a path-traversal name',
      (l) => [...l.slice(0, -2), { name: '../../etc/passwd', data: Buffer.from('x') }],
      /unexpected entry "..\/..\/etc\/passwd"/,
    ],
    [
      'an entry of another disk',
      (l) => [...l, { name: 'Ref:999999/00000000', data: Buffer.alloc(10) }],
      /belongs to no disk expected here/,
    ],
    [
      'a chunk larger than 1 MiB',
      (l) => l.map((e, i) => (i === 1 ? { ...e, data: Buffer.alloc(1024 * 1024 + 1) } : e)),
      /more than 1 MiB|past the end/,
    ],
  ])('rejects %s', async (_what, transform, message) => {
    expect(await damaged(transform)).toMatch(message)
  })

  it('rejects a truncated stream, a stream without end marker, and data after the end marker', async () => {
    const { sim, xapi } = await demoSim()
    const body = await exportOf(sim.url, xapi, 'vm2')
    await expect(check(body.subarray(0, body.length - 1536 - 100))).rejects.toThrow(/cut off|truncated/)
    await expect(check(body.subarray(0, body.length - 1024))).rejects.toThrow(/no tar end marker/)
    await expect(check(Buffer.concat([body, Buffer.from('junk')]))).rejects.toThrow(
      /data after the tar end marker/,
    )
    // Zero padding after the end marker is a valid archive, its size counted.
    await expect(check(Buffer.concat([body, Buffer.alloc(8192)]))).resolves.toMatchObject({
      bytes: body.length + 8192,
      summary: { vm: { name: 'for-verify' } },
    })
  })

  it('rejects a header with a base-256 (huge) size, a bad header checksum, and non-tar input', async () => {
    const { sim, xapi } = await demoSim()
    const body = Buffer.from(await exportOf(sim.url, xapi, 'vm2'))
    const huge = Buffer.from(body)
    huge[124] = 0x80 // ova.xml's size field, in base-256 form
    await expect(check(huge)).rejects.toThrow(/base-256|bad checksum/)
    const broken = Buffer.from(body)
    broken[10] = broken[10]! ^ 1
    await expect(check(broken)).rejects.toThrow(/bad checksum \(not a tar stream, or corrupt\)/)
    await expect(check(Buffer.from('hello world, this is not an XVA'.repeat(40)))).rejects.toThrow(/XVA|tar/)
    await expect(check(gzipSync(Buffer.from('not a tar inside')))).rejects.toThrow()
  })

  it.each(['none', 'gzip', 'zstd'] as const)(
    'verifies a file on disk the same way (dpxen verify), read in many pieces: %s',
    async (compression) => {
      const { sim, xapi } = await demoSim()
      const dir = tempDir()
      const path = join(dir, 'vm.xva')
      const query = compression === 'none' ? '' : `&use_compression=${compression}`
      const file = Buffer.from(await exportOf(sim.url, xapi, 'Debian', query))
      // Several of the reader's 1 MiB reads: its buffer is reused while a decompressor works.
      expect(file.length).toBeGreaterThan(3 * 1024 * 1024)
      writeFileSync(path, file)
      const result = await verifyFile(path)
      expect(result.compression).toBe(compression)
      expect(result.bytes).toBe(file.length)
      expect(result.xxh64).toBe(xxh64(file).toString(16).padStart(16, '0'))
      expect(result.summary.disks[0]!.chunks).toBeGreaterThan(3)
    },
  )
})
