// session, system, task and event.
import { setTimeout as sleep } from 'node:timers/promises'
import { recordToWire, type DbEvent } from '../../model/db.js'
import type { SimContext } from '../../model/context.js'
import { XapiFailure } from '../../model/errors.js'
import { masterOf } from '../../model/hosts.js'
import type { MethodTable } from '../dispatch.js'
import { SCHEMA } from '../../model/schema.js'
import { createTask, finishTask } from '../../model/tasks.js'
import { I4, type Wire } from '../../model/xmlrpc.js'

const TOKEN_WIDTH = 20

function formatToken(id: number): string {
  return `${String(id).padStart(TOKEN_WIDTH, '0')},${'0'.repeat(TOKEN_WIDTH)}`
}

function parseToken(token: string): number {
  if (token === '') return -1
  const match = /^(\d+),\d+$/.exec(token)
  if (!match) throw new XapiFailure('EVENT_FROM_TOKEN_PARSE_FAILURE', token)
  return Number(match[1])
}

/** Lower-case class names as events carry them, mapped back to the schema's spelling. */
const CLASS_BY_LOWER = new Map(Object.keys(SCHEMA).map((cls) => [cls.toLowerCase(), cls]))

function subscriptionMatcher(classes: string[]): (event: { cls: string; ref: string }) => boolean {
  const subs = classes.map((c) => {
    const [cls, ref] = c.split('/')
    return { cls: cls!.toLowerCase(), ref }
  })
  return (event) =>
    subs.some(
      (s) =>
        (s.cls === '*' || s.cls === event.cls.toLowerCase()) && (s.ref === undefined || s.ref === event.ref),
    )
}

function eventToWire(event: DbEvent): Wire {
  const out: Record<string, Wire> = {
    id: String(event.id),
    timestamp: '0.0',
    class: event.cls.toLowerCase(),
    operation: event.operation,
    ref: event.ref,
  }
  if (event.snapshot && event.operation !== 'del') out.snapshot = recordToWire(event.cls, event.snapshot)
  return out
}

/** Sessions: login (following HOST_IS_SLAVE), logout, and the method list. */
function registerSessions(table: MethodTable): void {
  table.set('session.login_with_password', {
    noSession: true,
    noAsync: true,
    params: [
      { name: 'uname', type: 'string' },
      { name: 'pwd', type: 'string' },
      { name: 'version', type: 'string', default: '1.1' },
      { name: 'originator', type: 'string', default: '' },
    ],
    async run({ sim }, [uname, pwd, , originator]) {
      if (uname !== sim.settings.user || pwd !== sim.settings.password) {
        await sleep(sim.settings.authFailureDelayMs, undefined, { signal: sim.closing }).catch(
          () => undefined,
        )
        throw new XapiFailure('SESSION_AUTHENTICATION_FAILED', String(uname), 'Authentication failure')
      }
      return sim.db.create('session', {
        this_host: masterOf(sim),
        last_active: new Date(),
        validation_time: new Date(),
        is_local_superuser: true,
        auth_user_name: String(uname),
        originator: String(originator),
      })
    },
  })
  table.set('session.logout', {
    noAsync: true,
    params: [],
    run({ sim, session }) {
      sim.db.destroy('session', session)
    },
  })
  table.set('system.listMethods', {
    noSession: true,
    noAsync: true,
    params: [],
    run: () => [...table.keys()].sort(),
  })
}

