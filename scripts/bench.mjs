// npm run bench: dpxen against curl, side by side, on xapi-sim seeded with large VMs.
// Each figure is the median of several alternating runs. Prints a table, writes bench-results.json.
//
//   npm run bench                       sizes 1, 4, 16 GiB, 3 runs each
//   npm run bench -- --sizes 1,4 --runs 2
//   npm run bench -- --quick            1 GiB, 1 run (a smoke test)
//   npm run bench -- --dir /dev/shm     files on tmpfs: the CPU, not the disk, sets the pace
//   npm run bench -- --no-pin           simulator and measured process share every core
//   npm run bench -- --no-prime         no page-cache priming before each run (see primeMemory)
//   npm run bench -- --tls              over HTTPS (self-signed, pinned by fingerprint; curl -k)
//
// By default (2 cores or more, taskset present) the simulator runs pinned to core 0 and every
// measured process (curl, the hooks) to core 1: they do not compete for CPU, as when the host
// is another machine.
import { execFile, spawn } from 'node:child_process'
import {
  closeSync,
  openSync,
  readSync,
  readFileSync,
  writeSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  writeFileSync,
  readdirSync,
  chmodSync,
} from 'node:fs'
import { cpus, totalmem, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const { startXapiSim } = await import(join(root, 'dist/simulator/xapi/server.js'))
const { selectVms } = await import(join(root, 'dist/src/backup/select.js'))
const { readPool } = await import(join(root, 'dist/src/pool/view.js'))
const { XapiSession, xmlRpcTransport } = await import(join(root, 'dist/src/xapi/session.js'))
const { createDispatcher } = await import(join(root, 'dist/src/xapi/connection.js'))
const { createLogger } = await import(join(root, 'dist/src/core/log.js'))
const { XvaVerifier } = await import(join(root, 'dist/src/xva/verify.js'))
const { Xxh64 } = await import('@node-rs/xxhash')

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1,4,16' },
    runs: { type: 'string', default: '3' },
    quick: { type: 'boolean', default: false },
    'no-pin': { type: 'boolean', default: false },
    'no-prime': { type: 'boolean', default: false },
    tls: { type: 'boolean', default: false },
    dir: { type: 'string' },
    out: { type: 'string', default: join(root, 'bench-results.json') },
  },
})
const sizes = values.quick ? [1] : values.sizes.split(',').map(Number)
const runs = values.quick ? 1 : Number(values.runs)
const GiB = 1024 ** 3
const work = mkdtempSync(join(values.dir ?? tmpdir(), 'dpxen-bench-'))
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const mbps = (bytes, seconds) => bytes / 1e6 / seconds
const hooks = join(root, 'dist/hooks')
/** Over HTTPS: the simulator's self-signed certificate, pinned by the hooks; curl and this script take it unverified. */
const tls = values.tls
  ? await (
      await import(join(root, 'dist/simulator/xapi/self-signed.js'))
    ).selfSignedCertificate(['127.0.0.1'])
  : undefined
const { Agent } = await import('undici')
const insecure = tls ? { dispatcher: new Agent({ connect: { rejectUnauthorized: false } }) } : {}
const curlTls = tls ? ['-k'] : []

/** Whether measured processes run on core 1 and this process (the simulator) on core 0. */
const pinned = await (async () => {
  if (values['no-pin'] || cpus().length < 2) return false
  return new Promise((resolve) =>
    execFile('taskset', ['-a', '-p', '-c', '0', String(process.pid)], (error) => resolve(!error)),
  )
})()
/** A measured command: on core 1 when pinned (or on every core: children inherit core 0). */
const measured = (cmd, args, cores = '1') =>
  pinned ? ['taskset', ['-c', cores === 'all' ? `0-${cpus().length - 1}` : cores, cmd, ...args]] : [cmd, args]

function exec(cmd, args, env = {}) {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    execFile(cmd, args, { env: { ...process.env, ...env }, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const seconds = (performance.now() - started) / 1000
      if (error) reject(new Error(`${cmd} ${args.join(' ')}: ${error.message}\n${stdout}\n${stderr}`))
      else resolve({ stdout, stderr, seconds })
    })
  })
}

