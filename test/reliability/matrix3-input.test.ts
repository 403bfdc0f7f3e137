// The third reliability matrix, the cases where a file handed to dpxen is wrong or hostile: a
// configuration that sets a key twice or does not parse, what a staging folder holds (FIFOs,
// huge tables, manifests that contradict their files), urls that carry a password. Real hooks
// in process against xapi-sim on port 0, real files.
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { describe, expect, it } from 'vitest'
import { runPostExec } from '../../src/backup/post.js'
import { runPreExec } from '../../src/backup/run.js'
import { runDpxen } from '../../src/cli/dpxen.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import { chainNames, runName } from '../../src/staging/chain.js'
import { xvaNames } from '../../src/staging/names.js'
import { VhdVerifier } from '../../src/xva/vhd.js'
import { vhdFooter, vhdHeader } from '../../simulator/xapi/xva/vhd.js'
import { run, tempDir, writeConfig } from '../helpers/hooks.js'
import { demoSim } from '../helpers/sim.js'
import { world } from '../helpers/world.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

const PRE_EXEC = fileURLToPath(new URL('../../dist/hooks/pre-exec.js', import.meta.url))
const mkfifo = (path: string): void => void execFileSync('mkfifo', [path])

/** A VM backed up (incremental or not) with its files kept, and put back as Data Protector would. */
async function stagedWorld(values: Record<string, unknown>) {
  const w = await world({ mode: 'online', vmName: ['Debian'], ...values })
  mkdirSync(w.backupDir)
  const pre = await run(runPreExec, [w.config])
  expect(pre.code, pre.text).toBe(0)
  const kept = tempDir()
  for (const f of readdirSync(w.backupDir).filter((n) => !n.startsWith('.')))
    copyFileSync(join(w.backupDir, f), join(kept, f))
  await run(runPostExec, [w.config])
  for (const f of readdirSync(kept)) copyFileSync(join(kept, f), join(w.backupDir, f))
  return { ...w, files: readdirSync(kept), text: pre.text }
}

describe('reliability, third matrix: a configuration that is wrong', () => {
  it('a key set twice is refused in JSON, YAML and DPxen_config.py, naming both lines; no VM is stopped', async () => {
    const { sim, xapi } = await demoSim()
    const dir = tempDir()
    const common = `"url": "${sim.url}", "username": "root", "password": "xenroot", "backupDir": "${join(dir, 'b')}"`
    const files = {
      'dpxen.json': `{\n  ${common},\n  "mode": "online",\n  "vmName": ["Debian"],\n  "mode": "allOffline"\n}\n`,
      'dpxen.yaml': `url: ${sim.url}\nusername: root\npassword: xenroot\nbackupDir: ${join(dir, 'b')}\nmode: online\nvmName: [Debian]\nmode: allOffline\n`,
      'DPxen_config.py': `url = "${sim.url}"\nusername = "root"\npassword = "xenroot"\nbackupDir = "${join(dir, 'b')}"\nmode = "online"\nvmName = ["Debian"]\nmode = "allOffline"\n`,
    }
    const lines = { 'dpxen.json': [5, 3], 'dpxen.yaml': [7, 5], 'DPxen_config.py': [7, 5] }
    for (const [name, text] of Object.entries(files)) {
      const path = join(dir, name)
      writeFileSync(path, text, { mode: 0o600 })
      const pre = await run(runPreExec, [path])
      expect(pre.code, name).toBe(2)
      const [repeat, first] = lines[name as keyof typeof lines]
      expect(pre.text).toContain(`config ${path}: line ${repeat}: `)
      expect(pre.text).toMatch(
        new RegExp(`mode"? is set twice \\(first on line ${first}\\): keep one of them`),
      )
      expect(pre.text).not.toContain(SIM_PASSWORD)
    }
    for (const vm of await xapi.call<string[]>('VM.get_all'))
      if (
        !(await xapi.call('VM.get_is_a_template', vm)) &&
        (await xapi.call('VM.get_name_label', vm)) === 'Debian'
      )
        expect(await xapi.call('VM.get_power_state', vm)).toBe('Running')
  })

  it('a configuration that does not parse says the line, the column and what is wrong, never its text', async () => {
    const dir = tempDir()
    const cases: [string, string, RegExp][] = [
      [
        'comma.json',
        '{\n  "url": "http://h",\n  "password": "s3cret",\n}\n',
        /line 3, column 23: a comma before }, which JSON does not allow: remove it/,
      ],
      ['quote.json', '{\n  "url": "http://h,\n  "password": "s3cret"\n}\n', /line 2, column \d+: /],
      [
        'comment.json',
        '{\n  // the pool\n  "password": "s3cret"\n}\n',
        /line 2, column 3: a comment, which JSON does not allow/,
      ],
      [
        'bad.yaml',
        'url: http://h\npassword: s3cret\n  mode: [online\n',
        /line 2, column 11: Nested mappings/,
      ],
    ]
    for (const [name, text, expected] of cases) {
      const path = join(dir, name)
      writeFileSync(path, text, { mode: 0o600 })
      const pre = await run(runPreExec, [path])
      expect(pre.code, name).toBe(2)
      expect(pre.text, name).toMatch(expected)
      expect(pre.text, name).not.toMatch(/s3cret|JSON Error in/)
    }
    // A byte-order mark, as Notepad writes it, is not an error.
    const bom = join(dir, 'bom.json')
    writeFileSync(bom, '\uFEFF{ "url": "http://h" }\n')
    const pre = await run(runPreExec, [bom])
    expect(pre.text).not.toMatch(/line 1, column 1/)
    expect(pre.text).toMatch(/username|password|mode|missing/)
  })
})

