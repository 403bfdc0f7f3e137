// npm run bench: dpxen against curl, side by side, on xapi-sim seeded with large VMs. Each
// figure is the median of several alternating runs. Prints the figures as it goes and writes
// bench-results.json (options: options.ts).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { join } from 'node:path'
import { Machine } from './machine.js'
import { readOptions } from './options.js'
import { benchIncremental, type IncrementalRow } from './incremental.js'
import { benchConcurrency, benchPlanning } from './pool.js'
import { benchTransfers, type ExportRow, type ImportRow } from './transfer.js'
import { benchVhd, vhdChild, type VhdRow } from './vhd.js'
import { benchNbd, nbdChild, type NbdRow } from './nbd.js'
import { benchHealth, type HealthRow } from './health.js'

if (vhdChild()) process.exit(0)
if (await nbdChild()) process.exit(0)
const options = await readOptions()
const machine = await Machine.start(options)
const work = mkdtempSync(join(options.dir, 'dpxen-bench-'))
const results = {
  machine: {
    cpus: cpus().length,
    cpu: cpus()[0]?.model,
    memoryGiB: Math.round(totalmem() / 1024 ** 3),
    node: process.version,
    pinned: machine.pinned,
    pageReporting: machine.pageReporting,
    primed: machine.pageReporting && options.prime,
    dir: options.dir,
  },
  transport: options.tls ? 'https (pinned)' : 'http',
  date: new Date().toISOString(),
  export: [] as ExportRow[],
  import: [] as ImportRow[],
  concurrency: [] as Awaited<ReturnType<typeof benchConcurrency>>,
  incremental: undefined as IncrementalRow | undefined,
  incrementalCbt: undefined as IncrementalRow | undefined,
  vhdVerifier: [] as VhdRow[],
  nbd: [] as NbdRow[],
  health: [] as HealthRow[],
  ...({} as Partial<Awaited<ReturnType<typeof benchPlanning>>>),
}
try {
  for (const size of options.parts.has('transfers') ? options.sizes : []) {
    const row = await benchTransfers(machine, options, work, size)
    results.export.push(row.export)
    results.import.push(row.import)
  }
  if (options.parts.has('concurrency')) results.concurrency = await benchConcurrency(machine, options, work)
  if (options.parts.has('planning')) Object.assign(results, await benchPlanning(machine, options, work))
  if (options.parts.has('vhd')) results.vhdVerifier = benchVhd()
  for (const size of options.parts.has('nbd') ? options.sizes : [])
    results.nbd.push(...(await benchNbd(machine, options, work, size)))
  for (const size of options.parts.has('health') ? options.sizes : [])
    results.health.push(await benchHealth(machine, options, work, size))
  if (options.parts.has('incremental')) {
    results.incremental = await benchIncremental(machine, options, work, options.incrementalGiB)
    results.incrementalCbt = await benchIncremental(machine, options, work, options.incrementalGiB, true)
  }
} finally {
  rmSync(work, { recursive: true, force: true })
}
writeFileSync(options.out, JSON.stringify(results, null, 2))
