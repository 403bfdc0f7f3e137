// A demo pool, a staging folder and a configuration pointing at both: what most hook tests need.
import { join } from 'node:path'
import type { XapiSimOptions } from '../../simulator/xapi/server.js'
import { tempDir, writeConfig } from './hooks.js'
import { demoSim } from './sim.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

export async function backupWorld(values: Record<string, unknown>, simOptions: XapiSimOptions = {}) {
  const { sim, xapi } = await demoSim(simOptions)
  const dir = tempDir()
  const backupDir = join(dir, 'backup')
  const config = writeConfig(dir, {
    url: sim.url,
    username: 'root',
    password: SIM_PASSWORD,
    backupDir,
    ...values,
  })
  return { sim, xapi, dir, backupDir, config }
}