describe('reliability, third matrix: a staging folder is hostile input', () => {
  it('a FIFO named as a chain manifest, an XVA or its manifest never hangs list, verify or the restore', async () => {
    const chain = await stagedWorld({ incremental: true })
    mkfifo(join(chain.backupDir, 'Debian_20261201T010000000Z.chain.json'))
    const listed = await run(runDpxen, ['list', chain.backupDir])
    expect(listed.code, listed.text).toBe(0)
    expect(listed.text).toMatch(/Debian: restorable to run/)
    const restore = await run(runRestorePostExec, [chain.config])
    expect(restore.code, restore.text).toBe(0)

    const full = await stagedWorld({})
    const xva = full.files.find((f) => f.endsWith('.xva'))!
    mkfifo(join(full.backupDir, 'Other.xva'))
    mkfifo(join(full.backupDir, 'Other.xva.manifest.json'))
    const fifo = await run(runDpxen, ['verify', join(full.backupDir, 'Other.xva')])
    expect(fifo.code).toBe(6)
    expect(fifo.text).toMatch(/Other\.xva: not a regular file/)
    expect((await run(runDpxen, ['list', full.backupDir])).text).toContain(`${xva}: Debian`)
    const both = await run(runRestorePostExec, [full.config])
    expect(both.text).toMatch(/Other\.xva: not a regular file/)
    expect(both.text).toMatch(/Debian: .*restored/i)
  })

  it('a huge chain manifest is passed over, a VHD header claiming a huge block table is refused at once', async () => {
    const w = await stagedWorld({ incremental: true })
    // 64 MiB of JSON: read whole, V8 would hold several times that.
    writeFileSync(
      join(w.backupDir, 'Debian_20991231T000000000Z.chain.json'),
      `{"format":"dpxen-chain/1","disks":[${'"x",'.repeat(16 * 1024 * 1024)}"x"]}`,
    )
    const before = process.memoryUsage().rss
    const listed = await run(runDpxen, ['list', w.backupDir])
    expect(listed.text).toMatch(/Debian: restorable to run/)
    expect(process.memoryUsage().rss - before).toBeLessThan(48 * 1024 * 1024)

    // A header claiming 2^30 entries (4 GiB of table), and 64 MiB of stream after it.
    const size = 2 ** 30 * 2 * 1024 * 1024
    const verifier = new VhdVerifier()
    const pushAll = (): void => {
      verifier.push(
        Buffer.concat([
          vhdFooter(size, '6c1e4a2e-1f7b-4a43-9b3e-2f1d2c3b4a5e', false),
          vhdHeader(2 ** 30, undefined),
        ]),
      )
      const piece = Buffer.alloc(1024 * 1024, 0xff)
      for (let i = 0; i < 64; i++) verifier.push(piece)
    }
    expect(pushAll).toThrow(/a block table of 1073741824 entries, more than any exported disk has/)
  })

  it('the VHD verifier is linear: a fully written 512 GiB table (262,144 blocks) is checked in one pass', () => {
    // Quadratic before (it sorted its queue on every block): 32 GiB took 2.1 s, so this would take
    // over 8 minutes and fail on the test timeout; linear, it takes under a second.
    const size = 512 * 1024 ** 3
    const entries = size / (2 * 1024 * 1024)
    const bat = Buffer.alloc(entries * 4)
    for (let i = 0; i < entries; i++) bat.writeUInt32BE(4 + entries / 128 + i * 4097, i * 4)
    const footer = vhdFooter(size, '6c1e4a2e-1f7b-4a43-9b3e-2f1d2c3b4a5e', false)
    const verifier = new VhdVerifier()
    verifier.push(Buffer.concat([footer, vhdHeader(entries, undefined), Buffer.alloc(512), bat]))
    const bitmap = Buffer.alloc(512, 0xff)
    const data = Buffer.alloc(2 * 1024 * 1024)
    for (let i = 0; i < entries; i++) {
      verifier.push(bitmap)
      verifier.push(data)
    }
    verifier.push(footer)
    expect(verifier.finish().blocks).toBe(entries)
  })
})

