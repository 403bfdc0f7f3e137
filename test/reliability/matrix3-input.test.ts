// The third reliability matrix, the cases where a file handed to dpxen is wrong or hostile: a
// configuration that sets a key twice or does not parse, what a staging folder holds (FIFOs,
// huge tables, manifests that contradict their files), urls that carry a password. Real hooks
// in process against xapi-sim on port 0, real files.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runPreExec } from '../../src/backup/run.js'
import { run, tempDir } from '../helpers/hooks.js'
import { demoSim } from '../helpers/sim.js'

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
      expect(pre.text).not.toContain('xenroot')
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
