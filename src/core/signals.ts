// Node 20's AbortSignal.any() holds the combined signal weakly: when nothing else refers to it,
// it can be collected and never fire. This combines signals with ordinary listeners instead,
// and removes them again (dispose), so a long-lived signal does not collect listeners.

import { setMaxListeners } from 'node:events'
import { DpxenError } from './errors.js'

/** Listeners one VM's work may hold on the run's signal at once (a call, a transfer, a wait). */
const LISTENERS_PER_TASK = 8

/**
 * Lets `signal` hold the listeners of `tasks` concurrent VMs without Node's
 * MaxListenersExceededWarning (its limit is 10: concurrency 11 printed it into the session).
 * Still bounded, so a real leak is still told.
 */
export function allowListeners(signal: AbortSignal, tasks: number): void {
  setMaxListeners(Math.max(10, 10 + tasks * LISTENERS_PER_TASK), signal)
}

export interface Combined {
  signal: AbortSignal
  /** Removes the listeners from the source signals; call when the operation is over. */
  dispose(): void
}

/** A signal aborted when any of `signals` is. */
export function anySignal(...signals: AbortSignal[]): Combined {
  const controller = new AbortController()
  const listeners: [AbortSignal, () => void][] = []
  const dispose = (): void => {
    for (const [signal, listener] of listeners.splice(0)) signal.removeEventListener('abort', listener)
  }
  for (const signal of signals) {
    if (signal.aborted) {
      controller.abort(signal.reason)
      break
    }
    const listener = (): void => {
      dispose()
      controller.abort(signal.reason)
    }
    signal.addEventListener('abort', listener, { once: true })
    listeners.push([signal, listener])
  }
  if (controller.signal.aborted) dispose()
  return { signal: controller.signal, dispose }
}

/** Throws ABORTED once the run was asked to stop: no new side effect starts after that. */
export function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw new DpxenError('ABORTED', 'interrupted')
}
