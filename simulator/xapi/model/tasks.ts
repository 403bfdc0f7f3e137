// Tasks: created by Async calls and HTTP handlers (or by the client with task.create), completed
// with an XML-RPC fragment as result or an error_info list, as xapi's TaskHelper does.
import type { SimContext } from './context.js'
import type { XapiFailure } from './errors.js'
import { masterOf } from './hosts.js'

export function createTask(sim: SimContext, session: string, label: string, description: string): string {
  const task = sim.db.create('task', {
    name_label: label,
    name_description: description,
    allowed_operations: ['cancel'],
    created: new Date(),
    status: 'pending',
    resident_on: masterOf(sim),
    type: '<none/>',
  })
  if (session) sim.db.link('session', session, 'tasks', task, true)
  return task
}

/** Marks a pending task done. A task that is already complete (or gone) is left alone. */
export function finishTask(
  sim: SimContext,
  task: string,
  outcome: { result?: string; error?: XapiFailure },
): void {
  const rec = sim.db.get('task', task)
  if (!rec || (rec.status !== 'pending' && rec.status !== 'cancelling')) return
  const cancelled = outcome.error?.code === 'TASK_CANCELLED'
  sim.db.update('task', task, {
    status: outcome.error ? (cancelled ? 'cancelled' : 'failure') : 'success',
    progress: 1,
    finished: new Date(),
    allowed_operations: [],
    result: outcome.result ?? '',
    error_info: outcome.error ? outcome.error.description : [],
  })
  // Destroyed while it ran (task.destroy marks it): xapi's database GC removes it once it has
  // completed (db_gc_util.ml timeout_tasks); the simulator does at once.
  if (Object.values((rec.current_operations as Record<string, string>) ?? {}).includes('destroy'))
    sim.db.destroy('task', task)
}

export function setProgress(sim: SimContext, task: string, progress: number): void {
  if (sim.db.get('task', task)?.status === 'pending') sim.db.update('task', task, { progress })
}

/**
 * Calls `onCancel` soon after a client asks (task.cancel) for the task to be cancelled, as
 * xapi's transfers check for cancellation while they stream. Returns the stop function.
 */
export function watchCancel(sim: SimContext, task: string, onCancel: () => void): () => void {
  const timer = setInterval(() => {
    if (isCancelling(sim, task)) {
      clearInterval(timer)
      onCancel()
    }
  }, 100)
  timer.unref()
  return () => clearInterval(timer)
}

/** Whether a client asked for the task to be cancelled. */
export function isCancelling(sim: SimContext, task: string): boolean {
  return sim.db.get('task', task)?.status === 'cancelling'
}
