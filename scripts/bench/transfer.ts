// Export and import of one large VM: dpxen's hooks against curl, side by side, alternating, each
// figure the median of the runs.
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { destroyVmWithDevices } from '../../simulator/xapi/model/vmops.js'
import { startXapiSim } from '../../simulator/xapi/server.js'
import { login } from './client.js'
import { verificationCost, type Cost } from './cost.js'
import { exec, mbps, median, writeJson, type Machine } from './machine.js'
import type { Options } from './options.js'

export interface ExportRow {
  sizeGiB: number
  bytes: number
  /** MB/s of each run. */
  curl: number[]
  verifyOn: number[]
  verifyOff: number[]
  /** The hook's own figure: the transfer alone, without start-up, login and planning. */
  transfer: number[]
  rss: number[]
  median: { curl: number; verifyOn: number; verifyOff: number; transfer: number }
  /** CPU seconds (user + system) per GB written: steadier than throughput on a busy machine. */
  cpu: Record<Contender, number>
  peakRssMiB: number
  cost?: Cost
}

export interface ImportRow {
  sizeGiB: number
  curl: number[]
  dpxen: number[]
  verify: number[]
  rss: number[]
  median: { curl: number; dpxen: number; verify: number }
  peakRssMiB: number
}

type Contender = 'curl' | 'verifyOn' | 'verifyOff'

/** A simulator (its state in `dir`) holding one VM `big` of `size` GiB, 3/4 of it data. */
export function startBigVm(options: Options, dir: string, size: number) {
  return startXapiSim({
    stateDir: join(dir, 'pool'),
    authFailureDelayMs: 0,
    seed: {
      srs: [{ name: 'Local storage', type: 'ext', default: true, size: '8TiB' }],
      vms: [{ name: 'big', disks: [{ sr: 'Local storage', size: `${size}GiB`, fill: 0.75 }], vifs: 1 }],
    },
    ...(options.tls ? { tls: options.tls } : {}),
  })
}

/**
 * A configuration at `path` for the hooks against startBigVm's simulator: VM `big`, the
 * simulator's credentials and (over TLS) its pinned certificate, the files kept after a restore
 * (the benches restore one file again and again), then `values`.
 */
export function bigVmConfig(
  path: string,
  sim: { url: string },
  options: Options,
  values: Record<string, unknown>,
): string {
  writeJson(path, {
    vmName: ['big'],
    url: sim.url,
    username: 'root',
    password: 'xenroot',
    keepRestoredFiles: true,
    ...(options.tls ? { fingerprint: options.tls.fingerprint } : {}),
    ...values,
  })
  return path
}

/** A simulator holding one VM `big` of `size` GiB (3/4 data), and configurations for the hooks. */
async function bigVmWorld(options: Options, dir: string, size: number) {
  const sim = await startBigVm(options, dir, size)
  const staging = join(dir, 'staging')
  const config = (extra: Record<string, unknown>): string =>
    bigVmConfig(join(dir, `cfg-${Object.keys(extra).join('-') || 'plain'}.json`), sim, options, {
      mode: 'offline',
      backupDir: staging,
      ...extra,
    })
  const client = await login(sim.url, options.tls?.fingerprint)
  const ref = await client.session.call<string>('VM.get_by_name_label', 'big').then((refs) => refs[0]!)
  return {
    sim,
    staging,
    config,
    client,
    ref,
    verifyOn: config({}),
    verifyOff: config({ verifyExport: false }),
  }
}

type World = Awaited<ReturnType<typeof bigVmWorld>>

/** Each export contender once: seconds. curl's file is synced, as dpxen's is when it reports. */
function exportSteps(m: Machine, w: World, row: ExportRow, dir: string, cpu: Record<Contender, number[]>) {
  const curlFile = join(dir, 'curl.xva')
  const curl = async (): Promise<number> => {
    const c = await m.timed('curl', [
      ...(w.sim.url.startsWith('https') ? ['-k'] : []),
      '-s',
      '-f',
      '-o',
      curlFile,
      `${w.sim.url}/export?session_id=${w.client.session.ref}&ref=${w.ref}`,
    ])
    const s = await exec('sync', [curlFile])
    row.bytes = statSync(curlFile).size
    rmSync(curlFile)
    cpu.curl.push(c.cpu)
    return c.seconds + s.seconds
  }
  const hook = (key: 'verifyOn' | 'verifyOff', config: string) => async (): Promise<number> => {
    const h = await m.hook('pre-exec.js', config)
    row.rss.push(h.rss)
    cpu[key].push(h.cpu)
    if (key === 'verifyOn') row.transfer.push(Number(/\(([\d.]+) MB\/s\)/.exec(h.stdout)?.[1] ?? NaN))
    await m.untimedHook('post-exec.js', config)
    return h.seconds
  }
  return { curl, verifyOn: hook('verifyOn', w.verifyOn), verifyOff: hook('verifyOff', w.verifyOff) }
}

