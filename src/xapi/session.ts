// A XenAPI session: login with an originator, follow HOST_IS_SLAVE to the master (at login and
// at any later call: the master may move), log in again once on SESSION_INVALID, and always
// log out. Every call goes to the debug log with secrets
// redacted. The transport is a plain function, so tests and other hosts plug in at one seam.
import { performance } from 'node:perf_hooks'
import { crashPoint } from '../core/crash-points.js'
import { DpxenError, XapiError, isXapiError } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import { connectionError } from './connection.js'
import { request, type Dispatcher } from './undici.js'
import { decodeResponse, encodeCall } from './xmlrpc.js'

/** Sends one XML-RPC call and returns the decoded answer (the Status/Value struct). */
export type XapiTransport = (
  url: string,
  method: string,
  params: unknown[],
  options: { signal?: AbortSignal },
) => Promise<unknown>

export const ORIGINATOR = 'dpxen'
const MAX_REDIRECTS = 3

/** The XML-RPC transport over undici. Network failures become CONNECT_FAILED. */
/** The largest XML-RPC answer taken by default: a 10,000-VM pool's records are tens of MiB. */
export const MAX_ANSWER_BYTES = 256 * 1024 * 1024

/**
 * Reads an answer body to its end, refusing one over `max` bytes (a host, or something posing
 * as one, that answers without end would otherwise grow the hook until it dies).
 */
async function readAnswer(body: Dispatcher.ResponseData['body'], max: number, what: string): Promise<string> {
  const parts: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    size += (chunk as Buffer).length
    if (size > max) {
      body.destroy()
      throw new DpxenError(
        'CONNECT_FAILED',
        `${what} is over ${Math.round(max / 1024 / 1024)} MiB (maxAnswerMiB): raise maxAnswerMiB for a very large pool, or check that url is a XenServer / XCP-ng host`,
      )
    }
    parts.push(chunk as Buffer)
  }
  return Buffer.concat(parts).toString('utf8')
}

export function xmlRpcTransport(dispatcher: Dispatcher, maxAnswerBytes = MAX_ANSWER_BYTES): XapiTransport {
  return async (url, method, params, { signal }) => {
    let res: Dispatcher.ResponseData
    try {
      res = await request(dispatcher, url, {
        method: 'POST',
        body: encodeCall(method, params),
        headers: { 'content-type': 'text/xml' },
        ...(signal ? { signal } : {}),
      })
    } catch (error) {
      if (signal?.aborted) throw new DpxenError('ABORTED', 'interrupted', { cause: error })
      throw connectionError(url, error)
    }
    if (res.statusCode !== 200) {
      await res.body.dump().catch(() => undefined)
      throw new DpxenError(
        'CONNECT_FAILED',
        `${url} answered HTTP ${res.statusCode} to ${method} (is this a XenServer / XCP-ng host?)`,
      )
    }
    let text: string
    try {
      text = await readAnswer(res.body, maxAnswerBytes, `the answer of ${url} to ${method}`)
    } catch (error) {
      if (error instanceof DpxenError) throw error
      if (signal?.aborted) throw new DpxenError('ABORTED', 'interrupted', { cause: error })
      throw connectionError(url, error)
    }
    try {
      return await decodeResponse(text)
    } catch (error) {
      throw new DpxenError(
        'CONNECT_FAILED',
        `${url} sent a reply that is not XML-RPC (is this a XenServer / XCP-ng host?)`,
        { cause: error },
      )
    }
  }
}

export interface SessionOptions {
  url: string
  username: string
  password: string
  transport: XapiTransport
  log: Logger
  signal?: AbortSignal
  /**
   * The run's abort signal (SIGTERM). It ends the first login at once (nothing has changed
   * yet). Any other call still gets its answer, since the cleanup needs the session, but only
   * within CALL_GRACE_MS of the abort (or of its own start, after it): a host that stopped
   * answering cannot hold the hook.
   */
  runSignal?: AbortSignal
}

/** How long a call may take once the run was interrupted. */
export const CALL_GRACE_MS = 3000

/** A signal that fires CALL_GRACE_MS after `run` aborts (or after now, if it has). */
function graceAfter(run: AbortSignal): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController()
  let timer: NodeJS.Timeout | undefined
  const expire = (): void => {
    timer = setTimeout(
      () => controller.abort(new DpxenError('ABORTED', 'the host did not answer after the interruption')),
      CALL_GRACE_MS,
    )
  }
  if (run.aborted) expire()
  else run.addEventListener('abort', expire, { once: true })
  return {
    signal: controller.signal,
    dispose() {
      run.removeEventListener('abort', expire)
      clearTimeout(timer)
    },
  }
}

function unwrap(answer: unknown, method: string): unknown {
  const envelope = answer as { Status?: string; Value?: unknown; ErrorDescription?: unknown }
  if (envelope?.Status === 'Success') return envelope.Value
  if (envelope?.Status === 'Failure' && Array.isArray(envelope.ErrorDescription)) {
    throw new XapiError(envelope.ErrorDescription.map(String), method)
  }
  throw new DpxenError('CONNECT_FAILED', `unexpected reply to ${method} (is this a XenServer / XCP-ng host?)`)
}

