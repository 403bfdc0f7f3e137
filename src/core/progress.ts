// Progress lines: what each running VM is doing, printed every interval, so Data Protector
// (which aborts a script silent for 15 minutes) sees the script alive during long transfers.
import { performance } from 'node:perf_hooks'
import { formatBytes, formatRate } from './format.js'
import type { Logger } from './log.js'

export interface Active {
  name: string
  status: string
  bytes: number
  since: number
}

/** Prints what each running VM is doing, every `seconds`, so Data Protector sees the script alive. */
export function startTicker(log: Logger, active: Map<string, Active>, seconds: number): () => void {
  const timer = setInterval(() => {
    if (active.size === 0) return log.info('dpxen: working')
    for (const vm of active.values()) {
      const elapsed = (performance.now() - vm.since) / 1000
      const detail = vm.bytes ? `, ${formatBytes(vm.bytes)} so far (${formatRate(vm.bytes, elapsed)})` : ''
      log.info(`dpxen: ${vm.name}: ${vm.status}${detail}`)
    }
  }, seconds * 1000)
  timer.unref()
  return () => clearInterval(timer)
}
