// The crash test's machinery (test/reliability/crash-*.test.ts): each hook is killed with SIGKILL
// (no cleanup at all, as a power cut or the OOM killer would) before each of its XenAPI calls and
// file steps in turn, then the next hook runs, and the pool and the staging folder must be as
// they should. Split in two files so that two workers run them side by side.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { describe, expect, it } from 'vitest'
import { tempDir } from './hooks.js'
import { records } from './pool.js'
import type { TestClient } from './rpc.js'
import { world } from './world.js'

const hook = (name: string): string => fileURLToPath(new URL(`../../dist/hooks/${name}.js`, import.meta.url))
type Rec = Record<string, unknown>

/** What must hold after any crash and the next hook: the pool as it was, the folder clean. */
async function poolShape(xapi: TestClient): Promise<Rec> {
  const vms = await records(xapi, 'VM')
  const vbds = await records(xapi, 'VBD')
  const shape: Rec = {}
  for (const vm of Object.values(vms)) {
    if (vm.is_control_domain) continue
    const disks = (vm.VBDs as string[]).filter((r) => vbds[r]?.type === 'Disk').length
    const kind = vm.is_a_snapshot ? 'snapshot' : vm.is_a_template ? 'template' : 'vm'
    // An incremental base is named after its run: a later run's base is the same kind of thing.
    const name = String(vm.name_label).replace(/^(dpxen base .*) \d{8}T\d+Z$/, '$1')
    shape[`${kind} ${name}`] = `${String(vm.power_state)}, ${disks} disk(s)`
  }
  const vdis = Object.values(await records(xapi, 'VDI'))
  shape.vdis = vdis.length
  // A base kept as tracking metadata alone (cbt) must never be left holding data, nor lose it.
  shape['snapshot disks holding data'] = vdis.filter(
    (v) => v.is_a_snapshot && v.type !== 'cbt_metadata',
  ).length
  // In name order: an offline restore replaces the VM's record, which moves it in the table.
  return Object.fromEntries(Object.entries(shape).sort(([a], [b]) => a.localeCompare(b)))
}

/** Runs `bin` with the crash at `point` (0: none); whether it was killed there. */
async function runTo(bin: string, config: string, point: number, env: Record<string, string> = {}) {
  const count = join(tempDir('dpxen-crash-'), 'count')
  // `dpxen recover` is the one hook with a command word.
  const args = bin.endsWith('dpxen.js') ? [bin, 'recover', config] : [bin, config]
  const result = await execa(process.execPath, args, {
    reject: false,
    env: { ...env, DPXEN_TEST_CRASH_AT: String(point), DPXEN_TEST_CRASH_COUNT: count },
  })
  return {
    killed: result.signal === 'SIGKILL',
    passed: existsSync(count) ? Number(readFileSync(count, 'utf8')) : 0,
    stderr: result.stderr,
    /** The end of what it printed, for a message when it ended where it should not. */
    tail: `${result.stdout.slice(-1500)}\n${result.stderr.slice(-500)}`,
    code: result.exitCode,
  }
}

export interface Scenario {
  name: string
  values: Rec
  /** The hook to crash, and what runs before it once (a backup for a restore). */
  crash: string
  prepare?: string
  /** Runs after `prepare` (the post-exec that settles an incremental run's base). */
  settle?: string
  /** Runs before each run of `crash` (the pre-exec whose run a crashed post-exec settles). */
  each?: string
  /** The next hooks, which must put everything right (the next night's, for a post-exec). */
  next: string | string[]
  /** Done to the pool before each run of `crash` (a VM lost, for a restore that makes it again). */
  before?: (xapi: TestClient) => Promise<void>
  /** Done to the pool once, before anything runs (a network given the nbd purpose). */
  setup?: (xapi: TestClient) => Promise<void>
}

/** One test per scenario: the hook killed at each of its crash points in turn. */
export function crashSuite(title: string, scenarios: Scenario[]): void {
  describe(title, () => {
    for (const s of scenarios) {
      it(`${s.name}: killed before each XenAPI call and file step, the next hook puts everything right`, async () => {
        const { xapi, backupDir, config } = await world({ progressInterval: 60, ...s.values })
        await s.setup?.(xapi)
        // A restore runs outside the backup's session: its files stay in the folder throughout.
        const env: Record<string, string> = s.prepare ? {} : { SESSIONID: 'crash-test' }
        for (const h of [s.prepare, s.settle]) {
          if (!h) continue
          const once = await runTo(hook(h), config, 0, env)
          expect(once.code, `${h}: ${once.tail}`).toBe(0)
        }
        const staged = existsSync(backupDir)
          ? readdirSync(backupDir)
              .filter((f) => f !== '.dpxen-lock')
              .sort()
          : []
        const before = await poolShape(xapi)
        const next = async (): Promise<void> => {
          for (const h of [s.next].flat()) await runTo(hook(h), config, 0, env)
        }
        if (s.each) expect((await runTo(hook(s.each), config, 0, env)).code).toBe(0)
        await s.before?.(xapi)
        const whole = await runTo(hook(s.crash), config, 0, env)
        expect(whole.code, whole.stderr).toBe(0)
        await next()
        expect(await poolShape(xapi)).toEqual(before)
        expect(whole.passed).toBeGreaterThan(10)
        const broken: string[] = []
        // A run that ended before its crash point: how it ended, for the message below.
        let ended = ''
        // Until a run passes every point: their number may vary a little (a retried call).
        let point = 1
        for (; ; point++) {
          if (s.each) await runTo(hook(s.each), config, 0, env)
          await s.before?.(xapi)
          const crashed = await runTo(hook(s.crash), config, point, env)
          const at = /test crash at point \d+: (.*)/.exec(crashed.stderr)?.[1] ?? '?'
          await next()
          const after = await poolShape(xapi)
          const left = existsSync(backupDir) ? readdirSync(backupDir).sort() : []
          if (
            JSON.stringify(after) !== JSON.stringify(before) ||
            JSON.stringify(left) !== JSON.stringify(staged)
          )
            broken.push(
              `point ${point} (before ${at}): pool ${JSON.stringify(after)}, staging [${left.join(', ')}]`,
            )
          if (!crashed.killed) {
            ended = `the run for point ${point} ended with exit code ${crashed.code}: ${crashed.tail}`
            break
          }
        }
        const points = point - 1
        console.log(`${s.name}: ${points} crash points`)
        // Every point the whole run passed was tried: a hook that stops early (a build under way,
        // a refusal) would otherwise pass with none.
        expect(points, ended).toBeGreaterThanOrEqual(whole.passed - 3)
        expect(broken, `expected pool ${JSON.stringify(before)}, staging [${staged.join(', ')}]`).toEqual([])
      }, 600_000)
    }
  })
}
