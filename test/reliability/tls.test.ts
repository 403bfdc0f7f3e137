// https: certificate verification on by default; a CA file or a pinned fingerprint works; a
// mismatch is refused with a clear line, before any credential is sent.
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { runPreExec } from '../../src/backup/run.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import { run, tempDir, writeConfig } from '../helpers/hooks.js'
import { startXapiSim, type XapiSim } from '../../simulator/xapi/server.js'
import { makeCert } from '../helpers/tls.js'

const sims: XapiSim[] = []
afterEach(async () => {
  await Promise.all(sims.splice(0).map((s) => s.close()))
})

async function setup(values: Record<string, unknown>) {
  const dir = tempDir()
  const cert = await makeCert(dir)
  const sim = await startXapiSim({
    demo: true,
    authFailureDelayMs: 10,
    tls: { cert: cert.cert, key: cert.key },
  })
  sims.push(sim)
  const backupDir = join(dir, 'staging')
  const base = {
    mode: 'online',
    vmName: ['vm2'],
    url: sim.url,
    username: 'root',
    password: 'xenroot',
    backupDir,
  }
  const config = writeConfig(dir, { ...base, ...values })
  const configWith = (extra: Record<string, unknown>, name: string): string =>
    writeConfig(dir, { ...base, ...extra }, name)
  return { sim, cert, backupDir, config, dir, configWith }
}

describe('https', () => {
  it('refuses a certificate it cannot verify by default, naming what to set', async () => {
    const { sim, config } = await setup({})
    sim.stats(true)
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(3)
    expect(result.lines).toEqual([
      `dpxen: cannot verify the certificate of ${sim.url} (DEPTH_ZERO_SELF_SIGNED_CERT): set caFile to the host's CA, or fingerprint to its SHA-256 fingerprint`,
    ])
    expect(sim.stats().calls).toBe(0)
  })

  it('backs up and restores over https with caFile', async () => {
    const { cert, backupDir, configWith } = await setup({})
    const config = configWith({ caFile: cert.certFile }, 'ca.json')
    expect((await run(runPreExec, [config])).code).toBe(0)
    expect(readdirSync(backupDir)).toContain('127.0.0.1_vm2_Snapshot.xva')
    expect((await run(runRestorePostExec, [config])).code).toBe(0)
  })

  it('backs up with a pinned fingerprint (any colon or case form)', async () => {
    const { cert, backupDir, configWith } = await setup({})
    const pin = cert.fingerprint.replace(/:/g, '').toLowerCase()
    const config = configWith({ fingerprint: pin }, 'pin.json')
    expect((await run(runPreExec, [config])).code).toBe(0)
    expect(existsSync(join(backupDir, '127.0.0.1_vm2_Snapshot.xva'))).toBe(true)
  })

  it('refuses a host whose certificate does not match the pinned fingerprint, before sending credentials', async () => {
    const { cert, sim, configWith, dir } = await setup({})
    const other = await makeCert(dir, 'other')
    const config = configWith({ fingerprint: other.fingerprint }, 'wrong.json')
    sim.stats(true)
    const result = await run(runPreExec, [config])
    expect(result.code).toBe(3)
    expect(result.lines).toEqual([
      `dpxen: the host's certificate fingerprint ${cert.fingerprint} is not the configured ${other.fingerprint} (refusing to send credentials)`,
    ])
    expect(sim.stats().calls).toBe(0)
  })
})