/** Runs a command under /usr/bin/time: wall seconds, peak RSS and CPU seconds (user + system). */
async function timed(cmd, args, cores = '1') {
  const { stdout, stderr, seconds } = await exec(
    ...measured('/usr/bin/time', ['-f', 'maxrss=%M cpu=%U+%S', cmd, ...args], cores),
  )
  const rss = Number(/maxrss=(\d+)/.exec(stderr)?.[1] ?? 0) * 1024
  const [, user = 'NaN', system = 'NaN'] = /cpu=([\d.]+)\+([\d.]+)/.exec(stderr) ?? []
  return { stdout, seconds, rss, cpu: Number(user) + Number(system) }
}

/** Runs a hook under /usr/bin/time. */
const hook = (name, config, cores = '1') => timed(process.execPath, [join(hooks, name), config], cores)

/**
 * What hashing and verification cost by themselves: CPU seconds per GB to read a cached XVA in
 * 256 KiB pieces (as the export does), to read and hash it (XXH64, the manifest's), and to read,
 * hash and verify it; no network, no disk writes. Best of three.
 */
function verificationCost(file) {
  const buffer = Buffer.allocUnsafeSlow(256 * 1024)
  const pass = (hash, verify) => {
    const fd = openSync(file, 'r')
    const h = hash ? new Xxh64(0n) : undefined
    const verifier = verify ? new XvaVerifier() : undefined
    const before = process.cpuUsage()
    let position = 0
    for (let n; (n = readSync(fd, buffer, 0, buffer.length, position)) > 0; position += n) {
      const piece = buffer.subarray(0, n)
      h?.update(piece)
      verifier?.push(piece)
    }
    verifier?.finish()
    const used = process.cpuUsage(before)
    closeSync(fd)
    return (used.user + used.system) / 1e6 / (position / 1e9)
  }
  const best = (hash, verify) => Math.min(...[0, 1, 2].map(() => pass(hash, verify)))
  const read = best(false, false)
  return { read, hash: best(true, false) - read, verify: best(true, true) - read }
}

/** Whether the guest hands the memory it frees back to its host (virtio-balloon free page reporting). */
const pageReporting = (() => {
  try {
    return readFileSync('/sys/module/page_reporting/parameters/reported_kib', 'utf8').trim() !== ''
  } catch {
    return false
  }
})()

/**
 * Writes `bytes` (and 256 MiB more, for the contender's own memory) to a file in `dir` and
 * removes it, just before a measured run. On a virtual machine with free page reporting (this
 * one, a Firecracker guest) the pages the guest frees go back to the host within seconds, and
 * the first write into such a page costs a fault in the host: writing 840 MB into the page cache
 * took 2.4 s of system time after 20 s idle, 0.15 s right after the same file was removed. Without
 * this, whichever contender started after a pause (the first run, the hook after its post-exec,
 * the simulator after a quiet spell) paid that, by chance. The primer pays it instead, the same
 * for every contender: the pages it frees are taken again by the run that follows at once.
 */
function primeMemory(dir, bytes) {
  if (values['no-prime'] || !pageReporting) return
  const path = join(dir, 'prime.tmp')
  const block = Buffer.alloc(4 << 20, 1)
  const fd = openSync(path, 'w')
  try {
    for (let done = 0; done < bytes + (256 << 20); done += block.length) writeSync(fd, block)
  } finally {
    closeSync(fd)
    rmSync(path)
  }
}

function writeJson(path, value) {
  writeFileSync(path, JSON.stringify(value, null, 2))
  chmodSync(path, 0o600)
}

const results = {
  machine: {
    cpus: cpus().length,
    cpu: cpus()[0]?.model,
    memoryGiB: Math.round(totalmem() / GiB),
    node: process.version,
    pinned,
    pageReporting,
    primed: pageReporting && !values['no-prime'],
    dir: values.dir ?? tmpdir(),
  },
  transport: tls ? 'https (pinned)' : 'http',
  date: new Date().toISOString(),
  export: [],
  import: [],
  concurrency: [],
  planning: {},
  startup: {},
}

