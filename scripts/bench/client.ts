// The bench's one XenAPI client: dpxen's own session (XML-RPC over undici), trusting the
// simulator's certificate by its fingerprint over HTTPS, as an administrator's pin would.
import { fromSeconds } from '../../src/core/format.js'
import { createLogger } from '../../src/core/log.js'
import { createDispatcher, createStreamAgents, Trust } from '../../src/xapi/connection.js'
import { Host } from '../../src/xapi/host.js'
import { XapiSession, xmlRpcTransport } from '../../src/xapi/session.js'

export interface BenchClient {
  session: XapiSession
  /** The same session as dpxen's engines see it. */
  host: Host
  close(): Promise<void>
}

export async function login(url: string, fingerprint?: string): Promise<BenchClient> {
  const trust = new Trust(url, fingerprint ? { fingerprint } : {})
  const dispatcher = createDispatcher(trust)
  const session = await XapiSession.open({
    url,
    username: 'root',
    password: 'xenroot',
    transport: xmlRpcTransport(dispatcher),
    log: createLogger({ out: () => undefined, name: 'bench' }),
  })
  const host = new Host({
    session,
    trust,
    dispatcher,
    agents: createStreamAgents(trust),
    stallTimeout: fromSeconds(60),
  })
  return {
    session,
    host,
    close: () => host.close(),
  }
}
