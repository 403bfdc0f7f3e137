// dpxen's NBD client (src/xapi/nbd.ts) against xapi-sim's servers (EXPORT_NAME only, TLS with
// the host's certificate, as xapi-nbd) and against an NBD server that is not ours (Debian's
// qemu-nbd: NBD_OPT_GO, plain and TLS): exact bytes, the pinned certificate, an expired session,
// a stall, an abort and a cut, and a property test of seeded reads over TLS.
import { execa, type ResultPromise } from 'execa'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { ms } from '../../src/core/format.js'
import { NbdConnection, readAhead, type NbdTarget } from '../../src/xapi/nbd.js'
import { tempDir } from '../helpers/hooks.js'
import type { TestClient } from '../helpers/rpc.js'
import { demoSim } from '../helpers/sim.js'

const MiB = 1024 * 1024
const signal = new AbortController().signal
const open: NbdConnection[] = []
const children: ResultPromise[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()))
  for (const child of children.splice(0)) child.kill('SIGTERM')
})

async function connect(target: NbdTarget, idle = 5000, abort = signal): Promise<NbdConnection> {
  const c = await NbdConnection.open(target, { idleMs: ms(idle), signal: abort })
  open.push(c)
  return c
}

/** Reads the whole export in pieces of `piece` bytes. */
async function readAll(c: NbdConnection, piece = 2 * MiB): Promise<Buffer> {
  const out = Buffer.alloc(c.size)
  for (let at = 0; at < c.size; at += piece) {
    const n = Math.min(piece, c.size - at)
    const into = Buffer.alloc(n)
    await c.read(at, n, into, signal)
    into.copy(out, at)
  }
  return out
}

/** The NBD record of a Debian disk, with the network given the purpose nbd (TLS). */
async function simTarget(userdevice = '0') {
  const { sim, xapi } = await demoSim({ hosts: 3 })
  await xapi.call('network.add_purpose', (await xapi.call<string[]>('network.get_all'))[0], 'nbd')
  const vdi = await diskOf(xapi, userdevice)
  const [info] = await xapi.call<{ exportname: string; address: string; port: string; cert: string }[]>(
    'VDI.get_nbd_info',
    vdi,
  )
  const target: NbdTarget = {
    address: info!.address,
    port: Number(info!.port),
    exportName: info!.exportname,
    cert: info!.cert,
  }
  return {
    sim,
    xapi,
    vdi,
    target,
    file: sim.context.disks.path(await xapi.call<string>('VDI.get_uuid', vdi)),
  }
}

async function diskOf(xapi: TestClient, userdevice: string): Promise<string> {
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', await xapi.vmByName('Debian')))
    if ((await xapi.call('VBD.get_userdevice', vbd)) === userdevice)
      return xapi.call<string>('VBD.get_VDI', vbd)
  throw new Error('no such disk')
}

async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

/**
 * A CA and a server certificate it signed (qemu-nbd's TLS wants both, and a leaf that is not a
 * CA), in the file names qemu's tls-creds-x509 reads.
 */
async function qemuPki(): Promise<{ dir: string; cert: string }> {
  const dir = join(tempDir(), 'pki')
  mkdirSync(dir)
  const at = (name: string): string => join(dir, name)
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
  await execa('openssl', [
    'req',
    '-x509',
    ...ec,
    '-days',
    '2',
    '-subj',
    '/CN=test-ca',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-keyout',
    at('ca.key'),
    '-out',
    at('ca-cert.pem'),
  ])
  await execa('openssl', [
    'req',
    ...ec,
    '-subj',
    '/CN=127.0.0.1',
    '-keyout',
    at('server-key.pem'),
    '-out',
    at('server.csr'),
  ])
  writeFileSync(at('ext.cnf'), 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n')
  await execa('openssl', [
    'x509',
    '-req',
    '-in',
    at('server.csr'),
    '-CA',
    at('ca-cert.pem'),
    '-CAkey',
    at('ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    at('ext.cnf'),
    '-out',
    at('server-cert.pem'),
  ])
  return { dir, cert: readFileSync(at('server-cert.pem'), 'utf8') }
}

/** qemu-nbd serving `file` read-only, with TLS from `pki` when given. */
async function qemuNbd(file: string, pki?: { dir: string; cert: string }): Promise<NbdTarget> {
  const port = await freePort()
  const args = ['-r', '-t', '-f', 'raw', '-b', '127.0.0.1', '-p', String(port), '-x', 'disk']
  if (pki)
    args.push(
      '--object',
      `tls-creds-x509,id=tls0,dir=${pki.dir},endpoint=server,verify-peer=off`,
      '--tls-creds',
      'tls0',
    )
  const child = execa('qemu-nbd', [...args, file], { reject: false })
  children.push(child)
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = createServer()
      s.once('error', () => resolve(true))
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)))
    })
    if (up) break
    await new Promise((r) => setTimeout(r, 50))
  }
  return { address: '127.0.0.1', port, exportName: 'disk', ...(pki ? { cert: pki.cert } : {}) }
}

