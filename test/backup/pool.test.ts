// A pool of three hosts, each with its own certificate: Debian's first disk is on the local SR
// of the third host, legacy-win's on the second's (the demo seed). xapi's handlers on the
// master answer 302 to the member that holds the storage, from the request head alone; dpxen
// must follow every one of them, uploads included, without sending the body to the master.
import { copyFileSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runPostExec } from '../../src/backup/post.js'
import { runPreExec } from '../../src/backup/run.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import type { HttpLogEntry, XapiSim } from '../../simulator/xapi/server.js'
import { run, tempDir } from '../helpers/hooks.js'
import { damage, diskHashes, guestWrites, snapshots } from '../helpers/pool.js'
import { TestClient } from '../helpers/rpc.js'
import { makeCert } from '../helpers/tls.js'
import { world } from '../helpers/world.js'

/** The requests for `path` host k saw. */
const seen = (sim: XapiSim, k: number, path: string): HttpLogEntry[] =>
  sim.httpLog(k).filter((e) => e.path === path)

/** The master answered 302 to some, each with nothing but the request head received. */
function redirectedUnread(sim: XapiSim, path: string): void {
  const redirected = seen(sim, 1, path).filter((e) => e.status === 302)
  expect(redirected.length, `${path} redirected by the master`).toBeGreaterThan(0)
  for (const entry of redirected) expect(entry.bytesReceived).toBeLessThan(2048)
}

describe('a pool of three hosts: transfers go to the host that holds the storage', () => {
  it('offline backup and restore: /export and /import redirected to the members, the body sent once, to them', async () => {
    const w = await world({ mode: 'offline', vmName: ['Debian', 'legacy-win'], sr: 'Local storage' })
    const vm = await w.xapi.vmByName('Debian')
    const hashes = await diskHashes(w.sim.url, w.xapi, vm)
    const pre = await run(runPreExec, [w.config])
    expect(pre.text).toMatch(/Debian: done/)
    expect(pre.text).toMatch(/legacy-win: done/)
    redirectedUnread(w.sim, '/export')
    expect(seen(w.sim, 3, '/export').map((e) => e.status)).toEqual([200])
    expect(seen(w.sim, 2, '/export').map((e) => e.status)).toEqual([200])
    const file = readdirSync(w.backupDir).find((f) => f.endsWith('_Debian.xva'))!
    const size = statSync(join(w.backupDir, file)).size
    await w.xapi.call('VM.hard_shutdown', vm)
    await damage(w.sim.url, w.xapi, vm)
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    redirectedUnread(w.sim, '/import')
    // The member that holds "Local storage" got the whole file.
    const imports = seen(w.sim, 3, '/import')
    expect(imports.map((e) => e.status)).toContain(200)
    expect(Math.max(...imports.map((e) => e.bytesReceived))).toBeGreaterThan(size)
    const again = await w.xapi.vmByName('Debian')
    expect(await diskHashes(w.sim.url, w.xapi, again)).toEqual(hashes)
    expect(w.sim.context.db.all('task').filter(([, t]) => t.status === 'pending')).toEqual([])
  })

  it('incremental backup and chain restore: /export_raw_vdi and /import_raw_vdi redirected too', async () => {
    const w = await world({ mode: 'online', vmName: ['Debian'], incremental: true })
    mkdirSync(w.backupDir)
    const kept = tempDir()
    const vm = await w.xapi.vmByName('Debian')
    for (const seed of ['full', 'one']) {
      if (seed !== 'full') await guestWrites(w.sim, w.xapi, vm, seed, 0.25)
      const pre = await run(runPreExec, [w.config])
      expect(pre.code, pre.text).toBe(0)
      for (const f of readdirSync(w.backupDir).filter((n) => !n.startsWith('.')))
        copyFileSync(join(w.backupDir, f), join(kept, f))
      expect((await run(runPostExec, [w.config])).code).toBe(0)
    }
    redirectedUnread(w.sim, '/export_raw_vdi')
    const now = await diskHashes(w.sim.url, w.xapi, vm)
    await guestWrites(w.sim, w.xapi, vm, 'damage', 1)
    for (const f of readdirSync(kept)) copyFileSync(join(kept, f), join(w.backupDir, f))
    const restore = await run(runRestorePostExec, [w.config])
    expect(restore.code, restore.text).toBe(0)
    redirectedUnread(w.sim, '/import_raw_vdi')
    expect(seen(w.sim, 3, '/import_raw_vdi').every((e) => e.status === 200)).toBe(true)
    expect(await diskHashes(w.sim.url, w.xapi, vm)).toEqual(now)
    expect((await snapshots(w.xapi)).length).toBe(1) // the base, kept for the next run
  })
})

