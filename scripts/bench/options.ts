// The bench's command line.
//
//   npm run bench                       sizes 1, 4, 16 GiB, 3 runs each
//   npm run bench -- --sizes 1,4 --runs 2
//   npm run bench -- --quick            1 GiB, 1 run (a smoke test)
//   npm run bench -- --dir /dev/shm     files on tmpfs: the CPU, not the disk, sets the pace
//   npm run bench -- --no-pin           simulator and measured process share every core
//   npm run bench -- --no-prime         no page-cache priming before each run (Machine.primeMemory)
//   npm run bench -- --tls              over HTTPS (self-signed, pinned by fingerprint; curl -k)
//   npm run bench -- --incremental 4    the incremental runs on a 4 GiB VM (16 by default)
//   npm run bench -- --parts incremental  only some parts: transfers,concurrency,planning,incremental,vhd,nbd,health
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { selfSignedCertificate, type HostCertificate } from '../../simulator/xapi/http/self-signed.js'

export interface Options {
  sizes: number[]
  runs: number
  quick: boolean
  pin: boolean
  prime: boolean
  /** Over HTTPS: the simulator's self-signed certificate, pinned by the hooks. */
  tls?: HostCertificate
  dir: string
  /** Size of the VM of the incremental runs (GiB). */
  incrementalGiB: number
  /** Which parts run: transfers, concurrency, planning, incremental. */
  parts: Set<string>
  out: string
}

/** The project's root (the bench runs as build/bench.js). */
export const ROOT = fileURLToPath(new URL('../', import.meta.url))

export async function readOptions(argv = process.argv.slice(2)): Promise<Options> {
  const { values } = parseArgs({
    args: argv,
    options: {
      sizes: { type: 'string', default: '1,4,16' },
      runs: { type: 'string', default: '3' },
      quick: { type: 'boolean', default: false },
      'no-pin': { type: 'boolean', default: false },
      'no-prime': { type: 'boolean', default: false },
      tls: { type: 'boolean', default: false },
      incremental: { type: 'string', default: '16' },
      parts: { type: 'string', default: 'transfers,concurrency,planning,incremental,vhd,nbd,health' },
      dir: { type: 'string' },
      out: { type: 'string', default: join(ROOT, 'bench-results.json') },
    },
  })
  const sizes = values.quick ? [1] : values.sizes.split(',').map(Number)
  const runs = values.quick ? 1 : Number(values.runs)
  if (sizes.some((s) => !(s > 0)) || !(runs >= 1))
    throw new Error('--sizes takes GiB like 1,4,16 and --runs a whole number from 1')
  return {
    sizes,
    runs,
    quick: values.quick,
    pin: !values['no-pin'],
    prime: !values['no-prime'],
    ...(values.tls ? { tls: await selfSignedCertificate(['127.0.0.1']) } : {}),
    dir: values.dir ?? tmpdir(),
    incrementalGiB: values.quick ? 1 : Number(values.incremental),
    parts: new Set(values.parts.split(',')),
    out: values.out,
  }
}
