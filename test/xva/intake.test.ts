// dpxen's one intake (src/xva/intake.ts) on its own, with the VHD and the XVA verifiers: a slow
// disk or a full decompressor makes it stop the reader and wake it again, the file is the stream
// byte for byte, and a stream cut short, with an error page after it, with a damaged header or
// a corrupt gzip never passes.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { FileSink } from '../../src/xva/file-sink.js'
import { CheckedIntake } from '../../src/xva/intake.js'
import { VhdVerifier } from '../../src/xva/vhd.js'
import { XvaVerifier } from '../../src/xva/verify.js'
import { tempDir } from '../helpers/hooks.js'
import { demoSim, singleHost } from '../helpers/sim.js'
import { readVhd } from '../helpers/vhd.js'

// One host's handlers and model, spoken to directly.
singleHost()

const PIECE = 64 * 1024

async function debianVhd(): Promise<Buffer> {
  const { sim, xapi } = await demoSim()
  const vm = await xapi.vmByName('Debian')
  const vdi = await xapi.call<string>('VBD.get_VDI', (await xapi.call<string[]>('VM.get_VBDs', vm))[0])
  const res = await request(`${sim.url}/export_raw_vdi?session_id=${xapi.session}&vdi=${vdi}&format=vhd`)
  return Buffer.from(await res.body.arrayBuffer())
}

/** Pushes `data` in pieces as the reader of a download does, waiting whenever told to; the times it waited. */
async function feed(
  intake: CheckedIntake<unknown>,
  data: Buffer,
  wake: (w: () => void) => void,
): Promise<number> {
  let stops = 0
  for (let at = 0; at < data.length; at += PIECE) {
    if (!intake.push(data.subarray(at, at + PIECE))) {
      stops++
      await new Promise<void>((resolve) => wake(resolve))
    }
  }
  return stops
}

async function debianXva(): Promise<Buffer> {
  const { sim, xapi } = await demoSim()
  const snap = await xapi.call<string>('VM.snapshot', await xapi.vmByName('Debian'), 'for-intake')
  const res = await request(`${sim.url}/export?session_id=${xapi.session}&ref=${snap}`)
  expect(res.statusCode).toBe(200)
  return Buffer.from(await res.body.arrayBuffer())
}

/** An XVA intake into a new partial file, being fed `gz`; `fed` is the times the reader was stopped. */
async function gzipIntake(gz: Buffer) {
  const path = join(tempDir(), 'vm.xva.partial')
  const sink = await FileSink.open(path, { flags: 'wx', mode: 0o600, direct: false })
  let woken: () => void = () => undefined
  const intake = new CheckedIntake(sink, new XvaVerifier(), {
    maxPiece: PIECE,
    wake: () => woken(),
    compressed: true,
  })
  return { path, intake, fed: feed(intake, gz, (w) => (woken = w)) }
}

describe('XVA intake, gzip', () => {
  it('the decompressor full stops the reader; the file is the compressed stream, the summary its disks', async () => {
    const xva = await debianXva()
    const gz = gzipSync(xva, { level: 1 })
    const { path, intake, fed } = await gzipIntake(gz)
    const stops = await fed
    const result = await intake.finish()
    expect(stops).toBeGreaterThan(0)
    expect(readFileSync(path).equals(gz)).toBe(true)
    expect(result).toMatchObject({ bytes: gz.length, compression: 'gzip' })
    expect(result.summary.vm.name).toBe('for-intake')
    expect(result.summary.tarBytes).toBe(xva.length)
  })

  it('a corrupt gzip is refused as XVA_INVALID, and abort closes the file', async () => {
    const gz = gzipSync(await debianXva(), { level: 1 })
    gz.fill(0x55, gz.length >> 1, (gz.length >> 1) + 4096)
    const { path, intake, fed } = await gzipIntake(gz)
    const taking = fed.then(() => intake.finish())
    await expect(taking).rejects.toMatchObject({
      code: 'XVA_INVALID',
      message: expect.stringMatching(/gzip stream is corrupt|checksum|not|tar/),
    })
    await intake.abort()
    expect(existsSync(path)).toBe(true) // the caller removes it
  })
})

describe('VHD intake', () => {
  it('a slow disk: the reader is stopped and woken, the file is the stream, the summary its blocks', async () => {
    const vhd = await debianVhd()
    const path = join(tempDir(), 'disk.vhd.partial')
    // Two small slabs: the disk cannot keep up with a reader that never waits.
    const sink = await FileSink.open(path, {
      flags: 'wx',
      mode: 0o600,
      slabSize: PIECE,
      slabs: 2,
      direct: false,
    })
    let woken: () => void = () => undefined
    const intake = new CheckedIntake(sink, new VhdVerifier(), { maxPiece: PIECE, wake: () => woken() })
    let stops = 0
    for (let at = 0; at < vhd.length; at += PIECE) {
      if (!intake.push(vhd.subarray(at, at + PIECE))) {
        stops++
        await new Promise<void>((resolve) => (woken = resolve))
      }
    }
    const result = await intake.finish()
    expect(stops).toBeGreaterThan(0)
    expect(readFileSync(path).equals(vhd)).toBe(true)
    expect(result.bytes).toBe(vhd.length)
    expect(result.summary.blocks).toBe(readVhd(vhd).blocks.size)
    expect(result.summary.type).toBe(3)
  })

  it('never passes a stream cut short, one with an error page after it, or a damaged header', async () => {
    const vhd = await debianVhd()
    const verify =
      (data: Buffer): (() => void) =>
      () => {
        const v = new VhdVerifier()
        for (let at = 0; at < data.length; at += 1000) v.push(data.subarray(at, at + 1000))
        v.finish()
      }
    expect(verify(vhd)).not.toThrow()
    expect(verify(vhd.subarray(0, vhd.length - 512))).toThrow(/it ends after \d+ bytes of \d+/)
    expect(verify(Buffer.concat([vhd, Buffer.from('HTTP/1.1 500 Internal Error\r\n\r\n')]))).toThrow(
      /data after the closing footer/,
    )
    const bad = Buffer.from(vhd)
    bad[512 + 40] = bad[512 + 40]! ^ 1 // the header's parent uuid, its checksum now wrong
    expect(verify(bad)).toThrow(/header checksum/)
    expect(verify(Buffer.from('HTTP/1.1 500 Internal Error\r\n\r\n'.padEnd(600)))).toThrow(/error page/)
  })
})