describe('a pool of three hosts: trust per host', () => {
  it("a member whose certificate is not the pool's record of it is refused, named, and nothing is sent to it", async () => {
    const w = await world({ mode: 'online', vmName: ['Debian', 'vm2'] })
    w.sim.renewCertificate(3, await makeCert(tempDir(), 'rogue', ['127.0.0.3']), false)
    const pre = await run(runPreExec, [w.config])
    const line = pre.lines.find((l) => l.startsWith('dpxen: Debian: FAILED: '))
    expect(line, pre.text).toMatch(
      /pool host xenserver-sim-3 \(127\.0\.0\.3\) presented the certificate [0-9A-F:]{95}, not the one the pool records for it, [0-9A-F:]{95}/,
    )
    expect(pre.text).toMatch(/vm2: done/)
    expect(seen(w.sim, 3, '/export')).toEqual([])
    expect((await run(runPostExec, [w.config])).code).toBe(5)
    expect(await snapshots(w.xapi)).toEqual([])
  })

  it('a certificate renewed through xapi (the pool records it) is trusted at once', async () => {
    const w = await world({ mode: 'online', vmName: ['Debian'] })
    w.sim.renewCertificate(3, await makeCert(tempDir(), 'renewed', ['127.0.0.3']))
    const pre = await run(runPreExec, [w.config])
    expect(pre.text).toMatch(/Debian: done/)
  })

  it('a redirect to an address that is not a host of the pool is refused with a line naming it', async () => {
    const w = await world({ mode: 'online', vmName: ['Debian'] })
    w.sim.faults.add('redirect-to:127.0.0.9')
    const pre = await run(runPreExec, [w.config])
    expect(pre.text).toMatch(/redirected the transfer to 127\.0\.0\.9:\d+, which is not a host of this pool/)
    expect(await snapshots(w.xapi)).toEqual([])
  })
})

