// dpxen's VHD intake (src/xva/vhd.ts) on its own: a slow disk makes it stop the reader and wake
// it again, the file is the stream byte for byte, and a stream cut short, with an error page
// after it, or with a damaged header never passes.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { FileSink } from '../../src/xva/file-sink.js'
import { VhdIntake, VhdVerifier } from '../../src/xva/vhd.js'
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
    const intake = new VhdIntake(sink, { maxPiece: PIECE, wake: () => woken() })
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
