// Progress lines: what each running VM is doing, printed every interval, so Data Protector
// (which aborts a script silent for 15 minutes) sees the script alive during long transfers.
import { performance } from 'node:perf_hooks'
import { formatBytes, formatRate, type Ms } from './format.js'
import type { Logger } from './log.js'

export interface Active {
  name: string
  status: string
  bytes: number
  since: number
}

/** Prints what each running VM is doing, every `interval`, so Data Protector sees the script alive. */
export function startTicker(log: Logger, active: Map<string, Active>, interval: Ms): () => void {
  const timer = setInterval(() => {
    if (active.size === 0) return log.info('dpxen: working')
    for (const vm of active.values()) {
      const elapsed = (performance.now() - vm.since) / 1000
      const detail = vm.bytes ? `, ${formatBytes(vm.bytes)} so far (${formatRate(vm.bytes, elapsed)})` : ''
      log.info(`dpxen: ${vm.name}: ${vm.status}${detail}`)
    }
  }, interval)
  timer.unref()
  return () => clearInterval(timer)
}

/**
 * Works through `items`, `concurrency` at a time (one by default), each as an entry the ticker
 * shows every `interval` while its work runs; none is begun once `signal` is aborted.
 * `work` reports through its entry (status, bytes) and handles its own failures: an error it
 * throws stops the loop (the ticker stops too) and reaches the caller.
 */
export async function eachTracked<T>(
  items: readonly T[],
  options: {
    log: Logger
    interval: Ms
    signal: AbortSignal
    concurrency?: number
    /** The name its lines give the item, and its first status. */
    name: (item: T) => string
    status?: string
  },
  work: (item: T, entry: Active) => Promise<void>,
): Promise<void> {
  const tracked = new Map<string, Active>()
  const stop = startTicker(options.log, tracked, options.interval)
  let next = 0
  let key = 0
  const worker = async (): Promise<void> => {
    while (next < items.length && !options.signal.aborted) {
      const item = items[next++]!
      const entry: Active = {
        name: options.name(item),
        status: options.status ?? 'starting',
        bytes: 0,
        since: performance.now(),
      }
      const id = String(key++)
      tracked.set(id, entry)
      try {
        await work(item, entry)
      } finally {
        tracked.delete(id)
      }
    }
  }
  try {
    await Promise.all(
      Array.from({ length: Math.max(1, Math.min(options.concurrency ?? 1, items.length)) }, worker),
    )
  } finally {
    stop()
  }
}
