// https: certificate verification on by default; a CA file or a pinned fingerprint works; a
// mismatch is refused with a clear line, before any credential is sent.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { runPreExec } from '../../src/backup/run.js'
import { runDpxen } from '../../src/cli/dpxen.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import { run, tempDir, writeConfig } from '../helpers/hooks.js'
import { startXapiSim, type XapiSim } from '../../simulator/xapi/server.js'
import { makeCert } from '../helpers/tls.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

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
    password: SIM_PASSWORD,
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
      `dpxen: cannot verify the certificate of ${sim.url} (DEPTH_ZERO_SELF_SIGNED_CERT): run "dpxen check" with this configuration to see the certificate and the fingerprint line to add (or set caFile to the host's CA)`,
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
      `dpxen: the host's certificate fingerprint ${cert.fingerprint} is not the configured ${other.fingerprint} (refusing to send credentials; if the certificate was renewed on purpose, run "dpxen check" to pin the new one)`,
    ])
    expect(sim.stats().calls).toBe(0)
  })

  it('trust on first use: dpxen check shows the certificate and the exact line to pin it; pinned, it is ready', async () => {
    const { cert, sim, config, dir } = await setup({})
    sim.stats(true)
    const first = await run(runDpxen, ['check', config])
    expect(first.code).toBe(3)
    expect(first.lines).toContain(
      `PROBLEM the certificate of ${sim.url} is not trusted (DEPTH_ZERO_SELF_SIGNED_CERT):`,
    )
    expect(first.lines).toContain(`          SHA-256 ${cert.fingerprint}`)
    expect(first.lines).toContain('          subject CN=xapi-sim; issuer CN=xapi-sim')
    expect(first.text).toMatch(/^ {10}valid {3}\d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d$/m)
    expect(first.lines).toContain(`          "fingerprint": "${cert.fingerprint}",`)
    expect(first.lines.at(-1)).toBe(
      'not ready: the certificate is not trusted (nothing was sent to the host)',
    )
    expect(sim.stats().calls).toBe(0)
    // The administrator adds the line it gave: the check and the backup go through.
    const values = JSON.parse(readFileSync(config, 'utf8')) as Record<string, unknown>
    const pinned = writeConfig(
      dir,
      { ...values, ...JSON.parse(`{${first.lines.at(-2)!.trim().replace(/,$/, '')}}`) },
      'pinned.json',
    )
    const second = await run(runDpxen, ['check', pinned])
    expect(second.lines).toContain(`ok      certificate ${cert.fingerprint} (pinned)`)
    expect(second.lines.at(-1)).toBe('ready')
    expect((await run(runPreExec, [pinned])).code).toBe(0)
    // A DPxen_config.py gets the line in its own syntax.
    const py = writeConfig(
      dir,
      {
        text: `Mode = "online"\nurl = "${sim.url}"\nusername = "root"\npassword = "xenroot"\nvmName = ["vm2"]\nbackupDir = "${join(dir, 'py')}"\n`,
      },
      'DPxen_config.py',
    )
    expect((await run(runDpxen, ['check', py])).lines).toContain(
      `          fingerprint = "${cert.fingerprint}"`,
    )
  })

  it('a certificate that changed after pinning: dpxen check shows both fingerprints and the line to replace', async () => {
    const { cert, configWith, dir } = await setup({})
    const old = await makeCert(dir, 'old')
    const config = configWith({ fingerprint: old.fingerprint }, 'renewed.json')
    const result = await run(runDpxen, ['check', config])
    expect(result.code).toBe(3)
    expect(result.lines).toEqual(
      expect.arrayContaining([
        `          pinned  ${old.fingerprint}`,
        `          now     ${cert.fingerprint}`,
        `          "fingerprint": "${cert.fingerprint}",`,
      ]),
    )
  })
})
