// Starts the XenServer simulator in-process for one test file and closes it afterwards, over
// HTTP or, when this run's transport says so (DPXEN_TEST_TLS), over HTTPS (helpers/tls.ts).
import { afterEach } from 'vitest'
import { startXapiSim, type XapiSim, type XapiSimOptions } from '../../simulator/xapi/server.js'
import { TestClient } from './rpc.js'
import { sharedCert, testTransport, trustSim } from './tls.js'

const running: XapiSim[] = []

afterEach(async () => {
  await Promise.all(running.splice(0).map((sim) => sim.close()))
})

/** A simulator over this run's transport (https with the shared certificate, or http); the caller closes it. */
export async function startSim(options: XapiSimOptions = {}): Promise<XapiSim> {
  if (testTransport() === 'http' || options.tls) return startXapiSim(options)
  const cert = await sharedCert()
  const sim = await startXapiSim({ ...options, tls: { cert: cert.cert, key: cert.key } })
  trustSim(sim.url, cert)
  trustSim(sim.memberUrl, cert)
  return sim
}

/** A demo-pool simulator on port 0 (closed after the test) and a logged-in client. */
export async function demoSim(options: XapiSimOptions = {}): Promise<{ sim: XapiSim; xapi: TestClient }> {
  const sim = await startSim({ demo: true, authFailureDelayMs: 10, ...options })
  running.push(sim)
  return { sim, xapi: await TestClient.login(sim.url, options.user, options.password) }
}
