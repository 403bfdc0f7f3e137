// A crash at every step, restores: each hook is killed with SIGKILL (no cleanup at all, as a power cut or
// the OOM killer would) before each of its XenAPI calls and file steps in turn, then the next
// hook runs, and the pool and the staging folder must be as they should: no snapshot, no
// imported leftover, every VM in its power state with all its disks, no partial or orphaned
// file, no lock. The crash points come from src/core/crash-points.ts (DPXEN_TEST_CRASH_AT).
import { crashSuite, type Scenario } from '../helpers/crash.js'
import { loseVm } from '../helpers/pool.js'
import { GUEST_KEY } from '../../simulator/xapi/model/guest.js'

// The restores keep their files (keepRestoredFiles): each crash point runs the restore again.
const scenarios: Scenario[] = [
  {
    name: 'incremental restore (a chain)',
    values: { mode: 'online', vmName: ['Debian'], incremental: true, keepRestoredFiles: true },
    prepare: 'pre-exec',
    crash: 'restore-post-exec',
    next: 'restore-post-exec',
  },
  {
    // Each run finds the VM gone and makes it again from the chain's metadata and disks.
    name: 'incremental restore of a VM that is gone',
    values: {
      mode: 'online',
      vmName: ['Debian'],
      incremental: true,
      keepRestoredFiles: true,
      startAfterRestore: true,
    },
    prepare: 'pre-exec',
    crash: 'restore-post-exec',
    next: 'restore-post-exec',
    before: async (xapi) => {
      for (const vm of await xapi.call<string[]>('VM.get_by_name_label', 'Debian'))
        if (!(await xapi.call('VM.get_is_a_template', vm))) await loseVm(xapi, vm)
    },
  },
  {
    name: 'online restore',
    values: { mode: 'online', vmName: ['Debian'], keepRestoredFiles: true },
    prepare: 'pre-exec',
    crash: 'restore-post-exec',
    next: 'restore-post-exec',
  },
  {
    name: 'online restore, settled by dpxen recover',
    values: { mode: 'online', vmName: ['Debian'], keepRestoredFiles: true },
    prepare: 'pre-exec',
    crash: 'restore-post-exec',
    next: 'dpxen',
  },
  {
    name: 'offline restore',
    values: { mode: 'offline', vmName: ['Debian'], startAfterRestore: true, keepRestoredFiles: true },
    prepare: 'pre-exec',
    crash: 'restore-post-exec',
    next: 'restore-post-exec',
  },
  {
    // The copy is tagged from the moment the restore journal lets it go: recover removes it.
    name: 'health check of an offline backup, settled by dpxen recover',
    values: { mode: 'offline', vmName: ['vm2'], healthCheck: true, keepRestoredFiles: true },
    setup: async (xapi) => {
      const vm = await xapi.vmByName('vm2')
      await xapi.call('VM.remove_from_other_config', vm, GUEST_KEY)
      await xapi.call('VM.add_to_other_config', vm, GUEST_KEY, JSON.stringify({ bootSeconds: 0.1 }))
    },
    prepare: 'pre-exec',
    crash: 'restore-post-exec',
    next: 'dpxen',
  },
]

crashSuite('a crash at every step (restores)', scenarios)
