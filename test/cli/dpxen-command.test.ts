// The operator command: dpxen check and dpxen verify, as executables.
import { constants, copyFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { userInfo } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { describe, expect, it } from 'vitest'
import { tempDir, writeConfig } from '../helpers/hooks.js'
import { demoSim } from '../helpers/sim.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

const DPXEN = fileURLToPath(new URL('../../dist/hooks/dpxen.js', import.meta.url))
const PRE_EXEC = fileURLToPath(new URL('../../dist/hooks/pre-exec.js', import.meta.url))

describe('dpxen check / verify', () => {
  it('check reports each VM, its disks and snapshot capability, free space, and what is not ready', async () => {
    const { sim } = await demoSim()
    const dir = tempDir()
    const config = writeConfig(dir, {
      mode: 'allOnline',
      url: sim.url,
      username: 'root',
      password: SIM_PASSWORD,
      backupDir: dir,
    })
    const result = await execa(DPXEN, ['check', config], { reject: false })
    expect(result.exitCode).toBe(5)
    expect(result.stdout).toMatch(/^ok {6}Debian \([0-9a-f-]+\) Running, up to /m)
    expect(result.stdout).toMatch(/^ {10}disk 0: 8\.0 MiB on Local storage, snapshot allowed$/m)
    expect(result.stdout).toMatch(/^PROBLEM legacy-win/m)
    // Who it runs as, and whether that user can write where the hooks write.
    expect(result.stdout).toMatch(new RegExp(`^user {4}dpxen runs as ${userInfo().username}[ ;(]`, 'm'))
    expect(result.stdout).toMatch(new RegExp(`^ok {6}backupDir ${dir}: writable$`, 'm'))
    expect(result.stdout).toMatch(/^ {10}disk 0: 4\.0 MiB on Removable storage, snapshot NOT allowed$/m)
    expect(result.stdout).toMatch(new RegExp(`^ok {6}${dir}: .* free, the backup needs up to `, 'm'))
    // How XVA files will be written there, found by writing a block (the probe file is gone).
    const direct =
      constants.O_DIRECT !== undefined ? 'around the page cache \\(O_DIRECT\\)' : 'through the page cache'
    expect(result.stdout).toMatch(new RegExp(`^note {4}${dir}: XVA files are written ${direct}$`, 'm'))
    expect(readdirSync(dir).filter((f) => f.startsWith('.dpxen-check'))).toEqual([])
    expect(result.stdout.trim().split('\n').at(-1)).toBe('not ready: 1 problem(s)')
    const offline = writeConfig(
      dir,
      {
        mode: 'allOffline',
        url: sim.url,
        username: 'root',
        password: SIM_PASSWORD,
        backupDir: dir,
        directIo: false,
      },
      'off.json',
    )
    const ready = await execa(DPXEN, ['check', offline], { reject: false })
    expect(ready.exitCode).toBe(0)
    expect(ready.stdout).toContain(`${dir}: XVA files are written through the page cache (directIo: false)`)
    expect(ready.stdout.trim().split('\n').at(-1)).toBe('ready')
  })

  it('check with cbt: a problem until a network has the nbd purpose, then ready', async () => {
    const { sim, xapi } = await demoSim()
    const dir = tempDir()
    const config = writeConfig(dir, {
      mode: 'online',
      vmName: ['Debian'],
      incremental: true,
      cbt: true,
      url: sim.url,
      username: 'root',
      password: SIM_PASSWORD,
      backupDir: dir,
    })
    const before = await execa(DPXEN, ['check', config], { reject: false })
    expect(before.stdout).toMatch(
      /^PROBLEM no network of the pool has the nbd purpose: cbt keeps each base's data on the SR until one has \(give the storage network the nbd purpose \(xe network-param-add/m,
    )
    expect(before.stdout.trim().split('\n').at(-1)).toBe('not ready: 1 problem(s)')
    const network = (await xapi.call<string[]>('network.get_all'))[0]
    await xapi.call('network.add_purpose', network, 'nbd')
    const after = await execa(DPXEN, ['check', config], { reject: false })
    expect(after.stdout).toMatch(
      /^ok {6}NBD for changed block tracking: Pool-wide network associated with eth0 \(nbd\)$/m,
    )
    expect(after.stdout.trim().split('\n').at(-1)).toBe('ready')
  })

  it('verify accepts a backup and its manifest, and refuses a damaged copy with exit 6', async () => {
    const { sim } = await demoSim()
    const dir = tempDir()
    const backupDir = join(dir, 'b')
    const config = writeConfig(dir, {
      mode: 'online',
      vmName: ['vm2'],
      url: sim.url,
      username: 'root',
      password: SIM_PASSWORD,
      backupDir,
    })
    expect((await execa(PRE_EXEC, [config])).exitCode).toBe(0)
    const file = join(backupDir, '127.0.0.1_vm2_Snapshot.xva')
    const ok = await execa(DPXEN, ['verify', file], { reject: false })
    expect(ok.exitCode).toBe(0)
    expect(ok.stdout).toMatch(/valid XVA of VM /)
    expect(ok.stdout).toMatch(/matches its manifest/)
    const damaged = join(dir, 'damaged.xva')
    const bytes = readFileSync(file)
    bytes[2 * 1024 * 1024 + 4096] = bytes[2 * 1024 * 1024 + 4096]! ^ 0xff
    writeFileSync(damaged, bytes)
    const bad = await execa(DPXEN, ['verify', damaged], { reject: false })
    expect(bad.exitCode).toBe(6)
    expect(bad.stdout).toMatch(/^dpxen: bad checksum for chunk Ref:\d+\/\d+ \(the data is corrupt\)$/m)
    // The same bytes under the manifest's name, but changed after the backup: refused.
    copyFileSync(join(backupDir, '127.0.0.1_vm2_Snapshot.xva.manifest.json'), `${damaged}.manifest.json`)
    writeFileSync(damaged, Buffer.concat([readFileSync(file), Buffer.alloc(512)]))
    const changed = await execa(DPXEN, ['verify', damaged], { reject: false })
    expect(changed.exitCode).toBe(6)
    expect(changed.stdout).toMatch(/does not match its manifest/)
  })

  it('list shows what a staging folder holds: VM, kind, time, Data Protector session, size, verification', async () => {
    const { sim } = await demoSim()
    const dir = tempDir()
    const backupDir = join(dir, 'staging')
    const config = writeConfig(dir, {
      mode: 'online',
      vmName: ['Debian', 'vm2'],
      url: sim.url,
      username: 'root',
      password: SIM_PASSWORD,
      backupDir,
    })
    const pre = await execa(PRE_EXEC, [config], { reject: false, env: { SESSIONID: '2026/11/30-7' } })
    expect(pre.exitCode, pre.stdout).toBe(0)
    writeFileSync(join(backupDir, 'notes.txt'), 'someone else')
    for (const args of [[backupDir], [config]]) {
      const result = await execa(DPXEN, ['list', ...args], { reject: false })
      expect(result.exitCode, result.stdout).toBe(0)
      expect(result.stdout).toMatch(
        /^dpxen: 127\.0\.0\.1_Debian_Snapshot\.xva: Debian \([0-9a-f-]{36}\), online backup of \d{4}-\d\d-\d\d \d\d:\d\d UTC from 127\.0\.0\.1, Data Protector session 2026\/11\/30-7, [\d.]+ MiB, checksums verified as it was written, never health-checked$/m,
      )
      expect(result.stdout).toMatch(/^dpxen: 127\.0\.0\.1_vm2_Snapshot\.xva: vm2 /m)
      expect(result.stdout).toMatch(/^dpxen: not dpxen's: notes\.txt$/m)
      // The pre-exec staged the folder for its session's post-exec.
      expect(result.stdout).toMatch(
        /^dpxen: .* is held: holds the backup of Data Protector session 2026\/11\/30-7/m,
      )
      expect(result.stdout.trim().split('\n').at(-1)).toMatch(
        /^dpxen: .*staging: 2 backup file\(s\), [\d.]+ MiB$/,
      )
    }
  })

  it('usage errors give one line and exit 2', async () => {
    const result = await execa(DPXEN, ['frobnicate'], { reject: false })
    expect(result.exitCode).toBe(2)
    expect(result.stdout).toBe(
      'dpxen: unknown command "frobnicate" (usage: dpxen check [CONFIG] | dpxen list [DIR | CONFIG] | dpxen recover [CONFIG] | dpxen restore [OPTIONS] [CONFIG] | dpxen health-check [OPTIONS] [CONFIG] | dpxen setup [OPTIONS] | dpxen verify FILE.xva)',
    )
  })
})
