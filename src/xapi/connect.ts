// Opening a connection from a configuration: dispatcher (TLS policy), transport, session.
import type { Config } from '../config/schema.js'
import type { Logger } from '../core/log.js'
import { createDispatcher, createStreamAgents } from './connection.js'
import type { StreamAgents } from './http.js'
import { XapiSession, xmlRpcTransport } from './session.js'

export interface Connection {
  session: XapiSession
  /** For streamed transfers (export, import, database dump). */
  agents: StreamAgents
  /** Logs out and closes the sockets; never throws. */
  close(): Promise<void>
}

/**
 * Logs in. The login is tied to the run's abort signal (`signal`): nothing has changed yet, so
 * SIGTERM may end it at once. Later calls are answered after SIGTERM too (the cleanup, which
 * destroys a snapshot or starts a VM, needs the session), within a few seconds each.
 */
export async function connect(config: Config, log: Logger, signal?: AbortSignal): Promise<Connection> {
  const policy = {
    ...(config.caFile ? { caFile: config.caFile } : {}),
    ...(config.fingerprint ? { fingerprint: config.fingerprint } : {}),
  }
  const dispatcher = createDispatcher(policy)
  const agents = createStreamAgents(policy)
  try {
    const session = await XapiSession.open({
      url: config.url,
      username: config.username,
      password: config.password,
      transport: xmlRpcTransport(dispatcher, config.maxAnswerMiB * 1024 * 1024),
      log,
      ...(signal ? { runSignal: signal } : {}),
    })
    return {
      session,
      agents,
      async close() {
        await session.logout()
        await dispatcher.close().catch(() => undefined)
        agents.http.destroy()
        agents.https.destroy()
      },
    }
  } catch (error) {
    await dispatcher.close().catch(() => undefined)
    throw error
  }
}
