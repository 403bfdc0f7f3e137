// Starts the XenServer simulator in-process for one test file and closes it afterwards.
import { afterEach } from 'vitest'
import { startXapiSim, type XapiSim, type XapiSimOptions } from '../../simulator/xapi/server.js'
import { TestClient } from './rpc.js'

const running: XapiSim[] = []

afterEach(async () => {
  await Promise.all(running.splice(0).map((sim) => sim.close()))
})

/** A demo-pool simulator on port 0 (closed after the test) and a logged-in client. */
export async function demoSim(options: XapiSimOptions = {}): Promise<{ sim: XapiSim; xapi: TestClient }> {
  const sim = await startXapiSim({ demo: true, authFailureDelayMs: 10, ...options })
  running.push(sim)
  return { sim, xapi: await TestClient.login(sim.url, options.user, options.password) }
}
