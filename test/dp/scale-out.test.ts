// Scale-out as Data Protector does it: two clients, each its own backup specification, staging
// folder and dpxen configuration, the pool's VMs split between them by tags, back up the
// three-host pool at the same time, twice (a full, then incrementals). Neither may sweep,
// settle or lock what the other made.
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { runBackupSession } from '../../simulator/dp/session.js'
import { Store } from '../../simulator/dp/store.js'
import { backupSpec } from '../helpers/dp.js'
import { tempDir, writeConfig } from '../helpers/hooks.js'
import { guestWrites, snapshots } from '../helpers/pool.js'
import { demoSim } from '../helpers/sim.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

const dist = fileURLToPath(new URL('../../dist/', import.meta.url))
const hook = (name: string, config: string): string =>
  `"${process.execPath}" "${join(dist, 'hooks', name)}" "${config}"`

const disk = (sr: string) => [{ sr, size: '4MiB', fill: 0.5 }]

describe('two Data Protector clients back up one pool together', () => {
  it('each its own VMs by tags, incremental on both: both sessions Completed, twice, each keeping its own bases', async () => {
    const { sim, xapi } = await demoSim({
      demo: false,
      seed: {
        srs: [
          { name: 'Local storage 2', type: 'ext', host: 2 },
          { name: 'Local storage 3', type: 'ext', host: 3, default: true },
          { name: 'Shared Storage', type: 'nfs' },
        ],
        vms: [
          { name: 'a-web', powerState: 'Running', tags: ['client-a'], disks: disk('Local storage 2') },
          { name: 'a-db', powerState: 'Running', tags: ['client-a'], disks: disk('Shared Storage') },
          { name: 'b-web', powerState: 'Running', tags: ['client-b'], disks: disk('Local storage 3') },
          { name: 'b-mail', powerState: 'Running', tags: ['client-b'], disks: disk('Shared Storage') },
        ],
      },
    })
    const dir = tempDir()
    const clients = ['a', 'b'].map((name) => {
      const staging = join(dir, `staging-${name}`)
      mkdirSync(staging)
      const config = writeConfig(
        dir,
        {
          url: sim.url,
          username: 'root',
          password: SIM_PASSWORD,
          backupDir: staging,
          mode: 'allOnline',
          includeTags: [`client-${name}`],
          incremental: true,
        },
        `dpxen-${name}.json`,
      )
      return { name, staging, config, store: new Store(join(dir, `store-${name}`)) }
    })
    const vms = await Promise.all(['a-web', 'a-db', 'b-web', 'b-mail'].map((n) => xapi.vmByName(n)))
    for (const round of ['full', 'incremental']) {
      if (round !== 'full') for (const vm of vms) await guestWrites(sim, xapi, vm, 'round-2', 0.25)
      const sessions = await Promise.all(
        clients.map((c) =>
          runBackupSession(
            backupSpec(c.staging, {
              name: `xen-${c.name}`,
              client: `dpclient-${c.name}`,
              preExec: hook('pre-exec.js', c.config),
              postExec: hook('post-exec.js', c.config),
            }),
            { store: c.store },
          ),
        ),
      )
      for (const [i, s] of sessions.entries()) {
        const text = s.messages.map((m) => m.text).join('\n')
        expect(s.status, text).toBe('Completed')
        const mine = clients[i]!.name
        for (const vm of mine === 'a' ? ['a-web', 'a-db'] : ['b-web', 'b-mail'])
          expect(text).toMatch(
            round === 'full'
              ? new RegExp(`${vm}: full run`)
              : new RegExp(`${vm}: incremental run 1 of chain`),
          )
        expect(text).not.toMatch(
          mine === 'a' ? /(b-web|b-mail): (done|full|incr)/ : /(a-web|a-db): (done|full|incr)/,
        )
      }
      // One base per VM, whoever made it; no other snapshot.
      const bases = (await snapshots(xapi)).map((s) => String(s.name_label))
      expect(bases).toHaveLength(4)
    }
  })
})
