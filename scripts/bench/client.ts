// The bench's one XenAPI client: dpxen's own session (XML-RPC over undici), trusting the
// simulator's certificate by its fingerprint over HTTPS, as an administrator's pin would.
import { createLogger } from '../../src/core/log.js'
import { createDispatcher, Trust } from '../../src/xapi/connection.js'
import { XapiSession, xmlRpcTransport } from '../../src/xapi/session.js'

export interface BenchClient {
  session: XapiSession
  close(): Promise<void>
}

export async function login(url: string, fingerprint?: string): Promise<BenchClient> {
  const dispatcher = createDispatcher(new Trust(url, fingerprint ? { fingerprint } : {}))
  const session = await XapiSession.open({
    url,
    username: 'root',
    password: 'xenroot',
    transport: xmlRpcTransport(dispatcher),
    log: createLogger({ out: () => undefined, name: 'bench' }),
  })
  return {
    session,
    async close() {
      await session.logout()
      await dispatcher.close()
    },
  }
}
