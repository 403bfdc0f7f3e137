// A health check of one large VM (3/4 data), as `dpxen health-check` runs it: its XVA verified,
// imported as a copy, started without network, its guest agent awaited (the simulator's guest
// reports 2 s after the start), the copy removed. Wall seconds of the whole check and its verify
// and import rates, from its own lines; peak RSS, which must not grow with the VM. The check runs
// on the measured core, the simulator on the other, as for the other parts.
import { join } from 'node:path'
import { HOOKS, median, type Machine } from './machine.js'
import type { Options } from './options.js'
import { bigVmConfig, startBigVm } from './transfer.js'

export interface HealthRow {
  sizeGiB: number
  /** Seconds of each whole check. */
  runs: number[]
  median: number
  /** MB/s of the file's verification and of the copy's import, in the median run. */
  verifyMBps: number
  importMBps: number
  peakRssMiB: number
}

const rate = (line: RegExp, text: string): number => Number(line.exec(text)?.[1] ?? NaN)

export async function benchHealth(
  m: Machine,
  options: Options,
  work: string,
  sizeGiB: number,
): Promise<HealthRow> {
  const dir = join(work, `health-${sizeGiB}g`)
  const sim = await startBigVm(options, dir, sizeGiB)
  try {
    const config = bigVmConfig(join(dir, 'health.json'), sim, options, {
      mode: 'offline',
      backupDir: join(dir, 'staging'),
    })
    await m.untimedHook('pre-exec.js', config)
    const runs: { seconds: number; verify: number; import: number; rss: number }[] = []
    for (let i = 0; i < options.runs; i++) {
      await m.beforeRun(dir, sizeGiB * 1024 ** 3)
      const h = await m.timed(process.execPath, [join(HOOKS, 'dpxen.js'), 'health-check', config])
      if (!/health check passed/.test(h.stdout))
        throw new Error(`the health check did not pass:\n${h.stdout}`)
      runs.push({
        seconds: h.seconds,
        verify: rate(/: verified .* \(([\d.]+) MB\/s\)/, h.stdout),
        import: rate(/big: imported .* \(([\d.]+) MB\/s\)/, h.stdout),
        rss: h.rss,
      })
      console.log(
        `health check ${sizeGiB} GiB: ${h.seconds.toFixed(1)} s, peak RSS ${(h.rss / 2 ** 20).toFixed(0)} MiB`,
      )
    }
    const mid = median(runs.map((r) => r.seconds))
    const middle = runs.find((r) => r.seconds === mid)!
    return {
      sizeGiB,
      runs: runs.map((r) => r.seconds),
      median: mid,
      verifyMBps: middle.verify,
      importMBps: middle.import,
      peakRssMiB: Math.max(...runs.map((r) => r.rss)) / 2 ** 20,
    }
  } finally {
    await sim.close()
  }
}
