// The guard of the transport matrix: under an https project the simulators really serve TLS,
// and the configurations the suites write trust them the way the project says.
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { tempDir, writeConfig } from './helpers/hooks.js'
import { demoSim } from './helpers/sim.js'
import { testTransport } from './helpers/tls.js'

describe('the test transport', () => {
  it('serves the simulator and writes configurations as this project says', async () => {
    const { sim } = await demoSim()
    const config = JSON.parse(readFileSync(writeConfig(tempDir(), { url: sim.url }), 'utf8')) as Record<
      string,
      string
    >
    const transport = testTransport()
    expect(new URL(sim.url).protocol).toBe(transport === 'http' ? 'http:' : 'https:')
    expect(Object.keys(config).sort()).toEqual(
      transport === 'http' ? ['url'] : transport === 'pin' ? ['fingerprint', 'url'] : ['caFile', 'url'],
    )
  })
})
