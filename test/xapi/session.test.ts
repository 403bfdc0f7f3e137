// XapiSession against xapi-sim: a new login after SESSION_INVALID, shared by parallel calls.
import { afterEach, describe, expect, it } from 'vitest'
import { createLogger } from '../../src/core/log.js'
import { createDispatcher, Trust } from '../../src/xapi/connection.js'
import { XapiSession, xmlRpcTransport } from '../../src/xapi/session.js'
import { demoSim } from '../helpers/sim.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

const dispatchers: { close(): Promise<void> }[] = []
afterEach(async () => {
  for (const d of dispatchers.splice(0)) await d.close()
})

async function open(url: string): Promise<XapiSession> {
  const dispatcher = createDispatcher(new Trust(url))
  dispatchers.push(dispatcher)
  return XapiSession.open({
    url,
    username: 'root',
    password: SIM_PASSWORD,
    transport: xmlRpcTransport(dispatcher),
    log: createLogger({ out: () => undefined, name: 'test' }),
  })
}

describe('XapiSession', () => {
  it('logs in again once when parallel calls all meet SESSION_INVALID, and leaves no session open', async () => {
    const { sim } = await demoSim()
    const others = sim.openSessions() // the helper's own client
    const session = await open(sim.url)
    const first = session.ref
    sim.faults.add('session-invalid-once')
    const answers = await Promise.all(
      ['VM', 'VBD', 'VDI', 'SR', 'VIF', 'network', 'pool'].map((cls) =>
        session.call<string[]>(`${cls}.get_all`),
      ),
    )
    expect(answers.every((refs) => Array.isArray(refs) && refs.length > 0)).toBe(true)
    expect(session.ref).not.toBe(first)
    expect(sim.openSessions()).toBe(others + 1)
    await session.logout()
    expect(sim.openSessions()).toBe(others)
  })

  it('a call made after the new login uses it without logging in again', async () => {
    const { sim } = await demoSim()
    const others = sim.openSessions()
    const session = await open(sim.url)
    sim.faults.add('session-invalid-once')
    await session.call('VM.get_all')
    const second = session.ref
    await session.call('VM.get_all')
    expect(session.ref).toBe(second)
    expect(sim.openSessions()).toBe(others + 1)
    await session.logout()
  })
})
