// What every xapi HTTP handler shares (xapi_http.ml): authentication by session_id (query or
// cookie) or HTTP Basic, running as the task named by task_id, and xapi's error responses.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { SimContext } from '../model/context.js'
import { XapiFailure } from '../model/errors.js'
import { canServe, chooseHost, redirectUrl } from '../model/hosts.js'
import { createTask, finishTask } from '../model/tasks.js'

export interface HttpCall {
  sim: SimContext
  req: IncomingMessage
  res: ServerResponse
  url: URL
  /** The host that got the request, and the port the pool's hosts listen on. */
  host: string
  port: number
}

export interface Authed {
  session: string
  /** A session made from Basic credentials, logged out when the handler ends. */
  temporary: boolean
  task: string
  /** Whether the caller named the task (task_id); else the handler made it. */
  given: boolean
}

function cookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [key, ...value] = part.trim().split('=')
    if (key === name) return value.join('=')
  }
  return undefined
}

export function param(call: HttpCall, name: string): string | undefined {
  return call.url.searchParams.get(name) ?? cookie(call.req, name)
}

/** Authenticates the request and picks its task; answers 401 itself and returns undefined on failure. */
export function authenticate(call: HttpCall, label: string): Authed | undefined {
  const { sim, req, res } = call
  let session = param(call, 'session_id')
  let temporary = false
  if (!session || !sim.db.has('session', session)) {
    session = undefined
    const basic = /^Basic\s+(.+)$/i.exec(req.headers.authorization ?? '')
    if (basic) {
      const [user, ...rest] = Buffer.from(basic[1]!, 'base64').toString('utf8').split(':')
      if (user === sim.settings.user && rest.join(':') === sim.settings.password) {
        session = sim.db.create('session', {
          this_host: call.host,
          last_active: new Date(),
          auth_user_name: user,
          originator: 'http-basic',
        })
        temporary = true
      }
    }
  }
  if (!session) {
    res.writeHead(401, {
      'WWW-Authenticate': 'Basic realm="xapi"',
      'Content-Type': 'text/html',
      Connection: 'close',
    })
    res.end('<html><body><h1>HTTP 401 unauthorised</h1>Authorisation failed.</body></html>')
    return undefined
  }
  const given = param(call, 'task_id')
  const task = given && sim.db.has('task', given) ? given : createTask(sim, session, label, '')
  sim.db.update('task', task, {
    other_config: { ...(sim.db.require('task', task).other_config as object), 'sim:worker': 'http' },
  })
  return { session, temporary, task, given: task === given }
}

/** What a handler does when no host sees the SRs it needs (each handler differs in xapi). */
export type NoHost = 'fail-task-and-close' | 'fail-task-400' | 'answer-500'

/**
 * xapi's handlers serve a request only on a live host that sees the SRs it needs
 * (check_vm_host_SRs, check_sr_availability); otherwise they answer 302 to a host that does,
 * from the request head alone: the body unread, the caller's task left pending for the host
 * that serves it (importexport.ml return_302_redirect; export.ml, import.ml, import_raw_vdi.ml,
 * export_raw_vdi.ml). When no host sees them, choose_host raises NO_HOSTS_AVAILABLE and each
 * handler does as `noHost` says. Returns whether it answered.
 */
export function redirected(call: HttpCall, auth: Authed, srs: string[], noHost: NoHost): boolean {
  const { sim, res } = call
  if (canServe(sim, call.host, srs)) return false
  let target: string
  try {
    target = chooseHost(sim, srs)
  } catch (error) {
    const failure = error instanceof XapiFailure ? error : new XapiFailure('INTERNAL_ERROR', String(error))
    if (noHost === 'answer-500') {
      // The exception reaches the HTTP server: a 500, the caller's task untouched.
      if (!auth.given) sim.db.destroy('task', auth.task)
      errorPage(call, 500, failure)
    } else if (noHost === 'fail-task-400') {
      finish(call, auth, { error: failure })
      errorPage(call, 400, failure)
    } else {
      finish(call, auth, { error: failure })
      call.req.socket.end()
    }
    return true
  }
  // The check ran in a task of its own; the caller's stays pending.
  if (!auth.given) sim.db.destroy('task', auth.task)
  if (auth.temporary) sim.db.destroy('session', auth.session)
  res.writeHead(302, {
    Location: redirectUrl(sim, target, call.url, call.port),
    Connection: 'close',
    'Content-Length': '0',
  })
  res.end()
  // Head only: the connection closes with the body unread.
  res.once('finish', () => call.req.socket.destroySoon())
  return true
}

