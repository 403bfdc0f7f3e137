// Load: a 200-VM pool backed up allOnline with concurrency 4; nothing may be left behind.
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runPostExec } from '../../src/backup/post.js'
import { runPreExec } from '../../src/backup/run.js'
import { run, tempDir, writeConfig } from '../helpers/hooks.js'
import { records } from '../helpers/pool.js'
import { demoSim } from '../helpers/sim.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

describe('load', () => {
  it('backs up 200 VMs allOnline with concurrency 4: no session, task or snapshot left, memory flat', async () => {
    const { sim, xapi } = await demoSim({
      demo: false,
      seed: {
        srs: [{ name: 'L', type: 'ext', default: true }],
        vms: [
          {
            name: 'web',
            count: 200,
            powerState: 'Running',
            vifs: 1,
            disks: [{ sr: 'L', size: '2MiB', fill: 0.5 }],
          },
        ],
      },
    })
    const dir = tempDir()
    const backupDir = join(dir, 'staging')
    const config = writeConfig(dir, {
      mode: 'allOnline',
      url: sim.url,
      username: 'root',
      password: SIM_PASSWORD,
      backupDir,
      concurrency: 4,
      progressInterval: 600,
    })
    await xapi.call('session.logout')
    global.gc?.()
    const rssBefore = process.memoryUsage().rss
    const result = await run(runPreExec, [config])
    const rssGrowth = process.memoryUsage().rss - rssBefore
    expect(result.code).toBe(0)
    expect(result.lines.at(-1)).toBe('dpxen: all 200 VM(s) backed up')
    expect(readdirSync(backupDir).filter((f) => f.endsWith('.xva'))).toHaveLength(200)
    expect(sim.openSessions()).toBe(0)
    const tasks = sim.context.db.all('task').filter(([, t]) => t.status === 'pending')
    expect(tasks).toEqual([])
    expect(sim.context.db.count('task')).toBe(0)
    const { TestClient } = await import('../helpers/rpc.js')
    const again = await TestClient.login(sim.url)
    expect(Object.values(await records(again, 'VM')).filter((v) => v.is_a_snapshot)).toEqual([])
    // 200 exports of ~1 MiB each ran in this process: memory must not have grown with them.
    expect(rssGrowth).toBeLessThan(150 * 1024 * 1024)
    await again.call('session.logout')
    expect((await run(runPostExec, [config])).code).toBe(0)
    expect(readdirSync(backupDir)).toEqual([])
  }, 180_000)
})
