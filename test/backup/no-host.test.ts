// A VM whose storage no host can reach (its host is down, the VM on that host's local SR):
// xapi's /export handler fails the caller's task with NO_HOSTS_AVAILABLE and closes without a
// byte (export.ml, when choose_host finds no host that sees the VM's SRs). The line must give
// that reason, read from the task, not "closed the connection without an answer".
import { describe, expect, it } from 'vitest'
import { runPostExec } from '../../src/backup/post.js'
import { runPreExec } from '../../src/backup/run.js'
import { run } from '../helpers/hooks.js'
import { records } from '../helpers/pool.js'
import { backupWorld } from '../helpers/world.js'

describe('no host can reach the VM storage', () => {
  for (const mode of ['online', 'offline'] as const) {
    it(`${mode}: the line gives xapi's reason from the task, the pool is left as it was`, async () => {
      const w = await backupWorld({ mode, vmName: ['Debian'] })
      w.sim.faults.add('export-no-host')
      const pre = await run(runPreExec, [w.config])
      const line = pre.lines.find((l) => l.startsWith('dpxen: Debian: FAILED: '))
      expect(line, pre.text).toMatch(
        /no host of the pool can reach the storage of Debian \(NO_HOSTS_AVAILABLE\): the host holding its local SR may be down or disabled/,
      )
      expect(pre.text).not.toMatch(/without an answer/)
      expect((await run(runPostExec, [w.config])).code).toBe(5)
      const vms = Object.values(await records(w.xapi, 'VM'))
      expect(vms.filter((v) => v.is_a_snapshot)).toEqual([])
      expect(vms.find((v) => v.name_label === 'Debian')?.power_state).toBe('Running')
      expect(w.sim.context.db.all('task').filter(([, t]) => t.status === 'pending')).toEqual([])
    })
  }
})