async function benchExport(
  m: Machine,
  w: World,
  options: Options,
  dir: string,
  size: number,
): Promise<ExportRow> {
  const row: ExportRow = {
    sizeGiB: size,
    bytes: 0,
    curl: [],
    verifyOn: [],
    verifyOff: [],
    transfer: [],
    rss: [],
    median: { curl: 0, verifyOn: 0, verifyOff: 0, transfer: 0 },
    cpu: { curl: 0, verifyOn: 0, verifyOff: 0 },
    peakRssMiB: 0,
  }
  const cpu: Record<Contender, number[]> = { curl: [], verifyOn: [], verifyOff: [] }
  const steps = exportSteps(m, w, row, dir, cpu)
  const order: Contender[] = ['curl', 'verifyOn', 'verifyOff']
  const seconds: Record<Contender, number[]> = { curl: [], verifyOn: [], verifyOff: [] }
  await steps.curl() // untimed: the size, and caches as warm for the first timed run as for the others
  cpu.curl.length = 0
  for (let r = 0; r < options.runs; r++) {
    // Each run in another order, so no contender always follows the same one (a large file
    // just deleted, dirty pages being written back); every run starts from a clean cache.
    for (let i = 0; i < order.length; i++) {
      const key = order[(i + r) % order.length]!
      await m.beforeRun(dir, row.bytes)
      seconds[key].push(await steps[key]())
    }
  }
  for (const key of order) {
    row[key] = seconds[key].map((t) => mbps(row.bytes, t))
    row.cpu[key] = median(cpu[key]) / (row.bytes / 1e9)
  }
  row.median = {
    curl: median(row.curl),
    verifyOn: median(row.verifyOn),
    verifyOff: median(row.verifyOff),
    transfer: median(row.transfer),
  }
  row.peakRssMiB = Math.max(...row.rss) / 2 ** 20
  return row
}

/** curl -T of the XVA against the restore post-exec (offline, beside the VM), alternately first. */
async function benchImport(
  m: Machine,
  w: World,
  options: Options,
  dir: string,
  xva: string,
  bytes: number,
  size: number,
): Promise<ImportRow> {
  const row: ImportRow = {
    sizeGiB: size,
    curl: [],
    dpxen: [],
    verify: [],
    rss: [],
    median: { curl: 0, dpxen: 0, verify: 0 },
    peakRssMiB: 0,
  }
  const steps = {
    async curl(): Promise<void> {
      const db = w.sim.context.db
      const before = new Set(db.all('VM').map(([vmRef]) => vmRef))
      const c = await m.timed('curl', [
        ...(w.sim.url.startsWith('https') ? ['-k'] : []),
        '-s',
        '-f',
        '-H',
        'Expect:',
        '-T',
        xva,
        `${w.sim.url}/import?session_id=${w.client.session.ref}`,
      ])
      row.curl.push(mbps(bytes, c.seconds))
      // The copy curl imported goes, so the restore finds exactly one VM of that name.
      for (const [vmRef] of db.all('VM'))
        if (!before.has(vmRef)) await destroyVmWithDevices(w.sim.context, vmRef, true)
    },
    async dpxen(): Promise<void> {
      const h = await m.hook('restore-post-exec.js', w.verifyOn)
      // The hook's own figures (the rate it prints is computed from unrounded seconds).
      const imported = /imported [\d.]+ \w+ in [\d.]+ s \(([\d.]+) MB\/s\)/.exec(h.stdout)
      const verified = /verified [\d.]+ \w+ in [\d.]+ s \(([\d.]+) MB\/s\)/.exec(h.stdout)
      row.dpxen.push(Number(imported?.[1] ?? NaN))
      row.verify.push(Number(verified?.[1] ?? NaN))
      row.rss.push(h.rss)
    },
  }
  for (let r = 0; r < options.runs; r++) {
    for (const key of r % 2 ? (['dpxen', 'curl'] as const) : (['curl', 'dpxen'] as const)) {
      await m.beforeRun(dir, bytes)
      await steps[key]()
    }
  }
  row.median = { curl: median(row.curl), dpxen: median(row.dpxen), verify: median(row.verify) }
  row.peakRssMiB = Math.max(...row.rss) / 2 ** 20
  return row
}

/** Export, verification cost and import of one VM of `size` GiB. */
export async function benchTransfers(
  m: Machine,
  options: Options,
  work: string,
  size: number,
): Promise<{ export: ExportRow; import: ImportRow }> {
  const dir = join(work, `${size}g`)
  mkdirSync(dir)
  process.stdout.write(`seeding a ${size} GiB VM (3/4 data)… `)
  const w = await bigVmWorld(options, dir, size)
  console.log('done')
  try {
    const exp = await benchExport(m, w, options, dir, size)
    console.log(
      `export ${size} GiB: curl ${exp.median.curl.toFixed(0)} MB/s, dpxen ${exp.median.verifyOn.toFixed(0)} MB/s verified (${(exp.median.verifyOn / exp.median.curl).toFixed(2)}x; transfer alone ${exp.median.transfer.toFixed(0)} MB/s), ${exp.median.verifyOff.toFixed(0)} MB/s unverified, peak RSS ${exp.peakRssMiB.toFixed(0)} MiB; CPU s/GB curl ${exp.cpu.curl.toFixed(2)}, dpxen ${exp.cpu.verifyOn.toFixed(2)} verified, ${exp.cpu.verifyOff.toFixed(2)} unverified`,
    )
    await m.hook('pre-exec.js', w.verifyOn)
    const xva = join(
      w.staging,
      readdirSync(w.staging).find((f) => f.endsWith('.xva'))!,
    )
    exp.cost = verificationCost(xva)
    console.log(
      `export ${size} GiB, hashing and verification alone (CPU s/GB beyond reading the file): XXH64 ${exp.cost.hash.toFixed(2)}, XXH64 + verification ${exp.cost.verify.toFixed(2)}`,
    )
    const imp = await benchImport(m, w, options, dir, xva, exp.bytes, size)
    console.log(
      `import ${size} GiB: curl ${imp.median.curl.toFixed(0)} MB/s, dpxen ${imp.median.dpxen.toFixed(0)} MB/s (${(imp.median.dpxen / imp.median.curl).toFixed(2)}x), verification first ${imp.median.verify.toFixed(0)} MB/s, peak RSS ${imp.peakRssMiB.toFixed(0)} MiB`,
    )
    return { export: exp, import: imp }
  } finally {
    await w.client.close()
    await w.sim.close()
    rmSync(dir, { recursive: true, force: true })
  }
}
