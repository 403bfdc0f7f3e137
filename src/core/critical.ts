// Critical sections: steps that must not be cut in the middle even by a second SIGTERM (the
// VBD swap of an online restore). The journal makes any cut recoverable, but a swap finished
// or undone now is better than one the next run has to settle. Bounded: a second signal waits
// at most CRITICAL_WAIT_MS for the section to end (hook/main.ts).
export const CRITICAL_WAIT_MS = 30_000

let open: string | undefined
let depth = 0
const waiters: (() => void)[] = []

/** Runs `work` as a critical section named `what` (for the line a second signal prints). */
export async function critical<T>(what: string, work: () => Promise<T>): Promise<T> {
  depth++
  open ??= what
  try {
    return await work()
  } finally {
    if (--depth === 0) {
      open = undefined
      for (const wake of waiters.splice(0)) wake()
    }
  }
}

/** The critical section under way, if any. */
export function inCritical(): string | undefined {
  return open
}

/** Resolves when no critical section is under way. */
export function criticalDone(): Promise<void> {
  if (depth === 0) return Promise.resolve()
  return new Promise((resolve) => waiters.push(resolve))
}