describe('reliability, third matrix: secrets', () => {
  it('a password inside a url is never echoed, whatever else is wrong with the url', async () => {
    const dir = tempDir()
    for (const url of [
      'ftp://root:s3cret@xen.example.com',
      'http://root:s3cret@xen.example.com:99999',
      'https://root:s3cret@[::1',
      'root:s3cret@xen.example.com',
      'http://root:s3cret@xen.example.com',
    ]) {
      const config = writeConfig(dir, { url, username: 'root', password: 'x', mode: 'allOnline' })
      const pre = await run(runPreExec, [config])
      expect(pre.code, url).toBe(2)
      expect(pre.text, url).toMatch(/url: /)
      expect(pre.text, url).not.toContain('s3cret')
    }
  })

  it('dpxen verify with a manifest that is not JSON exits 6 and never quotes it', async () => {
    const w = await stagedWorld({})
    const xva = join(
      w.backupDir,
      w.files.find((f) => f.endsWith('.xva'))!,
    )
    writeFileSync(`${xva}.manifest.json`, 'https://evil.example.com/token=abc123 not json')
    const verify = await run(runDpxen, ['verify', xva])
    expect(verify.code, verify.text).toBe(6)
    expect(verify.text).toMatch(/manifest\.json: is not a dpxen manifest \(damaged or replaced\)/)
    expect(verify.text).not.toMatch(/evil|abc123|Unexpected token/)
  })
})

describe('reliability, third matrix: what is reported', () => {
  it('long VM names on a long server name: every file dpxen writes for them fits and can be made', () => {
    const dir = tempDir()
    const server = 'xenserver-pool-master-01.datacenter-frankfurt.example.com'
    const vms = [
      { uuid: 'a1b2c3d4-0000-4000-8000-000000000001', name: 'x'.repeat(250) },
      { uuid: 'b1b2c3d4-0000-4000-8000-000000000002', name: 'x'.repeat(250) },
      { uuid: 'c1b2c3d4-0000-4000-8000-000000000003', name: 'ü'.repeat(200) },
    ]
    for (const online of [false, true]) {
      const names = [...xvaNames(server, vms, online).values()]
      expect(new Set(names).size).toBe(vms.length)
      for (const xva of names) {
        const chain = chainNames(xva.replace(/(_Snapshot)?\.xva$/, ''), runName(new Date()))
        for (const name of [xva, `${xva}.manifest.json`, chain.manifest, chain.disk('15')])
          for (const file of [name, `${name}.partial`]) {
            expect(Buffer.byteLength(file), file).toBeLessThanOrEqual(255)
            writeFileSync(join(dir, file), '')
          }
      }
    }
  })

  it('the done line of an incremental run names the files it wrote, never an XVA', async () => {
    const w = await stagedWorld({ incremental: true })
    const done = /Debian: done, .* -> (\S+), the VM's metadata and (\d+) disk file\(s\)/.exec(w.text)
    expect(done, w.text).not.toBeNull()
    expect(w.files).toContain(done![1])
    expect(w.files.filter((f) => f.endsWith('.vhd'))).toHaveLength(Number(done![2]))
    expect(w.text).not.toMatch(/\.xva/)
  })

  it('concurrency 16, online and offline: no Node warning lands in the session', async () => {
    const { sim } = await demoSim({
      demo: false,
      seed: {
        srs: [{ name: 'L', type: 'ext', default: true }],
        vms: [
          { name: 'web', count: 16, powerState: 'Running', disks: [{ sr: 'L', size: '2MiB', fill: 0.5 }] },
        ],
      },
    })
    const dir = tempDir()
    for (const mode of ['allOnline', 'allOffline']) {
      const config = writeConfig(dir, {
        mode,
        url: sim.url,
        username: 'root',
        password: SIM_PASSWORD,
        backupDir: join(dir, mode),
        concurrency: 16,
      })
      const pre = await execa(PRE_EXEC, [config], { reject: false, all: true })
      expect(pre.exitCode, pre.all).toBe(0)
      expect(pre.all).toContain('dpxen: all 16 VM(s) backed up')
      expect(pre.all).not.toMatch(/Warning|\(node:\d+\)/)
    }
  })
})