async function xmlrpc(url, method, params) {
  const { default: Serializer } = await import('xmlrpc/lib/serializer.js')
  const res = await fetch(url, {
    ...insecure,
    method: 'POST',
    body: Serializer.serializeMethodCall(method, params),
    headers: { 'content-type': 'text/xml' },
  })
  const text = await res.text()
  return /<name>Value<\/name><value>([^<]*)<\/value>/.exec(text)?.[1]
}

try {
  for (const size of sizes) {
    const dir = join(work, `${size}g`)
    mkdirSync(dir)
    process.stdout.write(`seeding a ${size} GiB VM (3/4 data)… `)
    const sim = await startXapiSim({
      stateDir: join(dir, 'pool'),
      authFailureDelayMs: 0,
      seed: {
        srs: [{ name: 'Local storage', type: 'ext', default: true, size: '8TiB' }],
        vms: [{ name: 'big', disks: [{ sr: 'Local storage', size: `${size}GiB`, fill: 0.75 }], vifs: 1 }],
      },
      ...(tls ? { tls } : {}),
    })
    console.log('done')
    const staging = join(dir, 'staging')
    const cfg = (extra) => {
      const path = join(dir, `cfg-${Object.keys(extra).join('-') || 'plain'}.json`)
      writeJson(path, {
        mode: 'offline',
        vmName: ['big'],
        url: sim.url,
        username: 'root',
        password: 'xenroot',
        backupDir: staging,
        ...(tls ? { fingerprint: tls.fingerprint } : {}),
        ...extra,
      })
      return path
    }
    const verifyOn = cfg({})
    const verifyOff = cfg({ verifyExport: false })
    const session = await xmlrpc(sim.url, 'session.login_with_password', ['root', 'xenroot'])
    const ref = /OpaqueRef:[0-9a-f-]+/.exec(
      await (
        await fetch(sim.url, {
          ...insecure,
          method: 'POST',
          body: (await import('xmlrpc/lib/serializer.js')).default.serializeMethodCall(
            'VM.get_by_name_label',
            [session, 'big'],
          ),
        })
      ).text(),
    )[0]
    const curlFile = join(dir, 'curl.xva')
    const row = { sizeGiB: size, curl: [], verifyOn: [], verifyOff: [], transfer: [], rss: [], cpu: {} }
    const cpu = { curl: [], verifyOn: [], verifyOff: [] }
    let bytes = 0
    const curlOnce = async () => {
      const c = await timed('curl', [
        ...curlTls,
        '-s',
        '-f',
        '-o',
        curlFile,
        `${sim.url}/export?session_id=${session}&ref=${ref}`,
      ])
      // fsync of curl's file: dpxen's file is on disk when it reports, so is curl's.
      const s = await exec('sync', [curlFile])
      bytes = statSync(curlFile).size
      rmSync(curlFile)
      cpu.curl.push(c.cpu)
      return c.seconds + s.seconds
    }
    const hookOnce = (key, config) => async () => {
      const h = await hook('pre-exec.js', config)
      row.rss.push(h.rss)
      cpu[key].push(h.cpu)
      // The hook's own figure: the transfer alone, without start-up, login and planning.
      if (key === 'verifyOn') row.transfer.push(Number(/\(([\d.]+) MB\/s\)/.exec(h.stdout)?.[1] ?? NaN))
      await exec(process.execPath, [join(hooks, 'post-exec.js'), config])
      return h.seconds
    }
    const steps = {
      curl: curlOnce,
      verifyOn: hookOnce('verifyOn', verifyOn),
      verifyOff: hookOnce('verifyOff', verifyOff),
    }
    const order = Object.keys(steps)
    const seconds = { curl: [], verifyOn: [], verifyOff: [] }
    await curlOnce() // untimed: the size, and caches as warm for the first timed run as for the others
    for (let r = 0; r < runs; r++) {
      // Each run in another order, so no contender always follows the same one (a large file
      // just deleted, dirty pages being written back); every run starts from a clean cache.
      for (let i = 0; i < order.length; i++) {
        const key = order[(i + r) % order.length]
        await exec('sync', [])
        primeMemory(dir, bytes)
        seconds[key].push(await steps[key]())
      }
    }
    for (const key of order) row[key] = seconds[key].map((t) => mbps(bytes, t))
    row.bytes = bytes
    row.median = {
      curl: median(row.curl),
      verifyOn: median(row.verifyOn),
      verifyOff: median(row.verifyOff),
      transfer: median(row.transfer),
    }
    // CPU seconds (user + system) per GB written: steadier than throughput on a busy machine.
    for (const key of order) row.cpu[key] = median(cpu[key]) / (bytes / 1e9)
    row.peakRssMiB = Math.max(...row.rss) / 2 ** 20
    results.export.push(row)
    console.log(
      `export ${size} GiB: curl ${row.median.curl.toFixed(0)} MB/s, dpxen ${row.median.verifyOn.toFixed(0)} MB/s verified (${(row.median.verifyOn / row.median.curl).toFixed(2)}x; transfer alone ${row.median.transfer.toFixed(0)} MB/s), ${row.median.verifyOff.toFixed(0)} MB/s unverified, peak RSS ${row.peakRssMiB.toFixed(0)} MiB; CPU s/GB curl ${row.cpu.curl.toFixed(2)}, dpxen ${row.cpu.verifyOn.toFixed(2)} verified, ${row.cpu.verifyOff.toFixed(2)} unverified`,
    )

    // Import: curl -T of the XVA against the restore post-exec (offline, beside the VM).
    await hook('pre-exec.js', verifyOn)
    const xva = join(
      staging,
      readdirSync(staging).find((f) => f.endsWith('.xva')),
    )
    row.cost = verificationCost(xva)
    console.log(
      `export ${size} GiB, hashing and verification alone (CPU s/GB beyond reading the file): XXH64 ${row.cost.hash.toFixed(2)}, XXH64 + verification ${row.cost.verify.toFixed(2)}`,
    )
    const imp = { sizeGiB: size, curl: [], dpxen: [], verify: [], rss: [] }
    const { destroyVmWithDevices } = await import(join(root, 'dist/simulator/xapi/vmops.js'))
    const importSteps = {
      async curl() {
        const before = new Set(sim.context.db.all('VM').map(([vmRef]) => vmRef))
        const c = await timed('curl', [
          ...curlTls,
          '-s',
          '-f',
          '-H',
          'Expect:',
          '-T',
          xva,
          `${sim.url}/import?session_id=${session}`,
        ])
        imp.curl.push(mbps(bytes, c.seconds))
        // The copy curl imported goes, so the restore finds exactly one VM of that name.
        for (const [vmRef] of sim.context.db.all('VM')) {
          if (!before.has(vmRef)) await destroyVmWithDevices(sim.context, vmRef, true)
        }
      },
      async dpxen() {
        const h = await hook('restore-post-exec.js', verifyOn)
        // The hook's own figures (the rate it prints is computed from unrounded seconds).
        const imported = /imported [\d.]+ \w+ in [\d.]+ s \(([\d.]+) MB\/s\)/.exec(h.stdout)
        const verified = /verified [\d.]+ \w+ in [\d.]+ s \(([\d.]+) MB\/s\)/.exec(h.stdout)
        imp.dpxen.push(Number(imported?.[1] ?? NaN))
        imp.verify.push(Number(verified?.[1] ?? NaN))
        imp.rss.push(h.rss)
      },
    }
    for (let r = 0; r < runs; r++) {
      // Alternately first, as for the export.
      for (const key of r % 2 ? ['dpxen', 'curl'] : ['curl', 'dpxen']) {
        await exec('sync', [])
        primeMemory(dir, bytes)
        await importSteps[key]()
      }
    }
    imp.median = { curl: median(imp.curl), dpxen: median(imp.dpxen), verify: median(imp.verify) }
    imp.peakRssMiB = Math.max(...imp.rss) / 2 ** 20
    results.import.push(imp)
    console.log(
      `import ${size} GiB: curl ${imp.median.curl.toFixed(0)} MB/s, dpxen ${imp.median.dpxen.toFixed(0)} MB/s (${(imp.median.dpxen / imp.median.curl).toFixed(2)}x), verification first ${imp.median.verify.toFixed(0)} MB/s, peak RSS ${imp.peakRssMiB.toFixed(0)} MiB`,
    )
    await sim.close()
    rmSync(dir, { recursive: true, force: true })
  }

  // Concurrency: 4 VMs with concurrency 1, 2 and 4.
  {
    const each = values.quick ? 0.25 : 1
    const dir = join(work, 'conc')
    mkdirSync(dir)
    const sim = await startXapiSim({
      stateDir: join(dir, 'pool'),
      authFailureDelayMs: 0,
      seed: {
        srs: [{ name: 'L', type: 'ext', default: true }],
        vms: [{ name: 'vm', count: 4, disks: [{ sr: 'L', size: `${each * 1024}MiB`, fill: 0.75 }] }],
      },
    })
    for (const concurrency of [1, 2, 4]) {
      const config = join(dir, `c${concurrency}.json`)
      writeJson(config, {
        mode: 'allOffline',
        url: sim.url,
        username: 'root',
        password: 'xenroot',
        backupDir: join(dir, 'staging'),
        concurrency,
      })
      const times = []
      for (let r = 0; r < runs; r++) {
        // Several exports at once use every core, as they would on a real client.
        times.push((await hook('pre-exec.js', config, 'all')).seconds)
        await exec(process.execPath, [join(hooks, 'post-exec.js'), config])
      }
      const seconds = median(times)
      results.concurrency.push({ vms: 4, sizeGiB: each, concurrency, seconds })
      console.log(`concurrency ${concurrency}: 4 × ${each} GiB in ${seconds.toFixed(1)} s`)
    }
    await sim.close()
  }

  // Planning an allOnline backup of a 500-VM pool: calls and time; start-up to the first call.
  {
    const sim = await startXapiSim({
      stateDir: join(work, 'plan'),
      authFailureDelayMs: 0,
      seed: {
        srs: [{ name: 'L', type: 'ext', default: true }],
        vms: [{ name: 'vm', count: 500, powerState: 'Running', vifs: 1, disks: [{ sr: 'L', size: '1MiB' }] }],
      },
    })
    const log = createLogger({ out: () => undefined, name: 'bench' })
    const dispatcher = createDispatcher()
    const session = await XapiSession.open({
      url: sim.url,
      username: 'root',
      password: 'xenroot',
      transport: xmlRpcTransport(dispatcher),
      log,
    })
    sim.stats(true)
    const started = performance.now()
    const { plans } = selectVms(await readPool(session), 'allOnline', [])
    const seconds = (performance.now() - started) / 1000
    const { calls } = sim.stats(true)
    await session.logout()
    await dispatcher.close()
    results.planning = { vms: plans.length, calls, seconds }
    console.log(
      `planning: ${plans.length} VMs selected with ${calls} calls in ${(seconds * 1000).toFixed(0)} ms`,
    )

    const config = join(work, 'startup.json')
    writeJson(config, {
      mode: 'allOnline',
      url: sim.url,
      username: 'root',
      password: 'xenroot',
      backupDir: join(work, 'startup-staging'),
    })
    const startups = []
    for (let r = 0; r < Math.max(3, runs); r++) {
      sim.stats(true)
      const spawnedAt = Date.now()
      const child = spawn(...measured(process.execPath, [join(hooks, 'pre-exec.js'), config], 'all'), {
        env: { ...process.env, PREVIEW: '1' },
        stdio: 'ignore',
      })
      await new Promise((resolve) => child.on('close', resolve))
      startups.push(sim.stats().firstCallAt - spawnedAt)
    }
    results.startup = { ms: median(startups) }
    console.log(`start-up to the first XenAPI call: ${median(startups)} ms`)
    await sim.close()
  }
} finally {
  rmSync(work, { recursive: true, force: true })
}
writeFileSync(values.out, JSON.stringify(results, null, 2))
console.log(`\nresults written to ${values.out}`)
