// XenAPI tasks: waiting for one to settle, and its outcome as an error. Making, cancelling and
// destroying them is host.ts's (Host.#underTask), in one place.
import { setTimeout as sleep } from 'node:timers/promises'
import { DpxenError, XapiError } from '../core/errors.js'
import type { XapiSession } from './session.js'

export interface TaskOutcome {
  status: 'success' | 'failure' | 'cancelled'
  result: string
  errorInfo: string[]
}

/** Polls the task until it is no longer pending. Throws ABORTED when the signal fires. */
export async function waitTask(
  session: XapiSession,
  task: string,
  signal?: AbortSignal,
): Promise<TaskOutcome> {
  let delay = 50
  for (;;) {
    if (signal?.aborted) throw new DpxenError('ABORTED', 'interrupted')
    const rec = await session.call<Record<string, unknown>>('task.get_record', task)
    const status = String(rec.status)
    if (status !== 'pending' && status !== 'cancelling') {
      return {
        status: status as TaskOutcome['status'],
        result: String(rec.result ?? ''),
        errorInfo: (rec.error_info as string[]) ?? [],
      }
    }
    await sleep(delay, undefined, signal ? { signal } : {}).catch(() => undefined)
    delay = Math.min(delay * 2, 1000)
  }
}

/** Throws the task's error as an XapiError when it did not succeed. */
export function assertTaskSucceeded(outcome: TaskOutcome, what: string): string {
  if (outcome.status === 'success') return outcome.result
  throw new XapiError(outcome.errorInfo.length ? outcome.errorInfo : ['TASK_CANCELLED'], what)
}