describe('NBD client', () => {
  it("xapi-sim over TLS (EXPORT_NAME, as xapi-nbd): the disk byte for byte, read-only, the host's certificate pinned", async () => {
    const { target, file } = await simTarget('0')
    const c = await connect(target)
    expect(c.readOnly).toBe(true)
    expect((await readAll(c)).equals(readFileSync(file))).toBe(true)
  })

  it("refuses another host's certificate before the export name is sent", async () => {
    const { xapi, target } = await simTarget('0')
    const other = await xapi.call<string>(
      'host.get_server_certificate',
      (await xapi.call<string[]>('host.get_all'))[0],
    )
    await expect(connect({ ...target, cert: other })).rejects.toMatchObject({
      code: 'CONNECT_FAILED',
      message: expect.stringMatching(/is not the one the pool records for the host/),
    })
  })

  it('an expired session: one line saying so, not a bare close', async () => {
    const { target } = await simTarget('0')
    await expect(
      connect({
        ...target,
        exportName: target.exportName.replace(/session_id=.*/, 'session_id=OpaqueRef:gone'),
      }),
    ).rejects.toMatchObject({ code: 'EXPORT_FAILED', message: expect.stringMatching(/expired session/) })
  })

  it('a connection cut mid-read (nbd-cut) is TRANSFER_CLOSED, never a short read', async () => {
    const { sim, target } = await simTarget('0')
    sim.faults.add('nbd-cut:1MiB')
    const c = await connect(target)
    await expect(readAll(c)).rejects.toMatchObject({ code: 'TRANSFER_CLOSED' })
  })

  it('nothing listening: CONNECT_FAILED naming the NBD address', async () => {
    const port = await freePort()
    await expect(connect({ address: '127.0.0.1', port, exportName: 'x' })).rejects.toMatchObject({
      code: 'CONNECT_FAILED',
      message: `cannot reach nbd://127.0.0.1:${port}: ECONNREFUSED (check url and the network)`,
    })
  })

  it('a server that stops answering is TRANSFER_STALLED; an abort is ABORTED at once', async () => {
    const silent = createServer(() => undefined)
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const port = (silent.address() as AddressInfo).port
    try {
      await expect(connect({ address: '127.0.0.1', port, exportName: 'x' }, 300)).rejects.toMatchObject({
        code: 'TRANSFER_STALLED',
      })
      const controller = new AbortController()
      setTimeout(() => controller.abort(), 100)
      const started = Date.now()
      await expect(
        connect({ address: '127.0.0.1', port, exportName: 'x' }, 60_000, controller.signal),
      ).rejects.toMatchObject({
        code: 'ABORTED',
      })
      expect(Date.now() - started).toBeLessThan(5000)
    } finally {
      silent.close()
    }
  })

  it('qemu-nbd (NBD_OPT_GO), plain and over TLS: exact bytes', async () => {
    const file = join(tempDir(), 'disk.raw')
    writeFileSync(file, randomBytes(5 * MiB + 512))
    const plain = await connect(await qemuNbd(file))
    expect((await readAll(plain, 3 * MiB)).equals(readFileSync(file))).toBe(true)
    const tls = await connect(await qemuNbd(file, await qemuPki()))
    expect((await readAll(tls)).equals(readFileSync(file))).toBe(true)
  })

  it('readAhead: three connections at once give every block in order, byte for byte; a cut one fails the read', async () => {
    const { sim, target, file } = await simTarget('0')
    const disk = readFileSync(file)
    const connections = [await connect(target), await connect(target), await connect(target)]
    const blockSize = 1024 * 1024
    const blocks = Array.from({ length: Math.ceil(disk.length / blockSize) }, (_, i) => i)
    const read = readAhead(connections, blocks, { blockSize, size: disk.length, signal })
    const out = Buffer.alloc(disk.length)
    for (const b of blocks) {
      const into = Buffer.alloc(blockSize)
      await read(b, into)
      into.copy(out, b * blockSize, 0, Math.min(blockSize, disk.length - b * blockSize))
    }
    expect(out.equals(disk)).toBe(true)
    sim.faults.add('nbd-cut:1MiB')
    const cut = [await connect(target), await connect(target)]
    const failing = readAhead(cut, blocks, { blockSize, size: disk.length, signal })
    await expect(
      (async () => {
        for (const b of blocks) await failing(b, Buffer.alloc(blockSize))
      })(),
    ).rejects.toMatchObject({ code: 'TRANSFER_CLOSED' })
  })

  it('property test over TLS: 300 seeded reads of any aligned offset and length are exactly the disk', async () => {
    const { target, file } = await simTarget('1')
    const disk = readFileSync(file)
    const c = await connect(target)
    let seed = 20261206
    const next = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n)
    const sectors = c.size / 512
    for (let i = 0; i < 300; i++) {
      const start = next(sectors)
      const count = 1 + next(Math.min(4096, sectors - start))
      const into = Buffer.alloc(count * 512)
      await c.read(start * 512, count * 512, into, signal)
      expect(
        into.equals(disk.subarray(start * 512, (start + count) * 512)),
        `read ${i}: ${start}+${count}`,
      ).toBe(true)
    }
  })
})
