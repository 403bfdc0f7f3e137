// Figures of a whole pool rather than one VM: several exports at once, planning a large pool,
// and how soon a hook makes its first XenAPI call.
import { mkdirSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { startXapiSim } from '../../simulator/xapi/server.js'
import { selectVms } from '../../src/backup/select.js'
import { readPool } from '../../src/pool/view.js'
import { login } from './client.js'
import { HOOKS, median, writeJson, type Machine } from './machine.js'
import type { Options } from './options.js'

export interface ConcurrencyRow {
  vms: number
  sizeGiB: number
  concurrency: number
  seconds: number
}

/** 4 VMs backed up with concurrency 1, 2 and 4. */
export async function benchConcurrency(
  m: Machine,
  options: Options,
  work: string,
): Promise<ConcurrencyRow[]> {
  const each = options.quick ? 0.25 : 1
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
  const rows: ConcurrencyRow[] = []
  try {
    for (const concurrency of [1, 2, 4]) {
      const config = join(dir, `c${concurrency}.json`)
      const backupDir = join(dir, 'staging')
      writeJson(config, {
        mode: 'allOffline',
        url: sim.url,
        username: 'root',
        password: 'xenroot',
        backupDir,
        concurrency,
      })
      const times: number[] = []
      for (let r = 0; r < options.runs; r++) {
        // Several exports at once use every core, as they would on a real client.
        times.push((await m.hook('pre-exec.js', config, 'all')).seconds)
        await m.untimedHook('post-exec.js', config)
      }
      rows.push({ vms: 4, sizeGiB: each, concurrency, seconds: median(times) })
      console.log(`concurrency ${concurrency}: 4 × ${each} GiB in ${median(times).toFixed(1)} s`)
    }
  } finally {
    await sim.close()
  }
  return rows
}

/** Planning an allOnline backup of a 500-VM pool (calls, time); start-up to the first call. */
export async function benchPlanning(
  m: Machine,
  options: Options,
  work: string,
): Promise<{ planning: { vms: number; calls: number; seconds: number }; startup: { ms: number } }> {
  const sim = await startXapiSim({
    stateDir: join(work, 'plan'),
    authFailureDelayMs: 0,
    seed: {
      srs: [{ name: 'L', type: 'ext', default: true }],
      vms: [{ name: 'vm', count: 500, powerState: 'Running', vifs: 1, disks: [{ sr: 'L', size: '1MiB' }] }],
    },
  })
  try {
    const client = await login(sim.url)
    sim.stats(true)
    const started = performance.now()
    const { plans } = selectVms(await readPool(client.host), { allVms: true, vmName: [] })
    const seconds = (performance.now() - started) / 1000
    const { calls } = sim.stats(true)
    await client.close()
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
    const startups: number[] = []
    for (let r = 0; r < Math.max(3, options.runs); r++) {
      sim.stats(true)
      const spawnedAt = Date.now()
      const child = spawn(...m.measured(process.execPath, [join(HOOKS, 'pre-exec.js'), config], 'all'), {
        env: { ...process.env, PREVIEW: '1' },
        stdio: 'ignore',
      })
      await new Promise((resolve) => child.on('close', resolve))
      startups.push(sim.stats().firstCallAt! - spawnedAt)
    }
    console.log(`start-up to the first XenAPI call: ${median(startups)} ms`)
    return { planning: { vms: plans.length, calls, seconds }, startup: { ms: median(startups) } }
  } finally {
    await sim.close()
  }
}
