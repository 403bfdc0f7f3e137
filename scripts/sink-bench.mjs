// node scripts/sink-bench.mjs FILE.xva DIR [RUNS]: the export's receiving end without the network.
// Reads a cached XVA in 256 KiB pieces and writes it into DIR three ways, taking turns:
//   direct  dpxen's CheckedIntake + XvaVerifier + FileSink as the export uses them (hash, verify, copy into 1 MiB
//           slabs written around the page cache (O_DIRECT) by libuv's thread pool, fsync)
//   intake  the same through the page cache (directIo: false, or no O_DIRECT)
//   inline  the same hash and verification, the slab written synchronously by the main thread
//           into the page cache (as curl writes), fsync
// and prints wall time and CPU (user, system) of each run. Run it under `taskset -c 1` to see
// one core, without to see all of them.
import { closeSync, fsyncSync, openSync, readSync, rmSync, writeSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const { CheckedIntake, FileSink, XvaVerifier, newXxh64 } = await import(join(root, 'build/dev.js'))

const [file, dir, runs = '3'] = process.argv.slice(2)
if (!file || !dir) {
  console.log('usage: node scripts/sink-bench.mjs FILE.xva DIR [RUNS]')
  process.exit(2)
}
const PIECE = 256 * 1024
const SLAB = 1024 * 1024
const out = join(dir, 'sink-bench.xva')

async function intake(direct) {
  const input = openSync(file, 'r')
  const piece = Buffer.allocUnsafeSlow(PIECE)
  const sink = await FileSink.open(out, { slabSize: SLAB, slabs: 4, direct })
  let wake
  const taking = new CheckedIntake(sink, new XvaVerifier(), {
    maxPiece: PIECE,
    wake: () => wake(),
    compressed: true,
  })
  for (let n, position = 0; (n = readSync(input, piece, 0, PIECE, position)) > 0; position += n) {
    if (!taking.push(piece.subarray(0, n))) await new Promise((resolve) => (wake = resolve))
  }
  await taking.finish()
  closeSync(input)
}

async function inline() {
  const input = openSync(file, 'r')
  const output = openSync(out, 'w')
  const piece = Buffer.allocUnsafeSlow(PIECE)
  const slab = Buffer.allocUnsafeSlow(SLAB)
  const hash = newXxh64()
  const verifier = new XvaVerifier()
  let used = 0
  let written = 0
  const flush = () => {
    for (let done = 0; done < used;) done += writeSync(output, slab, done, used - done, written + done)
    written += used
    used = 0
  }
  for (let n, position = 0; (n = readSync(input, piece, 0, PIECE, position)) > 0; position += n) {
    const data = piece.subarray(0, n)
    hash.update(data)
    verifier.push(data)
    for (let offset = 0; offset < n;) {
      const copied = data.copy(slab, used, offset)
      used += copied
      offset += copied
      if (used === SLAB) flush()
    }
  }
  flush()
  verifier.finish()
  fsyncSync(output)
  closeSync(output)
  closeSync(input)
}

const contenders = [
  ['direct', () => intake(true)],
  ['intake', () => intake(false)],
  ['inline', inline],
]
for (let r = 0; r < Number(runs); r++) {
  // Each run in another order.
  for (let i = 0; i < contenders.length; i++) {
    const [name, run] = contenders[(i + r) % contenders.length]
    const started = performance.now()
    const before = process.cpuUsage()
    await run()
    const used = process.cpuUsage(before)
    rmSync(out)
    console.log(
      `${name.padEnd(6)} ${((performance.now() - started) / 1000).toFixed(2)} s, user ${(used.user / 1e6).toFixed(2)} s, system ${(used.system / 1e6).toFixed(2)} s`,
    )
  }
}
