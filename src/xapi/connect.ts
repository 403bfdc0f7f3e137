// Opening a connection from a configuration: the trust, dispatcher, transport and session; then
// the pool's hosts and their certificates, so that transfers may follow redirects to them.
import type { Config } from '../config/schema.js'
import { isXapiError } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import { createDispatcher, createStreamAgents, Trust, type PoolHost } from './connection.js'
import type { StreamAgents } from './http.js'
import { XapiSession, xmlRpcTransport } from './session.js'

/**
 * The pool's hosts with the fingerprints of their certificates (type host: the one each serves
 * on 443), from the pool's records (Certificate, since XenServer 8.2 / XCP-ng 8.2). A pool that
 * has no such records gives none: a redirect to another host over https is then refused.
 */
export async function poolHosts(session: XapiSession): Promise<PoolHost[]> {
  const hosts =
    await session.call<Record<string, { name_label: string; address: string }>>('host.get_all_records')
  let certificates: Record<
    string,
    { host: string; type?: string; fingerprint_sha256?: string; fingerprint?: string }
  > = {}
  try {
    certificates = await session.call('Certificate.get_all_records')
  } catch (error) {
    if (!isXapiError(error, 'MESSAGE_METHOD_UNKNOWN')) throw error
  }
  const byHost = new Map<string, string>()
  for (const cert of Object.values(certificates)) {
    if ((cert.type ?? 'host') !== 'host') continue
    byHost.set(cert.host, (cert.fingerprint_sha256 || cert.fingerprint || '').toUpperCase())
  }
  return Object.entries(hosts).map(([ref, host]) => ({
    name: host.name_label,
    address: host.address,
    fingerprint: byHost.get(ref) ?? '',
  }))
}

export interface Connection {
  session: XapiSession
  /** The pool's hosts with their recorded certificates (as learnt at login). */
  hosts: PoolHost[]
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
  const trust = new Trust(config.url, {
    ...(config.caFile ? { caFile: config.caFile } : {}),
    ...(config.fingerprint ? { fingerprint: config.fingerprint } : {}),
  })
  const dispatcher = createDispatcher(trust)
  const agents = createStreamAgents(trust)
  try {
    const session = await XapiSession.open({
      url: config.url,
      username: config.username,
      password: config.password,
      transport: xmlRpcTransport(dispatcher, config.maxAnswerMiB * 1024 * 1024),
      log,
      ...(signal ? { runSignal: signal } : {}),
    })
    try {
      trust.learn(await poolHosts(session))
    } catch (error) {
      await session.logout()
      throw error
    }
    return {
      session,
      hosts: trust.hosts,
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
