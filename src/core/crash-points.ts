// Crash points, for the test that kills a hook at every step (test/reliability/crash-backup.test.ts, crash-restore.test.ts).
// Each XenAPI call and each file step that matters passes one. With DPXEN_TEST_CRASH_AT=N in
// the environment the process kills itself (SIGKILL: no cleanup, as a power cut) at the Nth;
// with DPXEN_TEST_CRASH_COUNT=FILE it writes how many it passed when it exits. Neither is set
// outside that test; a crash point costs a counter increment.
import { writeFileSync } from 'node:fs'

const target = Number(process.env.DPXEN_TEST_CRASH_AT ?? 0)
const countFile = process.env.DPXEN_TEST_CRASH_COUNT
let passed = 0

if (countFile) process.on('exit', () => writeFileSync(countFile, String(passed)))

/** Passes a crash point named `what` (for the test's report). */
export function crashPoint(what: string): void {
  passed++
  if (passed !== target) return
  writeFileSync(2, `dpxen: test crash at point ${passed}: ${what}\n`)
  process.kill(process.pid, 'SIGKILL')
}
