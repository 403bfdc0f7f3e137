// xapi-sim as a pool of three hosts, as xapi's handlers behave (export.ml, import.ml,
// import_raw_vdi.ml, export_raw_vdi.ml, importexport.ml return_302_redirect): redirects from
// the head alone with the caller's task left pending, what each handler does when no host sees
// the storage, certificate records that match what each host serves, and a master that moves.
import { X509Certificate } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import { connect as tlsConnect } from 'node:tls'
import { describe, expect, it } from 'vitest'
import type { XapiSim } from '../../simulator/xapi/server.js'
import { TestClient, rawCall, type Envelope } from '../helpers/rpc.js'
import { demoSim } from '../helpers/sim.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

/** One raw request: the status and headers the host answered with (the body is left). */
function head(url: string, method = 'GET'): Promise<{ status: number; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const target = new URL(url.replace(/^https:/, 'http:'))
    const req = httpRequest(target, {
      method,
      headers: method === 'PUT' ? { 'content-length': String(1024 * 1024) } : {},
    })
    req.once('response', (res) => {
      resolve({ status: res.statusCode ?? 0, headers: res.headers })
      res.destroy()
      req.destroy()
    })
    req.once('error', reject)
    req.flushHeaders()
  })
}

function served(url: string): Promise<string> {
  const target = new URL(url)
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: target.hostname, port: Number(target.port), rejectUnauthorized: false })
    socket.once('secureConnect', () => {
      resolve(new X509Certificate(socket.getPeerCertificate().raw).fingerprint256)
      socket.destroy()
    })
    socket.once('error', reject)
  })
}

async function pool(): Promise<{ sim: XapiSim; xapi: TestClient; plain: string }> {
  const { sim, xapi } = await demoSim({ hosts: 3 })
  return { sim, xapi, plain: sim.url.replace(/^https:/, 'http:') }
}

describe('xapi-sim: a pool of three hosts', () => {
  it('members answer HOST_IS_SLAVE with the master address; each host serves the certificate the pool records', async () => {
    const { sim, xapi } = await pool()
    for (const url of sim.hostUrls.slice(1)) {
      const answer = (await rawCall(url, 'session.login_with_password', ['root', SIM_PASSWORD]))
        .value as Envelope
      expect(answer).toEqual({ Status: 'Failure', ErrorDescription: ['HOST_IS_SLAVE', '127.0.0.1'] })
    }
    const hosts =
      await xapi.call<Record<string, { address: string; certificates: string[] }>>('host.get_all_records')
    const certs = await xapi.call<Record<string, { host: string; type: string; fingerprint_sha256: string }>>(
      'Certificate.get_all_records',
    )
    const fingerprints = new Set<string>()
    for (const [ref, host] of Object.entries(hosts)) {
      const [cert] = host.certificates.map((c) => certs[c]!)
      expect(cert).toMatchObject({ host: ref, type: 'host' })
      const url = sim.hostUrls.find((u) => new URL(u).hostname === host.address)!
      expect(await served(url.replace(/^http:/, 'https:'))).toBe(cert!.fingerprint_sha256)
      fingerprints.add(cert!.fingerprint_sha256)
    }
    expect(fingerprints.size).toBe(3)
  })

  it('/export and /import on the master: 302 to the member that holds the storage, from the head, the task left pending', async () => {
    const { xapi, plain } = await pool()
    const debian = await xapi.vmByName('Debian')
    await xapi.call('VM.hard_shutdown', debian)
    const task = await xapi.call<string>('task.create', 'export', '')
    const exp = await head(`${plain}/export?session_id=${xapi.session}&ref=${debian}&task_id=${task}`)
    expect(exp.status).toBe(302)
    const port = new URL(plain).port
    expect(exp.headers.location).toBe(
      `https://127.0.0.3:${port}/export?session_id=${xapi.session}&ref=${debian}&task_id=${task}`,
    )
    expect(exp.headers.connection).toBe('close')
    expect(await xapi.call('task.get_status', task)).toBe('pending')
    // The default SR, "Local storage", is the third host's.
    const imp = await head(`${plain}/import?session_id=${xapi.session}`, 'PUT')
    expect(imp.status).toBe(302)
    expect(String(imp.headers.location)).toMatch(new RegExp(`^https://127\\.0\\.0\\.3:${port}/import\\?`))
    // A VM on shared storage is served where it is asked.
    const vm2 = await xapi.vmByName('vm2')
    expect((await head(`${plain}/export?session_id=${xapi.session}&ref=${vm2}`)).status).toBe(200)
  })

  it('no host sees the storage (its host is down): each handler answers as xapi does', async () => {
    const { sim, xapi, plain } = await pool()
    const debian = await xapi.vmByName('Debian')
    await xapi.call('VM.hard_shutdown', debian)
    const vbds = await xapi.call<string[]>('VM.get_VBDs', debian)
    const vdi = await xapi.call<string>('VBD.get_VDI', vbds[0]) // xvda, on the third host's SR
    await sim.setHostDown(3, true)
    const status = async (task: string) => [
      await xapi.call('task.get_status', task),
      await xapi.call('task.get_error_info', task),
    ]
    const t1 = await xapi.call<string>('task.create', 'export', '')
    await expect(
      head(`${plain}/export?session_id=${xapi.session}&ref=${debian}&task_id=${t1}`),
    ).rejects.toThrow()
    expect(await status(t1)).toEqual(['failure', ['NO_HOSTS_AVAILABLE']])
    const t2 = await xapi.call<string>('task.create', 'import', '')
    expect((await head(`${plain}/import?session_id=${xapi.session}&task_id=${t2}`, 'PUT')).status).toBe(500)
    expect(await status(t2)).toEqual(['pending', []])
    const t3 = await xapi.call<string>('task.create', 'raw', '')
    const raw = `session_id=${xapi.session}&vdi=${vdi}&task_id=${t3}`
    expect((await head(`${plain}/import_raw_vdi?${raw}&format=raw`, 'PUT')).status).toBe(400)
    expect(await status(t3)).toEqual(['failure', ['NO_HOSTS_AVAILABLE']])
    const t4 = await xapi.call<string>('task.create', 'raw', '')
    expect(
      (await head(`${plain}/export_raw_vdi?session_id=${xapi.session}&vdi=${vdi}&task_id=${t4}`)).status,
    ).toBe(500)
    expect(await status(t4)).toEqual(['pending', []])
    expect(await xapi.failure('VM.start', debian, false, false)).toEqual(['NO_HOSTS_AVAILABLE'])
  })

  it('pool.designate_new_master: the old master answers HOST_IS_SLAVE, no session survives', async () => {
    const { sim, xapi } = await pool()
    const [, second] = await xapi.call<string[]>('host.get_all')
    await xapi.call('pool.designate_new_master', second)
    const answer = (await rawCall(sim.url, 'session.login_with_password', ['root', SIM_PASSWORD]))
      .value as Envelope
    expect(answer).toEqual({ Status: 'Failure', ErrorDescription: ['HOST_IS_SLAVE', '127.0.0.2'] })
    const again = await TestClient.login(sim.hostUrls[1]!)
    expect((await again.call<string[]>('VM.get_all')).length).toBeGreaterThan(0)
    expect(sim.openSessions()).toBe(1)
  })
})
