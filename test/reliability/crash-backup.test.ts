// A crash at every step, backups: each hook is killed with SIGKILL (no cleanup at all, as a power cut or
// the OOM killer would) before each of its XenAPI calls and file steps in turn, then the next
// hook runs, and the pool and the staging folder must be as they should: no snapshot, no
// imported leftover, every VM in its power state with all its disks, no partial or orphaned
// file, no lock. The crash points come from src/core/crash-points.ts (DPXEN_TEST_CRASH_AT).
import { crashSuite, type Scenario } from '../helpers/crash.js'

const scenarios: Scenario[] = [
  {
    name: 'online backup',
    values: { mode: 'online', vmName: ['Debian', 'vm2'] },
    crash: 'pre-exec',
    next: 'post-exec',
  },
  {
    name: 'offline backup',
    values: { mode: 'offline', vmName: ['Debian', 'vm2'] },
    crash: 'pre-exec',
    next: 'post-exec',
  },
  {
    name: 'incremental backup (a delta run)',
    values: { mode: 'online', vmName: ['Debian', 'vm2'], incremental: true },
    prepare: 'pre-exec',
    settle: 'post-exec',
    crash: 'pre-exec',
    next: 'post-exec',
  },
  {
    name: 'incremental backup with changed block tracking (a delta run over NBD, its base kept without data)',
    values: { mode: 'online', vmName: ['Debian'], incremental: true, cbt: true },
    setup: async (xapi) => {
      await xapi.call('network.add_purpose', (await xapi.call<string[]>('network.get_all'))[0], 'nbd')
    },
    prepare: 'pre-exec',
    settle: 'post-exec',
    crash: 'pre-exec',
    next: 'post-exec',
  },
  {
    name: "incremental post-exec (a delta run's base settled, the old one removed)",
    values: { mode: 'online', vmName: ['Debian'], incremental: true },
    prepare: 'pre-exec',
    settle: 'post-exec',
    each: 'pre-exec',
    crash: 'post-exec',
    next: ['pre-exec', 'post-exec'],
  },
]

crashSuite('a crash at every step (backups)', scenarios)
