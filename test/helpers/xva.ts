// Test helpers for XVA files: download, list entries, and fetch raw disk contents.
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { Readable } from 'node:stream'
import { gunzipSync } from 'node:zlib'
import tar from 'tar-stream'
import { getGlobalDispatcher, interceptors, request, type Dispatcher } from 'undici'
import Deserializer from 'xmlrpc/lib/deserializer.js'

/** The tests' client follows xapi's 302 to the pool member that holds the storage, as dpxen does. */
function following(): Dispatcher {
  return getGlobalDispatcher().compose(interceptors.redirect({ maxRedirections: 3 }))
}

export interface TarEntry {
  name: string
  data: Buffer
}

export async function download(
  url: string,
): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  const res = await request(url, { dispatcher: following() })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body }
}

/** zstd decoded by Debian's zstd command: a decoder that is neither dpxen's nor xapi-sim's. */
export function unzstd(data: Buffer): Buffer {
  return execFileSync('zstd', ['-d', '-c', '-q'], { input: data, maxBuffer: 1 << 30 })
}

/** Every entry of a (possibly gzip or zstd compressed) tar archive, in order. */
export async function entries(archive: Buffer): Promise<TarEntry[]> {
  let plain = archive
  if (archive[0] === 0x1f && archive[1] === 0x8b) plain = gunzipSync(archive)
  else if (archive.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) plain = unzstd(archive)
  const out: TarEntry[] = []
  const extract = tar.extract()
  Readable.from([plain]).pipe(extract)
  for await (const entry of extract) {
    const parts: Buffer[] = []
    for await (const part of entry) parts.push(part as Buffer)
    out.push({ name: entry.header.name, data: Buffer.concat(parts) })
  }
  return out
}

/** Builds an uncompressed tar archive from entries (to hand-craft good and bad XVAs). */
export async function pack(list: TarEntry[]): Promise<Buffer> {
  const p = tar.pack()
  for (const e of list) p.entry({ name: e.name, size: e.data.length }, e.data)
  p.finalize()
  const parts: Buffer[] = []
  for await (const part of p) parts.push(part as Buffer)
  return Buffer.concat(parts)
}

export async function rawDisk(baseUrl: string, session: string, vdi: string): Promise<Buffer> {
  const { status, body } = await download(
    `${baseUrl}/export_raw_vdi?session_id=${session}&vdi=${vdi}&format=raw`,
  )
  if (status !== 200) throw new Error(`export_raw_vdi: HTTP ${status}`)
  return body
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

export async function upload(
  url: string,
  body: Buffer,
  headers: Record<string, string> = {},
): Promise<number> {
  const res = await request(url, {
    dispatcher: following(),
    method: 'PUT',
    body,
    headers: { 'content-length': String(body.length), ...headers },
  })
  await res.body.dump()
  return res.statusCode
}

/**
 * Rebuilds every disk of an XVA the way xapi's importer does (gaps of the first chunk's
 * length, zero-length keep-alive entries) and returns their SHA-256s, sorted. Independent of
 * dpxen's own verifier, so tests can check it.
 */
export async function rebuiltDiskHashes(archive: Buffer): Promise<string[]> {
  const list = await entries(archive)
  type Ova = { objects: { class: string; id: string; snapshot: Record<string, unknown> }[] }
  const ova = await new Promise<Ova>((resolve, reject) =>
    new Deserializer().deserializeMethodResponse(
      Readable.from([
        Buffer.from(
          `<methodResponse><params><param>${list[0]!.data.toString()}</param></params></methodResponse>`,
        ),
      ]),
      (error, value) => (error ? reject(error) : resolve(value as Ova)),
    ),
  )
  const sizes = new Map<string, number>()
  for (const o of ova.objects) if (o.class === 'VDI') sizes.set(o.id, Number(o.snapshot.virtual_size))
  const disks = new Map<string, { data: Buffer; offset: number; last: number; first?: number }>()
  for (const entry of list.slice(1)) {
    if (/\.(xxhash|checksum)$/.test(entry.name)) continue
    const [id, num] = entry.name.split('/') as [string, string]
    const disk = disks.get(id) ?? { data: Buffer.alloc(sizes.get(id) ?? 0), offset: 0, last: -1 }
    disks.set(id, disk)
    disk.first ??= entry.data.length
    disk.offset += (Number(num) - disk.last - 1) * disk.first
    entry.data.copy(disk.data, disk.offset)
    disk.offset += entry.data.length
    disk.last = Number(num)
  }
  return [...disks.values()].map((d) => sha256(d.data)).sort()
}
