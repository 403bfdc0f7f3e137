// The raw GET used for exports, against small servers that answer exactly as scripted:
// framing (connection end, Content-Length), refusals, redirects, backpressure, stalls, aborts.
import { createHash, randomBytes } from 'node:crypto'
import { createServer, type Server, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { ms } from '../../src/core/format.js'
import { Trust } from '../../src/xapi/connection.js'
import { rawGet } from '../../src/xapi/raw-get.js'

const servers: Server[] = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))))
})

/** A server that reads the request head, then hands the socket to `answer`. */
async function serve(answer: (socket: Socket, request: string) => void): Promise<string> {
  const server = createServer((socket) => {
    let got = ''
    socket.on('data', (data) => {
      got += data.toString('latin1')
      if (got.includes('\r\n\r\n')) {
        socket.removeAllListeners('data')
        answer(socket, got)
      }
    })
    socket.on('error', () => undefined)
  })
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address() as { port: number }
  return `http://127.0.0.1:${address.port}`
}

async function collect(url: string, idleMs = ms(5000), signal?: AbortSignal): Promise<Buffer> {
  const res = await rawGet(new Trust(url), url, { idleMs, ...(signal ? { signal } : {}) })
  const parts: Buffer[] = []
  await res.pump((piece) => {
    parts.push(Buffer.from(piece))
    return true
  })
  return Buffer.concat(parts)
}

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex')

describe('rawGet', () => {
  it('reads an HTTP/1.0 body that ends with the connection, and sends a proper request', async () => {
    const body = randomBytes(3_000_000)
    let request = ''
    const url = await serve((socket, req) => {
      request = req
      socket.end(Buffer.concat([Buffer.from('HTTP/1.0 200 OK\r\ntask-id: T1\r\n\r\n'), body]))
    })
    const res = await rawGet(new Trust(url), `${url}/export?ref=R&session_id=S`, { idleMs: ms(5000) })
    expect(res.status).toBe(200)
    expect(res.headers['task-id']).toBe('T1')
    const parts: Buffer[] = []
    await res.pump((piece) => (parts.push(Buffer.from(piece)), true))
    expect(sha(Buffer.concat(parts))).toBe(sha(body))
    expect(request).toMatch(/^GET \/export\?ref=R&session_id=S HTTP\/1\.1\r\n/)
    expect(request).toMatch(/\r\nHost: 127\.0\.0\.1:\d+\r\n/)
  })

  it('ends a Content-Length body at its length, without waiting for the connection to close', async () => {
    const url = await serve((socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello'))
    expect((await collect(url)).toString()).toBe('hello')
  })

  it('rejects a Content-Length body cut short', async () => {
    const url = await serve((socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello'))
    await expect(collect(url)).rejects.toMatchObject({ code: 'TRANSFER_CLOSED' })
  })

  it('refuses a chunked body and an answer that is not HTTP', async () => {
    const chunked = await serve((socket) =>
      socket.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'),
    )
    await expect(collect(chunked)).rejects.toThrow(/chunked body/)
    const garbage = await serve((socket) => socket.end('SSH-2.0-OpenSSH\r\n\r\n'))
    await expect(collect(garbage)).rejects.toThrow(/did not answer in HTTP/)
  })

  it('follows a 302 to another member', async () => {
    const member = await serve((socket, req) =>
      socket.end(`HTTP/1.0 200 OK\r\n\r\nfrom member ${req.split(' ')[1]}`),
    )
    const master = await serve((socket) =>
      socket.end(`HTTP/1.1 302 Found\r\nLocation: ${member}/export?ref=R\r\nContent-Length: 0\r\n\r\n`),
    )
    expect((await collect(`${master}/export?ref=R`)).toString()).toBe('from member /export?ref=R')
  })

  it('stops reading when the consumer says so, and goes on in order after resume()', async () => {
    const body = randomBytes(8_000_000)
    const url = await serve((socket) =>
      socket.end(Buffer.concat([Buffer.from('HTTP/1.0 200 OK\r\n\r\n'), body])),
    )
    const res = await rawGet(new Trust(url), url, { idleMs: ms(5000) })
    const parts: Buffer[] = []
    let calls = 0
    let callsWhilePaused = 0
    let paused = false
    const done = res.pump((piece) => {
      calls++
      if (paused) callsWhilePaused++
      parts.push(Buffer.from(piece))
      if (calls % 5 === 0) {
        paused = true
        setTimeout(() => {
          paused = false
          res.resume()
        }, 5)
        return false
      }
      return true
    })
    await done
    expect(callsWhilePaused).toBe(0)
    expect(sha(Buffer.concat(parts))).toBe(sha(body))
  })

  it('gives up on a host that stops sending, and on an abort', async () => {
    const silent = await serve((socket) => socket.write('HTTP/1.0 200 OK\r\n\r\nsome'))
    await expect(collect(silent, ms(200))).rejects.toMatchObject({ code: 'TRANSFER_STALLED' })
    const controller = new AbortController()
    setTimeout(() => controller.abort(), 100)
    await expect(collect(silent, ms(5000), controller.signal)).rejects.toMatchObject({ code: 'ABORTED' })
  })

  it('does not count a pause of its own consumer as the host stalling', async () => {
    const body = randomBytes(2_000_000)
    const url = await serve((socket) =>
      socket.end(Buffer.concat([Buffer.from('HTTP/1.0 200 OK\r\n\r\n'), body])),
    )
    const res = await rawGet(new Trust(url), url, { idleMs: ms(100) })
    const parts: Buffer[] = []
    let paused = false
    await res.pump((piece) => {
      parts.push(Buffer.from(piece))
      if (paused) return true
      paused = true
      // A slow disk: the consumer holds the reader three times as long as the idle limit.
      setTimeout(() => res.resume(), 300)
      return false
    })
    expect(sha(Buffer.concat(parts))).toBe(sha(body))
  })

  it('says which host it cannot reach', async () => {
    const url = await serve(() => undefined)
    await new Promise((resolve) => servers.pop()!.close(resolve))
    await expect(collect(url)).rejects.toMatchObject({ code: 'CONNECT_FAILED' })
  })
})
