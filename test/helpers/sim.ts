// Starts the XenServer simulator in-process for one test file and closes it afterwards, over
// HTTP or, when this run's transport says so (DPXEN_TEST_TLS), over HTTPS (helpers/tls.ts).
import { afterEach } from 'vitest'
import { startXapiSim, type XapiSim, type XapiSimOptions } from '../../simulator/xapi/server.js'
import { TestClient } from './rpc.js'
import { POOL_HOSTS, caBundle, sharedCerts, testTransport, trustSim, trustUrl } from './tls.js'

const running: XapiSim[] = []

afterEach(async () => {
  await Promise.all(running.splice(0).map((sim) => sim.close()))
})

let fileHosts = POOL_HOSTS

/**
 * Makes this test file's simulators single hosts, for the files that test one host's handlers
 * or model by talking to it directly (a file runs in a process of its own).
 */
export function singleHost(): void {
  fileHosts = 1
}

/**
 * A simulator over this run's transport, a pool of three hosts unless `hosts` says otherwise
 * (each with its own certificate: redirects to members are https whatever the transport); its
 * url is https with the first host's certificate trusted as the transport says, or http. The
 * caller closes it.
 */
export async function startSim(options: XapiSimOptions = {}): Promise<XapiSim> {
  const hosts = options.hosts ?? fileHosts
  const https = testTransport() !== 'http'
  if (options.tls || (!https && hosts === 1)) return startXapiSim({ ...options, hosts })
  const certs = (await sharedCerts()).slice(0, hosts)
  const sim = await startXapiSim({ ...options, hosts, tls: certs, scheme: https ? 'https' : 'http' })
  if (https) {
    trustSim(sim.url, certs[0]!)
    // A configuration naming a member trusts every host by a CA bundle: a pinned fingerprint is
    // one host's, and the master it is sent to has another.
    const bundle = await caBundle()
    for (const url of sim.hostUrls.slice(1)) trustUrl(url, { caFile: bundle })
  }
  return sim
}

/** A demo-pool simulator on port 0 (closed after the test) and a logged-in client. */
export async function demoSim(options: XapiSimOptions = {}): Promise<{ sim: XapiSim; xapi: TestClient }> {
  const sim = await startSim({ demo: true, authFailureDelayMs: 10, ...options })
  running.push(sim)
  return { sim, xapi: await TestClient.login(sim.url, options.user, options.password) }
}
