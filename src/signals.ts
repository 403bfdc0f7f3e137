// Node 20's AbortSignal.any() holds the combined signal weakly: when nothing else refers to it,
// it can be collected and never fire. This combines signals with ordinary listeners instead.

/** A signal aborted when any of `signals` is. */
export function anySignal(...signals: AbortSignal[]): AbortSignal {
  const controller = new AbortController()
  for (const signal of signals) {
    if (signal.aborted) {
      controller.abort(signal.reason)
      break
    }
    signal.addEventListener('abort', () => controller.abort(signal.reason), { once: true })
  }
  return controller.signal
}
