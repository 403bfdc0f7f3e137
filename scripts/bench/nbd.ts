// A full run's disk read over NBD (what incremental runs with changed block tracking do): every
// 2 MiB block of one large disk read over 1, 2 and 4 connections at once (readAhead) and
// written as a dynamic VHD through the one intake (hash, VhdVerifier, the file's slabs). The
// reader runs as a child on the measured core, as the hooks do; the simulator serves it from
// the other core. Compare with the export line of the transfers part (the same VM as an XVA).
import { rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ms } from '../../src/core/format.js'
import { NbdConnection, readAhead, type NbdTarget } from '../../src/xapi/nbd.js'
import { CheckedIntake } from '../../src/xva/intake.js'
import { FileSink } from '../../src/xva/file-sink.js'
import { VhdVerifier } from '../../src/xva/vhd.js'
import { VHD_BLOCK, writeVhd } from '../../src/xva/vhd-write.js'
import { login } from './client.js'
import { exec, mbps, median, type Machine } from './machine.js'
import type { Options } from './options.js'
import { startBigVm } from './transfer.js'

const CHILD = 'DPXEN_BENCH_NBD_CHILD'
const PIECE = 256 * 1024

export interface NbdRow {
  sizeGiB: number
  connections: number
  /** MB/s of disk bytes read and written, each run. */
  runs: number[]
  median: number
  peakRssMiB: number
}

interface ChildSpec {
  target: NbdTarget
  connections: number
  out: string
}

/** In the child: the whole disk read and written; its seconds and peak RSS on stdout. */
export async function nbdChild(): Promise<boolean> {
  const raw = process.env[CHILD]
  if (!raw) return false
  const spec = JSON.parse(raw) as ChildSpec
  const signal = new AbortController().signal
  const started = process.hrtime.bigint()
  const connections = await Promise.all(
    Array.from({ length: spec.connections }, () =>
      NbdConnection.open(spec.target, { idleMs: ms(60_000), signal }),
    ),
  )
  const size = connections[0]!.size
  const blocks = Array.from({ length: Math.ceil(size / VHD_BLOCK) }, (_, i) => i)
  const sink = await FileSink.open(spec.out, {
    flags: 'w',
    mode: 0o600,
    slabSize: 1 << 20,
    slabs: 4,
    direct: true,
  })
  await writeVhd(
    { size, uuid: '00000000-0000-4000-8000-000000000000', blocks },
    (wake) => new CheckedIntake(sink, new VhdVerifier(), { maxPiece: PIECE, wake }),
    readAhead(connections, blocks, { blockSize: VHD_BLOCK, size, signal }),
    { signal, maxPiece: PIECE },
  )
  await Promise.all(connections.map((c) => c.close()))
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  process.stdout.write(JSON.stringify({ size, seconds, peakRssMiB: process.resourceUsage().maxRSS / 1024 }))
  return true
}

export async function benchNbd(
  m: Machine,
  options: Options,
  work: string,
  sizeGiB: number,
): Promise<NbdRow[]> {
  const dir = join(work, `nbd-${sizeGiB}g`)
  const sim = await startBigVm(options, dir, sizeGiB)
  const client = await login(sim.url, options.tls?.fingerprint)
  const rows: NbdRow[] = []
  try {
    const network = (await client.session.call<string[]>('network.get_all'))[0]!
    await client.session.call('network.add_purpose', network, options.tls ? 'nbd' : 'insecure_nbd')
    const vm = (await client.session.call<string[]>('VM.get_by_name_label', 'big'))[0]!
    const vbd = (await client.session.call<string[]>('VM.get_VBDs', vm))[0]!
    const vdi = await client.session.call<string>('VBD.get_VDI', vbd)
    const [info] = await client.session.call<
      { exportname: string; address: string; port: string; cert: string }[]
    >('VDI.get_nbd_info', vdi)
    const target: NbdTarget = {
      address: info!.address,
      port: Number(info!.port),
      exportName: info!.exportname,
      ...(options.tls ? { cert: info!.cert } : {}),
    }
    const out = join(dir, 'disk.vhd')
    for (const connections of [1, 2, 4]) {
      const runs: number[] = []
      let peak = 0
      for (let r = 0; r < options.runs; r++) {
        m.primeMemory(dir, sizeGiB * 2 ** 30)
        const spec: ChildSpec = { target, connections, out }
        const run = await exec(...m.measured(process.execPath, [fileURLToPath(import.meta.url)]), {
          [CHILD]: JSON.stringify(spec),
        })
        const result = JSON.parse(run.stdout) as { size: number; seconds: number; peakRssMiB: number }
        runs.push(mbps(statSync(out).size, result.seconds))
        peak = Math.max(peak, result.peakRssMiB)
        rmSync(out, { force: true })
      }
      const row = { sizeGiB, connections, runs, median: median(runs), peakRssMiB: peak }
      console.log(
        `NBD full read ${sizeGiB} GiB, ${connections} connection(s): ${row.median.toFixed(0)} MB/s into a verified VHD, peak RSS ${peak.toFixed(0)} MiB`,
      )
      rows.push(row)
    }
    return rows
  } finally {
    await client.close()
    await sim.close()
    rmSync(dir, { recursive: true, force: true })
  }
}