/** Tasks made, cancelled and destroyed by the client. */
function registerTasks(table: MethodTable): void {
  table.set('task.create', {
    noAsync: true,
    params: [
      { name: 'label', type: 'string' },
      { name: 'description', type: 'string' },
    ],
    run: ({ sim, session }, [label, description]) =>
      createTask(sim, session, String(label), String(description)),
  })
  table.set('task.cancel', {
    noAsync: true,
    params: [{ name: 'task', type: 'ref:task' }],
    run({ sim }, [task]) {
      const rec = sim.db.require('task', task)
      if (rec.status !== 'pending') throw new XapiFailure('OPERATION_NOT_ALLOWED', 'task is not pending')
      sim.db.update('task', String(task), { status: 'cancelling' })
      // A task nobody is working on (made with task.create) is cancelled at once.
      if (!(rec.other_config as Record<string, string>)['sim:worker']) {
        finishTask(sim, String(task), { error: new XapiFailure('TASK_CANCELLED', String(task)) })
      }
    },
  })
  table.set('task.destroy', {
    noAsync: true,
    params: [{ name: 'self', type: 'ref:task' }],
    run({ sim }, [task]) {
      const rec = sim.db.require('task', task)
      for (const [ref, session] of sim.db.all('session')) {
        if ((session.tasks as string[]).includes(String(task)))
          sim.db.link('session', ref, 'tasks', String(task), false)
      }
      if (rec.status === 'pending' || rec.status === 'cancelling') {
        // xapi only marks a running task; its GC removes it once it completes (finishTask).
        sim.db.update('task', String(task), { current_operations: { [String(task)]: 'destroy' } })
      } else {
        sim.db.destroy('task', String(task))
      }
    },
  })
}

/** Events: the current id, an injected one, and event.from's wait. */
function registerEvents(table: MethodTable): void {
  table.set('event.get_current_id', {
    noAsync: true,
    params: [],
    run: ({ sim }) => String(sim.db.lastEventId),
  })
  table.set('event.inject', {
    noAsync: true,
    params: [
      { name: 'class', type: 'string' },
      { name: 'ref', type: 'string' },
    ],
    run({ sim }, [clsName, ref]) {
      const cls = CLASS_BY_LOWER.get(String(clsName).toLowerCase())
      if (!cls) throw new XapiFailure('HANDLE_INVALID', String(clsName), String(ref))
      const rec = sim.db.require(cls, ref)
      const before = sim.db.lastEventId
      sim.db.update(cls, String(ref), { uuid: rec.uuid })
      return formatToken(before)
    },
  })
  table.set('event.from', {
    noAsync: true,
    params: [
      { name: 'classes', type: 'strings' },
      { name: 'token', type: 'string' },
      { name: 'timeout', type: 'float' },
    ],
    async run({ sim }, [classes, token, timeout]) {
      return eventsFrom(
        sim,
        subscriptionMatcher(classes as string[]),
        parseToken(String(token)),
        Number(timeout),
      )
    },
  })
}

/**
 * event.from: the events after `from` that match, waiting up to `timeout` seconds for one; an
 * empty token (from < 0) returns every current object as an "add".
 */
async function eventsFrom(
  sim: SimContext,
  matches: ReturnType<typeof subscriptionMatcher>,
  from: number,
  timeout: number,
): Promise<Wire> {
  if (from < 0) {
    const events: Wire[] = []
    for (const cls of Object.keys(SCHEMA)) {
      for (const [ref, rec] of sim.db.all(cls)) {
        if (matches({ cls, ref }))
          events.push(eventToWire({ id: 0, cls, operation: 'add', ref, snapshot: rec }))
      }
    }
    return { events, valid_ref_counts: {}, token: formatToken(sim.db.lastEventId) }
  }
  const deadline = Date.now() + Math.max(0, timeout) * 1000
  for (;;) {
    const { events, lost } = sim.db.eventsSince(from)
    if (lost) throw new XapiFailure('EVENTS_LOST')
    const wanted = events.filter((e) => matches(e))
    const now = Date.now()
    if (wanted.length > 0 || now >= deadline || sim.closing.aborted) {
      const counts: Record<string, Wire> = {}
      for (const e of wanted) counts[e.cls.toLowerCase()] = new I4(sim.db.count(e.cls))
      return {
        events: wanted.map(eventToWire),
        valid_ref_counts: counts,
        token: formatToken(events.at(-1)?.id ?? from),
      }
    }
    await sim.db.waitForChange(deadline - now, sim.closing)
  }
}

export function registerCore(table: MethodTable): void {
  registerSessions(table)
  registerTasks(table)
  registerEvents(table)
}
