// The VHD verifier on block tables of real sizes, up to 2 TiB: a fully written 2040 GiB disk (the
// most `format=vhd` exports, 1,044,480 blocks of 2 MiB; blocks must start below 2^32 sectors) and
// a 2 TiB table with one block in a hundred. Each case runs in a child process of its own so that
// its peak RSS is its own; the blocks' data is one shared buffer of zeros (the verifier reads the
// bitmap and skips the data), so the figure is the verifier's own cost, not the disk's.
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { vhdFooter, vhdHeader, VHD_BLOCK } from '../../simulator/xapi/xva/vhd.js'
import { VhdVerifier } from '../../src/xva/vhd.js'

export interface VhdRow {
  sizeGiB: number
  blocks: number
  seconds: number
  blocksPerSecond: number
  peakRssMiB: number
}

const CHILD = 'DPXEN_BENCH_VHD_CHILD'
const SECTOR = 512
const BAT_OFFSET = 2048

/** Feeds the verifier a VHD of `sizeGiB` holding every `every`-th block; returns the blocks. */
function verifyOne(sizeGiB: number, every: number): number {
  const size = sizeGiB * 1024 ** 3
  const entries = Math.ceil(size / VHD_BLOCK)
  const bat = Buffer.alloc(Math.ceil((entries * 4) / SECTOR) * SECTOR, 0xff)
  let sector = (BAT_OFFSET + bat.length) / SECTOR
  let blocks = 0
  for (let i = 0; i < entries; i += every) {
    bat.writeUInt32BE(sector, i * 4)
    sector += (SECTOR + VHD_BLOCK) / SECTOR
    blocks++
  }
  const footer = vhdFooter(size, '6c1e4a2e-1f7b-4a43-9b3e-2f1d2c3b4a5e', false)
  const verifier = new VhdVerifier()
  verifier.push(Buffer.concat([footer, vhdHeader(entries, undefined), Buffer.alloc(SECTOR), bat]))
  const bitmap = Buffer.alloc(SECTOR, 0xff)
  const data = Buffer.alloc(VHD_BLOCK)
  for (let n = 0; n < blocks; n++) {
    verifier.push(bitmap)
    // In 256 KiB pieces, as the export hands them over.
    for (let at = 0; at < VHD_BLOCK; at += 256 * 1024) verifier.push(data.subarray(at, at + 256 * 1024))
  }
  verifier.push(footer)
  return verifier.finish().blocks
}

/** In the child: one case, its result on stdout as JSON. */
export function vhdChild(): boolean {
  const spec = process.env[CHILD]
  if (!spec) return false
  const [sizeGiB, every] = spec.split(':').map(Number) as [number, number]
  const started = process.hrtime.bigint()
  const blocks = verifyOne(sizeGiB, every)
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const peakRssMiB = process.resourceUsage().maxRSS / 1024
  process.stdout.write(
    JSON.stringify({ sizeGiB, blocks, seconds, blocksPerSecond: blocks / seconds, peakRssMiB }),
  )
  return true
}

export function benchVhd(): VhdRow[] {
  const rows: VhdRow[] = []
  for (const [sizeGiB, every] of [
    [128, 1],
    [512, 1],
    [2040, 1],
    [2048, 100],
  ] as const) {
    const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...process.env, [CHILD]: `${sizeGiB}:${every}` },
      encoding: 'utf8',
    })
    const row = JSON.parse(out) as VhdRow
    console.log(
      `VHD verifier ${sizeGiB} GiB, ${row.blocks} block(s): ${row.seconds.toFixed(2)} s (${Math.round(row.blocksPerSecond)} blocks/s), peak RSS ${row.peakRssMiB.toFixed(0)} MiB`,
    )
    rows.push(row)
  }
  return rows
}
