// What stands between dpxen and the pool and answers in its place (a proxy's HTML error page, a
// redirect that loops, a load balancer's 401): one line saying what the host answered, a
// documented exit code, no stack trace. Real servers on port 0, as the hooks meet them.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { runDpxen } from '../../src/cli/dpxen.js'
import { run, tempDir, writeConfig } from '../helpers/hooks.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

const servers: Server[] = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))))
})

async function serve(
  answer: (url: string, port: number) => { status: number; headers: Record<string, string>; body: string },
) {
  const server = createServer((req, res) => {
    req.resume()
    const { status, headers, body } = answer(req.url ?? '/', (server.address() as AddressInfo).port)
    res.writeHead(status, headers)
    res.end(body)
  })
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

async function check(url: string) {
  const dir = tempDir()
  const config = writeConfig(dir, {
    mode: 'allOnline',
    url,
    username: 'root',
    password: SIM_PASSWORD,
    backupDir: `${dir}/b`,
  })
  return run(runDpxen, ['check', config])
}

describe('answers that are not from a XenAPI host', () => {
  it('a proxy HTML error page', async () => {
    const url = await serve(() => ({
      status: 502,
      headers: { 'content-type': 'text/html' },
      body: '<html><body><h1>502 Bad Gateway</h1></body></html>',
    }))
    const result = await check(url)
    expect(result.code).toBe(3)
    expect(result.lines.at(-1)).toBe(
      `dpxen: ${url} answered HTTP 502 to session.login_with_password (is this a XenServer / XCP-ng host?)`,
    )
  })
  it('a redirect loop', async () => {
    let hits = 0
    const url = await serve((path, port) => {
      hits++
      return { status: 302, headers: { location: `http://127.0.0.1:${port}${path}` }, body: '' }
    })
    const result = await check(url)
    expect(result.code).toBe(3)
    expect(result.lines.at(-1)).toMatch(/answered HTTP 302 to session.login_with_password/)
    expect(hits).toBe(1) // not followed round and round
  })
  it('a load balancer 401', async () => {
    const url = await serve(() => ({
      status: 401,
      headers: { 'www-authenticate': 'Basic realm="lb"' },
      body: 'denied',
    }))
    const result = await check(url)
    expect(result.code).toBe(3)
    expect(result.lines.at(-1)).toMatch(
      /answered HTTP 401 to session.login_with_password \(is this a XenServer/,
    )
    expect(result.text).not.toContain(SIM_PASSWORD)
  })
})
