// The one world most hook tests need: a demo pool (three hosts, as every suite runs), a folder
// of the test's own with a staging folder in it, and configurations pointing at both. Tests that
// need another pool give xapi-sim's options; tests that need several configurations (a backup
// and then a restore with other keys) ask configFor for each.
import { join } from 'node:path'
import type { XapiSimOptions } from '../../simulator/xapi/server.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'
import { tempDir, writeConfig } from './hooks.js'
import { demoSim } from './sim.js'

export type World = Awaited<ReturnType<typeof world>>

/**
 * A pool, `dir`, `backupDir` (dir/backup, not made: the hooks make it) and `config`, the path of
 * dir/dpxen.json holding `values` over the pool's url and credentials. `configFor(extra, name)`
 * writes another configuration, `extra` over `values` (dpxen-1.json, dpxen-2.json, … unless named).
 */
export async function world(values: Record<string, unknown> = {}, simOptions: XapiSimOptions = {}) {
  const { sim, xapi } = await demoSim(simOptions)
  const dir = tempDir()
  const backupDir = join(dir, 'backup')
  const base = {
    url: sim.url,
    username: 'root',
    password: simOptions.password ?? SIM_PASSWORD,
    backupDir,
    ...values,
  }
  let written = 0
  const configFor = (extra: Record<string, unknown> = {}, name = `dpxen-${++written}.json`): string =>
    writeConfig(dir, { ...base, ...extra }, name)
  return { sim, xapi, dir, backupDir, config: writeConfig(dir, base), configFor }
}
