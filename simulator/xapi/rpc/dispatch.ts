// The XenAPI method table and dispatcher: parameter counts and types checked as xapi's
// generated server does, sessions checked, `Class_method` and `Async.Class.method` accepted.
import type { SimContext } from '../model/context.js'
import { XapiFailure, toFailure } from '../model/errors.js'
import { NULL_REF } from '../model/schema.js'
import { createTask, finishTask } from '../model/tasks.js'
import { printValue, type Wire } from '../model/xmlrpc.js'

/** `ref:Class`, `ref?:Class` (null ref allowed), or a plain type. */
export type ParamType =
  | `ref:${string}`
  | `ref?:${string}`
  | 'string'
  | 'bool'
  | 'int'
  | 'float'
  | 'record'
  | 'strings'
  | 'map'
  | 'any'

export interface ParamSpec {
  name: string
  type: ParamType
  /** Present when the parameter may be omitted (xapi fills the default). */
  default?: unknown
}

export interface CallContext {
  sim: SimContext
  session: string
  method: string
  /** The task an Async call runs as. */
  task?: string
}

export interface MethodDef {
  params: ParamSpec[]
  /** Methods like session.login_with_password take no session. */
  noSession?: boolean
  /** Whether an Async twin exists (field accessors and session/task calls have none). */
  noAsync?: boolean
  run(call: CallContext, args: unknown[]): Promise<Wire | void> | Wire | void
}

export type MethodTable = Map<string, MethodDef>

function checkParam(sim: SimContext, spec: ParamSpec, value: unknown): unknown {
  const bad = (): never => {
    throw new XapiFailure('FIELD_TYPE_ERROR', spec.name)
  }
  if (spec.type.startsWith('ref')) {
    if (typeof value !== 'string') bad()
    const cls = spec.type.slice(spec.type.indexOf(':') + 1)
    if (spec.type.startsWith('ref?') && value === NULL_REF) return value
    sim.db.require(cls, value)
    return value
  }
  switch (spec.type) {
    case 'string':
      return typeof value === 'string' ? value : bad()
    case 'bool':
      if (typeof value === 'boolean') return value
      if (value === 'true' || value === 'false') return value === 'true'
      return bad()
    case 'int':
    case 'float': {
      const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value
      return typeof n === 'number' && Number.isFinite(n) ? n : bad()
    }
    case 'record':
    case 'map':
      return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : bad()
    case 'strings':
      return Array.isArray(value) && value.every((v) => typeof v === 'string') ? value : bad()
    case 'any':
      return value
  }
  return bad()
}

/** Checks the session argument as xapi's session_check does. */
export function checkSession(sim: SimContext, session: unknown): string {
  if (
    typeof session === 'string' &&
    sim.db.has('session', session) &&
    sim.faults.take('session-invalid-once')
  ) {
    // As if the session had expired: it is gone, and the client must log in again.
    sim.db.destroy('session', session)
  }
  if (typeof session !== 'string' || !sim.db.has('session', session)) {
    throw new XapiFailure('SESSION_INVALID', String(session))
  }
  sim.db.update('session', session, { last_active: new Date() })
  return session
}

/** Runs one call and returns its Value, or throws XapiFailure. */
export async function dispatch(
  sim: SimContext,
  table: MethodTable,
  wireName: string,
  params: unknown[],
): Promise<Wire> {
  let name = wireName
  const isAsync = name.startsWith('Async.')
  if (isAsync) name = name.slice('Async.'.length)
  let def = table.get(name)
  if (!def && !name.includes('.')) {
    // xapi also accepts Class_method for Class.method.
    const underscore = name.indexOf('_')
    if (underscore > 0) {
      name = `${name.slice(0, underscore)}.${name.slice(underscore + 1)}`
      def = table.get(name)
    }
  }
  if (!def || (isAsync && def.noAsync)) throw new XapiFailure('MESSAGE_METHOD_UNKNOWN', wireName)

  const given = def.noSession ? params : params.slice(1)
  const required = def.params.filter((p) => !('default' in p)).length
  if (
    (!def.noSession && params.length === 0) ||
    given.length < required ||
    given.length > def.params.length
  ) {
    throw new XapiFailure(
      'MESSAGE_PARAMETER_COUNT_MISMATCH',
      wireName,
      String(required),
      String(Math.max(0, given.length)),
    )
  }
  if (sim.faults.get('rpc-hang') && name !== 'session.login_with_password' && name !== 'session.logout')
    return new Promise<Wire>(() => undefined)
  const session = def.noSession ? '' : checkSession(sim, params[0])
  const args = def.params.map((spec, i) =>
    i < given.length ? checkParam(sim, spec, given[i]) : spec.default,
  )
  const call: CallContext = { sim, session, method: name }
  if (sim.faults.callFails(name)) throw new XapiFailure('INTERNAL_ERROR', `simulated failure of ${name}`)

  if (!isAsync) return (await def.run(call, args)) ?? ''

  const task = createTask(sim, session, `Async.${name}`, '')
  setImmediate(() => {
    Promise.resolve()
      .then(() => def.run({ ...call, task }, args))
      .then(
        (value) =>
          finishTask(sim, task, { result: value === undefined || value === '' ? '' : printValue(value) }),
        (error: unknown) => finishTask(sim, task, { error: toFailure(error) }),
      )
  })
  return task
}
