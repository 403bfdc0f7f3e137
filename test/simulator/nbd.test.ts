// xapi-sim's NBD servers against an NBD client that is not ours (Debian's libnbd-bin: nbdinfo,
// nbdcopy), and its negotiation byte by byte where libnbd hides it: what xapi-nbd offers (TLS
// when a network has purpose nbd, EXPORT_NAME only), what it refuses, and where it answers
// (VDI.get_nbd_info on a pool of three hosts).
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import type { XapiSim } from '../../simulator/xapi/server.js'
import { tempDir } from '../helpers/hooks.js'
import type { TestClient } from '../helpers/rpc.js'
import { demoSim } from '../helpers/sim.js'

const run = promisify(execFile)

interface NbdInfo {
  exportname: string
  address: string
  port: string
  cert: string
  subject: string
}

async function disk(xapi: TestClient, vmName: string, userdevice: string) {
  const vm = await xapi.vmByName(vmName)
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm))
    if ((await xapi.call('VBD.get_userdevice', vbd)) === userdevice) {
      const vdi = await xapi.call<string>('VBD.get_VDI', vbd)
      return { vdi, uuid: await xapi.call<string>('VDI.get_uuid', vdi) }
    }
  throw new Error(`no disk ${userdevice}`)
}

async function withPurpose(xapi: TestClient, purpose: 'nbd' | 'insecure_nbd'): Promise<string> {
  const network = (await xapi.call<string[]>('network.get_all'))[0]!
  await xapi.call('network.add_purpose', network, purpose)
  return network
}

/** The NBD URI of a get_nbd_info record, for libnbd (the export name percent-encoded in the path). */
function uriOf(info: NbdInfo, tls: boolean): string {
  const scheme = tls ? 'nbds' : 'nbd'
  return `${scheme}://${info.address}:${info.port}/${encodeURIComponent(info.exportname)}${tls ? '?tls-verify-peer=false' : ''}`
}

/** A raw connection and what the server says, read exactly. */
function rawConnection(port: number, address: string) {
  const socket: Socket = connect(port, address)
  let buffered = Buffer.alloc(0)
  let closed = false
  const waiters: (() => void)[] = []
  const wake = () => waiters.splice(0).forEach((w) => w())
  socket.on('data', (d: Buffer) => ((buffered = Buffer.concat([buffered, d])), wake()))
  socket.on('close', () => ((closed = true), wake()))
  socket.on('error', () => undefined)
  const read = async (n: number): Promise<Buffer | undefined> => {
    while (buffered.length < n && !closed) await new Promise<void>((r) => waiters.push(r))
    if (buffered.length < n) return undefined
    const out = buffered.subarray(0, n)
    buffered = buffered.subarray(n)
    return out
  }
  const option = (opt: number, payload = Buffer.alloc(0)) => {
    const head = Buffer.alloc(16)
    head.write('IHAVEOPT', 0)
    head.writeUInt32BE(opt, 8)
    head.writeUInt32BE(payload.length, 12)
    socket.write(Buffer.concat([head, payload]))
  }
  /** The reply type of the next option reply. */
  const replyType = async () => (await read(20))?.readUInt32BE(12)
  const isClosed = async () => (await read(1)) === undefined
  return { socket, read, option, replyType, isClosed }
}

async function nbdSim(): Promise<{ sim: XapiSim; xapi: TestClient }> {
  // Every host with its own certificate (a pool of three always has them).
  return demoSim({ hosts: 3 })
}