/** Ends a handler: completes the task and logs out a temporary session. */
export function finish(call: HttpCall, auth: Authed, outcome: { result?: string; error?: unknown }): void {
  const error = outcome.error === undefined ? undefined : asFailure(outcome.error)
  finishTask(call.sim, auth.task, error ? { error } : { result: outcome.result ?? '' })
  if (auth.temporary) call.sim.db.destroy('session', auth.session)
}

/** Any error as xapi reports it: its own failure, or INTERNAL_ERROR with the message. */
export function asFailure(error: unknown): XapiFailure {
  if (error instanceof XapiFailure) return error
  return new XapiFailure('INTERNAL_ERROR', error instanceof Error ? error.message : String(error))
}

/** xapi's answer to a failure before any body was sent: an HTML error page, the task failed. */
export function failBeforeBody(call: HttpCall, auth: Authed, status: number, error: XapiFailure): void {
  finish(call, auth, { error })
  errorPage(call, status, error)
}

function errorPage(call: HttpCall, status: number, error: XapiFailure): void {
  const title =
    status === 403
      ? 'forbidden'
      : status === 404
        ? 'not found'
        : status === 400
          ? 'bad request'
          : 'internal error'
  // xapi's error pages carry their length (http_svr.ml): never a chunked body.
  const page = `<html><body><h1>HTTP ${status} ${title}</h1>An error occurred: ${error.description.join(' ')}</body></html>`
  call.res.writeHead(status, {
    'Content-Type': 'text/html',
    Connection: 'close',
    'Content-Length': String(Buffer.byteLength(page)),
  })
  call.res.end(page)
}

/** The status of the head a handler wrote itself on a connection (for the host's request log). */
export const rawStatus = new WeakMap<Socket, number>()

/** Writes a raw response head straight to the socket, as xapi does (HTTP/1.0, no length). */
export function writeRawHead(socket: Socket, statusLine: string, headers: Record<string, string>): void {
  rawStatus.set(socket, Number(statusLine.split(' ')[1]))
  // From here the handler owns the socket; a client that goes away must not crash the server.
  socket.on('error', () => undefined)
  let head = `${statusLine}\r\n`
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`
  socket.write(`${head}\r\n`)
}

/** Aborts `controller` when the simulator closes too; returns the function that stops that. */
export function abortOnClose(sim: SimContext, controller: AbortController): () => void {
  const abort = (): void => controller.abort(sim.closing.reason)
  if (sim.closing.aborted) abort()
  else sim.closing.addEventListener('abort', abort, { once: true })
  return () => sim.closing.removeEventListener('abort', abort)
}

/** Looks up an object by ref or uuid, as the HTTP handlers accept either. */
export function lookup(sim: SimContext, cls: string, value: string | undefined): string {
  if (value && sim.db.has(cls, value)) return value
  const byUuid = value ? sim.db.refByUuid(cls, value) : undefined
  if (byUuid) return byUuid
  if (value?.startsWith('OpaqueRef:')) throw new XapiFailure('HANDLE_INVALID', cls, value)
  throw new XapiFailure('UUID_INVALID', cls, value ?? '')
}

export function serverHeader(sim: SimContext): string {
  return `xapi/${sim.settings.xapiMajor}.${sim.settings.xapiMinor}`
}