/** Where HOST_IS_SLAVE points: the master's address, on the same scheme and port unless it names one. */
export function masterUrl(current: string, address: string): string {
  const url = new URL(current)
  if (/^\[.*\]$|^[^:]+$/.test(address)) url.hostname = address
  else url.host = address
  return `${url.protocol}//${url.host}`
}

export class XapiSession {
  #url: string
  #ref = ''
  readonly #options: SessionOptions

  private constructor(options: SessionOptions) {
    this.#options = options
    this.#url = options.url
  }

  /** Logs in (following HOST_IS_SLAVE). Throws AUTH_FAILED or CONNECT_FAILED with a one-line reason. */
  static async open(options: SessionOptions): Promise<XapiSession> {
    const session = new XapiSession(options)
    await session.#login(options.runSignal)
    return session
  }

  /** The master's base URL (after any HOST_IS_SLAVE redirect). */
  get url(): string {
    return this.#url
  }

  get ref(): string {
    return this.#ref
  }

  async #login(signal?: AbortSignal): Promise<void> {
    const { username, password, log } = this.#options
    for (let hop = 0; ; hop++) {
      try {
        this.#ref = String(
          await this.#raw('session.login_with_password', [username, password, '2.21', ORIGINATOR], signal),
        )
        return
      } catch (error) {
        if (isXapiError(error, 'HOST_IS_SLAVE') && hop < MAX_REDIRECTS && error.params[0]) {
          const next = masterUrl(this.#url, error.params[0])
          log.debug(`${this.#url} is a pool member; the master is ${next}`)
          this.#url = next
          continue
        }
        if (hop > 0 && error instanceof DpxenError && error.code === 'CONNECT_FAILED') {
          // A member named as url: the master it named could not be reached or trusted.
          throw new DpxenError(
            'CONNECT_FAILED',
            `${new URL(this.#options.url).host} is a pool member, and its master ${new URL(this.#url).host} failed: ${error.message}; set url to the master`,
            { cause: error },
          )
        }
        if (isXapiError(error, 'SESSION_AUTHENTICATION_FAILED')) {
          throw new DpxenError(
            'AUTH_FAILED',
            `${this.#url} refused the password of user ${username} (check username and password)`,
            {
              cause: error,
            },
          )
        }
        throw error
      }
    }
  }

  async #raw(method: string, params: unknown[], callSignal?: AbortSignal): Promise<unknown> {
    const { transport, log } = this.#options
    crashPoint(method)
    const run = this.#options.runSignal
    const grace = !callSignal && run ? graceAfter(run) : undefined
    const signal = callSignal ?? grace?.signal ?? this.#options.signal
    const started = performance.now()
    // The two places secrets travel in a call: the login's password, and the session ref that
    // opens every other call.
    const shown =
      method === 'session.login_with_password'
        ? [params[0], '***', ...params.slice(2)]
        : params[0] === this.#ref && this.#ref
          ? ['***', ...params.slice(1)]
          : params
    try {
      const value = unwrap(await transport(this.#url, method, params, signal ? { signal } : {}), method)
      log.debug(
        `call ${method}(${JSON.stringify(shown)}) ok in ${(performance.now() - started).toFixed(1)} ms`,
      )
      return value
    } catch (error) {
      log.debug(
        `call ${method}(${JSON.stringify(shown)}) failed in ${(performance.now() - started).toFixed(1)} ms: ${String(error)}`,
      )
      throw error
    } finally {
      grace?.dispose()
    }
  }

  /** The login under way after SESSION_INVALID, shared by the calls that met it together. */
  #relogin: Promise<void> | undefined

  /**
   * Calls a method with this session; on SESSION_INVALID logs in again once and retries. Calls
   * made in parallel that all meet SESSION_INVALID share one new login (one session to log out).
   */
  async call<T = unknown>(method: string, ...args: unknown[]): Promise<T> {
    const ref = this.#ref
    try {
      return (await this.#raw(method, [ref, ...args])) as T
    } catch (error) {
      const moved = isXapiError(error, 'HOST_IS_SLAVE') && error.params[0] ? error.params[0] : undefined
      if (!moved && !isXapiError(error, 'SESSION_INVALID')) throw error
      if (this.#ref === ref) {
        this.#relogin ??= (async () => {
          if (moved) {
            // The master moved (HA, pool.designate_new_master): sessions do not survive that.
            const next = masterUrl(this.#url, moved)
            this.#options.log.info(
              `the pool's master is now ${new URL(next).host} (was ${new URL(this.#url).host})`,
            )
            this.#url = next
          } else this.#options.log.debug('session invalid: logging in again')
          try {
            await this.#login()
          } finally {
            this.#relogin = undefined
          }
        })()
      }
      await this.#relogin
      return (await this.#raw(method, [this.#ref, ...args])) as T
    }
  }

  /** Logs out; never throws (the session may already be gone). */
  async logout(): Promise<void> {
    if (!this.#ref) return
    try {
      await this.#options.transport(this.#url, 'session.logout', [this.#ref], {})
    } catch (error) {
      this.#options.log.debug(`logout failed: ${String(error)}`)
    }
    this.#ref = ''
  }
}
