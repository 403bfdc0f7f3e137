// What the bench measures with: running a command pinned to its core and timed under
// /usr/bin/time, priming memory before a run, writing results readable by the owner only.
import { execFile } from 'node:child_process'
import { chmodSync, closeSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { ROOT } from './options.js'

/** The built executables the bench runs (dist/hooks). */
export const HOOKS = join(ROOT, 'dist', 'hooks')

export interface Run {
  stdout: string
  stderr: string
  seconds: number
}

export interface Timed {
  stdout: string
  seconds: number
  /** Peak resident memory, bytes. */
  rss: number
  /** CPU seconds, user + system. */
  cpu: number
}

/** Which cores a measured command runs on: core 1, or all of them (several exports at once). */
export type Cores = '1' | 'all'

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
export const mbps = (bytes: number, seconds: number): number => bytes / 1e6 / seconds

export function exec(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    execFile(cmd, args, { env: { ...process.env, ...env }, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const seconds = (performance.now() - started) / 1000
      if (error) reject(new Error(`${cmd} ${args.join(' ')}: ${error.message}\n${stdout}\n${stderr}`))
      else resolve({ stdout, stderr, seconds })
    })
  })
}

export function writeJson(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value, null, 2))
  chmodSync(path, 0o600)
}

/** Whether the guest hands the memory it frees back to its host (virtio-balloon free page reporting). */
function hasPageReporting(): boolean {
  try {
    return readFileSync('/sys/module/page_reporting/parameters/reported_kib', 'utf8').trim() !== ''
  } catch {
    return false
  }
}

export class Machine {
  readonly pageReporting = hasPageReporting()

  private constructor(
    /** Whether measured processes run on core 1 and this process (the simulator) on core 0. */
    readonly pinned: boolean,
    readonly prime: boolean,
  ) {}

  /**
   * By default (2 cores or more, taskset present) the simulator runs pinned to core 0 and every
   * measured process (curl, the hooks) to core 1: they do not compete for CPU, as when the host
   * is another machine.
   */
  static async start(options: { pin: boolean; prime: boolean }): Promise<Machine> {
    let pinned = false
    if (options.pin && cpus().length >= 2)
      pinned = await exec('taskset', ['-a', '-p', '-c', '0', String(process.pid)]).then(
        () => true,
        () => false,
      )
    return new Machine(pinned, options.prime)
  }

  /** A measured command: on core 1 when pinned (or on every core: children inherit core 0). */
  measured(cmd: string, args: string[], cores: Cores = '1'): [string, string[]] {
    if (!this.pinned) return [cmd, args]
    return ['taskset', ['-c', cores === 'all' ? `0-${cpus().length - 1}` : cores, cmd, ...args]]
  }

  /** Runs a command under /usr/bin/time: wall seconds, peak RSS and CPU seconds (user + system). */
  async timed(cmd: string, args: string[], cores: Cores = '1'): Promise<Timed> {
    const { stdout, stderr, seconds } = await exec(
      ...this.measured('/usr/bin/time', ['-f', 'maxrss=%M cpu=%U+%S', cmd, ...args], cores),
    )
    const rss = Number(/maxrss=(\d+)/.exec(stderr)?.[1] ?? 0) * 1024
    const [, user = 'NaN', system = 'NaN'] = /cpu=([\d.]+)\+([\d.]+)/.exec(stderr) ?? []
    return { stdout, seconds, rss, cpu: Number(user) + Number(system) }
  }

  /** Runs a built hook (e.g. pre-exec.js) with a configuration, timed. */
  hook(name: string, config: string, cores: Cores = '1'): Promise<Timed> {
    return this.timed(process.execPath, [join(HOOKS, name), config], cores)
  }

  /** Runs a built hook untimed (the clean-up between measured runs). */
  async untimedHook(name: string, config: string): Promise<void> {
    await exec(process.execPath, [join(HOOKS, name), config])
  }

  /**
   * Writes `bytes` (and 256 MiB more, for the contender's own memory) to a file in `dir` and
   * removes it, just before a measured run. On a virtual machine with free page reporting (a
   * Firecracker guest, like these) the pages the guest frees go back to the host within seconds,
   * and the first write into such a page costs a fault in the host: writing 840 MB into the page
   * cache took 2.4 s of system time after 20 s idle, 0.15 s right after the same file was
   * removed. Without this, whichever contender started after a pause paid that, by chance. The
   * primer pays it instead, the same for every contender.
   */
  primeMemory(dir: string, bytes: number): void {
    if (!this.prime || !this.pageReporting) return
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

  /** A clean page cache state and primed memory before a measured run. */
  async beforeRun(dir: string, bytes: number): Promise<void> {
    await exec('sync', [])
    this.primeMemory(dir, bytes)
  }
}
