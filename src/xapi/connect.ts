// Opening the pool from a configuration: the trust, dispatcher, transport and session; then the
// pool's hosts and their certificates, so that transfers may follow redirects to them: a Host.
import type { Config } from '../config/schema.js'
import { readFile, rename, rm, writeFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { DpxenError, isXapiError } from '../core/errors.js'
import type { Ms } from '../core/format.js'
import type { Logger } from '../core/log.js'
import { createDispatcher, createStreamAgents, Trust, type PoolHost } from './connection.js'
import { Host } from './host.js'
import { masterUrl, XapiSession, xmlRpcTransport } from './session.js'

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

/**
 * Where the pool's hosts are remembered between runs, for when `url` stops answering: beside the
 * staging folder, named after it. Outside the folder, because the post-exec empties it and Data
 * Protector backs it up; per staging folder, because two clients (or two specifications) may
 * back up one pool. Written 0600 by the user that runs the hooks, as the staging folder is.
 */
export function poolMemoryFile(config: Pick<Config, 'backupDir'>): string {
  return `${resolve(config.backupDir)}.pool-hosts.json`
}

interface PoolMemory {
  /** The configured url these hosts were learnt through; another url's memory is not used. */
  url: string
  hosts: PoolHost[]
}

async function recall(config: Config, log: Logger): Promise<PoolHost[]> {
  try {
    const memory = JSON.parse(await readFile(poolMemoryFile(config), 'utf8')) as PoolMemory
    if (memory.url !== config.url || !Array.isArray(memory.hosts)) return []
    return memory.hosts.filter(
      (h) =>
        typeof h?.address === 'string' && typeof h.name === 'string' && typeof h.fingerprint === 'string',
    )
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
      log.debug(`the pool's hosts from the last run could not be read: ${String(error)}`)
    return []
  }
}

async function remember(config: Config, log: Logger, hosts: PoolHost[]): Promise<void> {
  const file = poolMemoryFile(config)
  const partial = `${file}.${process.pid}.partial`
  try {
    await writeFile(partial, JSON.stringify({ url: config.url, hosts } satisfies PoolMemory), { mode: 0o600 })
    await rename(partial, file)
  } catch (error) {
    await rm(partial, { force: true }).catch(() => undefined)
    log.debug(`the pool's hosts could not be remembered in ${file}: ${String(error)}`)
  }
}

/**
 * Logs in. The login is tied to the run's abort signal (`signal`): nothing has changed yet, so
 * SIGTERM may end it at once. Later calls are answered after SIGTERM too (the cleanup, which
 * destroys a snapshot or starts a VM, needs the session), within a few seconds each.
 *
 * When `url` does not answer, the pool's other hosts remembered from the last run are tried
 * (each trusted only by the certificate the pool recorded for it then); a member answers with
 * its master's address, and the line names the master found. dpxen never makes a host master.
 */
export async function connect(
  config: Config,
  log: Logger,
  run: { signal?: AbortSignal; retryDelays?: readonly Ms[] } = {},
): Promise<Host> {
  const { signal } = run
  const trust = new Trust(config.url, {
    ...(config.caFile ? { caFile: config.caFile } : {}),
    ...(config.fingerprint ? { fingerprint: config.fingerprint } : {}),
  })
  const dispatcher = createDispatcher(trust)
  const agents = createStreamAgents(trust)
  const open = (url: string): Promise<XapiSession> =>
    XapiSession.open({
      url,
      username: config.username,
      password: config.password,
      transport: xmlRpcTransport(dispatcher, config.maxAnswerMiB * 1024 * 1024),
      log,
      ...(signal ? { runSignal: signal } : {}),
    })
  try {
    const remembered = await recall(config, log)
    trust.learn(remembered)
    const session = await open(config.url).catch((error: unknown) =>
      elsewhere(config, log, remembered, open, error, signal),
    )
    try {
      trust.learn(await poolHosts(session))
    } catch (error) {
      await session.logout()
      throw error
    }
    await remember(config, log, trust.hosts)
    return new Host({
      session,
      trust,
      dispatcher,
      agents,
      stallTimeout: config.stallTimeout,
      ...(run.retryDelays ? { retryDelays: run.retryDelays } : {}),
    })
  } catch (error) {
    await dispatcher.close().catch(() => undefined)
    throw error
  }
}

/** `url` failed to answer: the first remembered host that leads to the master; else that failure. */
async function elsewhere(
  config: Config,
  log: Logger,
  remembered: PoolHost[],
  open: (url: string) => Promise<XapiSession>,
  failure: unknown,
  signal?: AbortSignal,
): Promise<XapiSession> {
  const configured = new URL(config.url).hostname.replace(/^\[(.*)\]$/, '$1')
  const others = remembered.filter((h) => h.address !== configured)
  if (
    !(failure instanceof DpxenError) ||
    failure.code !== 'CONNECT_FAILED' ||
    others.length === 0 ||
    signal?.aborted
  )
    throw failure
  log.info(
    `dpxen: ${new URL(config.url).host} does not answer (${failure.message}); trying the pool's other hosts known from the last run: ${others.map((h) => h.name).join(', ')}`,
  )
  for (const host of others) {
    let session: XapiSession
    try {
      session = await open(masterUrl(config.url, host.address))
    } catch (error) {
      if (!(error instanceof DpxenError) || error.code !== 'CONNECT_FAILED') throw error
      log.debug(`${host.name} (${host.address}): ${error.message}`)
      continue
    }
    log.info(
      `dpxen: the pool's master is now ${new URL(session.url).host} (found through ${host.name}); set url to it in the configuration`,
    )
    return session
  }
  throw failure
}