describe('xapi-sim: NBD', () => {
  it('get_nbd_info: nothing without an NBD network; then one record per host that sees the SR, with its certificate', async () => {
    const { sim, xapi } = await nbdSim()
    const local = await disk(xapi, 'Debian', '0') // Local storage, on the third host
    const shared = await disk(xapi, 'Debian', '1') // Shared Storage, on every host
    expect(await xapi.call('VDI.get_nbd_info', local.vdi)).toEqual([])
    const network = await withPurpose(xapi, 'nbd')
    expect(await xapi.failure('network.add_purpose', network, 'insecure_nbd')).toEqual([
      'NETWORK_INCOMPATIBLE_PURPOSES',
      'insecure_nbd',
      'nbd',
    ])
    const [info, ...more] = await xapi.call<NbdInfo[]>('VDI.get_nbd_info', local.vdi)
    expect(more).toEqual([])
    const host3 = (await xapi.call<string[]>('host.get_all'))[2]!
    expect(info).toEqual({
      exportname: `/${local.uuid}?session_id=${xapi.session}`,
      address: '127.0.0.3',
      port: String(sim.context.nbd.port),
      cert: await xapi.call<string>('host.get_server_certificate', host3),
      subject: expect.any(String),
    })
    expect(info!.cert).toMatch(/^-----BEGIN CERTIFICATE-----/)
    const addresses = (await xapi.call<NbdInfo[]>('VDI.get_nbd_info', shared.vdi)).map((i) => i.address)
    expect(addresses.sort()).toEqual(['127.0.0.1', '127.0.0.2', '127.0.0.3'])
  })

  it('nbdinfo and nbdcopy read a disk over TLS from the host that holds it, byte for byte', async () => {
    const { sim, xapi } = await nbdSim()
    const local = await disk(xapi, 'Debian', '0')
    await withPurpose(xapi, 'nbd')
    const [info] = await xapi.call<NbdInfo[]>('VDI.get_nbd_info', local.vdi)
    const uri = uriOf(info!, true)
    const described = JSON.parse((await run('nbdinfo', ['--json', uri])).stdout) as {
      exports: { 'export-size': number; is_read_only: boolean }[]
    }
    const size = Number(await xapi.call('VDI.get_virtual_size', local.vdi))
    expect(described.exports[0]).toMatchObject({ 'export-size': size, is_read_only: true })
    const out = join(tempDir(), 'disk.img')
    await run('nbdcopy', [uri, out])
    expect(readFileSync(out).equals(readFileSync(sim.context.disks.path(local.uuid)))).toBe(true)
    // Served, the disk was attached to the control domain; afterwards, no VBD is left.
    expect(await xapi.call('VDI.get_VBDs', local.vdi)).toHaveLength(1)
  })

  it('insecure_nbd: plain NBD; EXPORT_NAME is the one way in (GO and INFO unsupported), a bad session closes', async () => {
    const { sim, xapi } = await nbdSim()
    const local = await disk(xapi, 'Debian', '0')
    await withPurpose(xapi, 'insecure_nbd')
    const [info] = await xapi.call<NbdInfo[]>('VDI.get_nbd_info', local.vdi)
    const out = join(tempDir(), 'disk.img')
    await run('nbdcopy', [uriOf(info!, false), out])
    expect(readFileSync(out).equals(readFileSync(sim.context.disks.path(local.uuid)))).toBe(true)

    const c = rawConnection(sim.context.nbd.port, '127.0.0.3')
    const greeting = (await c.read(18))!
    expect(greeting.toString('latin1', 0, 16)).toBe('NBDMAGICIHAVEOPT')
    expect(greeting.readUInt16BE(16)).toBe(1) // FIXED_NEWSTYLE, no NO_ZEROES
    c.socket.write(Buffer.from([0, 0, 0, 1]))
    c.option(7) // GO
    expect(await c.replyType()).toBe(0x80000001) // ERR_UNSUP
    c.option(6) // INFO
    expect(await c.replyType()).toBe(0x80000001)
    c.option(3) // LIST
    expect(await c.replyType()).toBe(0x80000002) // ERR_POLICY
    c.option(1, Buffer.from(`/${local.uuid}?session_id=OpaqueRef:not-a-session`))
    expect(await c.isClosed()).toBe(true)
  })

  it('nbd: every option before STARTTLS gets ERR_TLS_REQD, EXPORT_NAME in clear text closes', async () => {
    const { sim, xapi } = await nbdSim()
    await withPurpose(xapi, 'nbd')
    const c = rawConnection(sim.context.nbd.port, '127.0.0.2')
    await c.read(18)
    c.socket.write(Buffer.from([0, 0, 0, 1]))
    c.option(7)
    expect(await c.replyType()).toBe(0x80000005) // ERR_TLS_REQD
    c.option(1, Buffer.from('/anything'))
    expect(await c.isClosed()).toBe(true)
  })

  it('refuses a connection when no network, or both kinds, have an NBD purpose, and under the fault nbd-refused', async () => {
    const { sim, xapi } = await nbdSim()
    expect(await rawConnection(sim.context.nbd.port, '127.0.0.1').isClosed()).toBe(true)
    await withPurpose(xapi, 'nbd')
    sim.faults.add('nbd-refused')
    expect(await rawConnection(sim.context.nbd.port, '127.0.0.1').isClosed()).toBe(true)
  })

  it('nbd-cut: a connection dropped mid-read fails the copy', async () => {
    const { sim, xapi } = await nbdSim()
    const local = await disk(xapi, 'Debian', '0')
    await withPurpose(xapi, 'nbd')
    const [info] = await xapi.call<NbdInfo[]>('VDI.get_nbd_info', local.vdi)
    sim.faults.add('nbd-cut:1MiB')
    await expect(run('nbdcopy', [uriOf(info!, true), join(tempDir(), 'disk.img')])).rejects.toThrow()
  })
})