describe('a pool of three hosts: the master moves, a host goes down', () => {
  it('the master moves mid-backup (pool.designate_new_master): the run follows it and completes, nothing left behind', async () => {
    const w = await world({ mode: 'online', vmName: ['Debian', 'vm2'], concurrency: 1 })
    const [, second] = await w.xapi.call<string[]>('host.get_all')
    let moved: Promise<unknown> | undefined
    const pre = await run(runPreExec, [w.config], {
      onLine: (line) => {
        if (/: done/.test(line)) moved ??= w.xapi.call('pool.designate_new_master', second)
      },
    })
    await moved
    expect(pre.code, pre.text).toBe(0)
    expect(pre.text).toMatch(/the pool's master is now 127\.0\.0\.2:\d+ \(was 127\.0\.0\.1:\d+\)/)
    expect(pre.text).toMatch(/Debian: done/)
    expect(pre.text).toMatch(/vm2: done/)
    const post = await run(runPostExec, [w.config])
    expect(post.code, post.text).toBe(0)
    const xapi = await TestClient.login(w.sim.hostUrls[1]!)
    expect(await snapshots(xapi)).toEqual([])
    expect(w.sim.openSessions()).toBe(1) // the test's own
  })

  it('the master moves mid-restore: the restore follows it and completes, the VM back as it was', async () => {
    const w = await world({ mode: 'offline', vmName: ['Debian'], startAfterRestore: true })
    const vm = await w.xapi.vmByName('Debian')
    const hashes = await diskHashes(w.sim.url, w.xapi, vm)
    expect((await run(runPreExec, [w.config])).code).toBe(0)
    await w.xapi.call('VM.hard_shutdown', vm)
    await damage(w.sim.url, w.xapi, vm)
    await w.xapi.call('VM.start', vm, false, false)
    expect(await diskHashes(w.sim.url, w.xapi, vm)).not.toEqual(hashes)
    const [, second] = await w.xapi.call<string[]>('host.get_all')
    let moved: Promise<unknown> | undefined
    const restore = await run(runRestorePostExec, [w.config], {
      onLine: (line) => {
        if (/verified/.test(line)) moved ??= w.xapi.call('pool.designate_new_master', second)
      },
    })
    await moved
    expect(restore.code, restore.text).toBe(0)
    expect(restore.text).toMatch(/the pool's master is now 127\.0\.0\.2/)
    const xapi = await TestClient.login(w.sim.hostUrls[1]!)
    const again = await xapi.vmByName('Debian')
    expect(await diskHashes(w.sim.hostUrls[1]!, xapi, again)).toEqual(hashes)
    expect(await xapi.call('VM.get_power_state', again)).toBe('Running')
  })

  it('the master gone: the next run finds the new master through a host it remembers, and names it', async () => {
    const w = await world({ mode: 'online', vmName: ['Debian'] })
    expect((await run(runPreExec, [w.config])).code).toBe(0)
    expect((await run(runPostExec, [w.config])).code).toBe(0)
    const memory = `${w.backupDir}.pool-hosts.json`
    expect(statSync(memory).mode & 0o777).toBe(0o600)
    const [, , third] = await w.xapi.call<string[]>('host.get_all')
    await w.xapi.call('pool.designate_new_master', third)
    await w.sim.setHostDown(1, true)
    const pre = await run(runPreExec, [w.config])
    expect(pre.code, pre.text).toBe(0)
    expect(pre.text).toMatch(
      /127\.0\.0\.1:\d+ does not answer .*trying the pool's other hosts known from the last run: xenserver-sim-2, xenserver-sim-3/,
    )
    expect(pre.text).toMatch(/the pool's master is now 127\.0\.0\.3:\d+ \(found through xenserver-sim-2\)/)
    expect(pre.text).toMatch(/Debian: done/)
    expect((await run(runPostExec, [w.config])).code).toBe(0)
    const xapi = await TestClient.login(w.sim.hostUrls[2]!)
    expect(await snapshots(xapi)).toEqual([])
    // Without what the last run learnt there is nothing to try: the line says url does not answer.
    rmSync(memory)
    const lost = await run(runPreExec, [w.config])
    expect(lost.code).not.toBe(0)
    expect(lost.text).toMatch(/cannot reach .*127\.0\.0\.1/)
  })

  it('a host down: the VM on its local SR fails with xapi reason, the others go on', async () => {
    const w = await world(
      { mode: 'offline', vmName: ['on-third', 'shared'] },
      {
        seed: {
          srs: [
            { name: 'Local storage', type: 'ext', default: true, host: 3 },
            { name: 'Shared Storage', type: 'nfs' },
          ],
          vms: [
            { name: 'on-third', disks: [{ sr: 'Local storage', size: '4MiB', fill: 0.5 }] },
            { name: 'shared', disks: [{ sr: 'Shared Storage', size: '4MiB', fill: 0.5 }] },
          ],
        },
        demo: false,
      },
    )
    await w.sim.setHostDown(3, true)
    const pre = await run(runPreExec, [w.config])
    expect(pre.lines.find((l) => l.startsWith('dpxen: on-third: FAILED: '))).toMatch(/NO_HOSTS_AVAILABLE/)
    expect(pre.text).toMatch(/shared: done/)
    expect(w.sim.context.db.all('task').filter(([, t]) => t.status === 'pending')).toEqual([])
    await w.sim.setHostDown(3, false)
    expect((await run(runPreExec, [w.config])).text).toMatch(/on-third: done/)
  })
})
