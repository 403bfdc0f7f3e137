// dpxen setup: the wrappers Data Protector runs, a configuration skeleton, and their removal.
// The Linux wrappers run for real (in dp-sim sessions, broken on purpose too); the Windows .cmd
// files are read as text by a small interpreter of the cmd rules they rely on.
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { describe, expect, it } from 'vitest'
import { runBackupSession } from '../../simulator/dp/session.js'
import { Store } from '../../simulator/dp/store.js'
import { backupSpec as spec } from '../helpers/dp.js'
import { tempDir } from '../helpers/hooks.js'
import { world } from '../helpers/world.js'

const DPXEN = fileURLToPath(new URL('../../dist/hooks/dpxen.js', import.meta.url))
const HOOKS = fileURLToPath(new URL('../../dist/hooks/', import.meta.url))
const WRAPPERS = ['dpxen-pre-exec', 'dpxen-post-exec', 'dpxen-restore-post-exec']

const setup = (...args: string[]) => execa(process.execPath, [DPXEN, 'setup', ...args], { reject: false })

describe('dpxen setup (Linux)', () => {
  it('writes three wrappers (0755) and a skeleton (0600) under --prefix, naming node, dpxen and the configuration', async () => {
    const prefix = tempDir()
    const result = await setup('--prefix', prefix)
    expect(result.exitCode, result.stdout).toBe(0)
    const lbin = join(prefix, 'opt/omni/lbin')
    for (const [i, name] of WRAPPERS.entries()) {
      const path = join(lbin, name)
      expect(statSync(path).mode & 0o777).toBe(0o755)
      const text = readFileSync(path, 'utf8')
      expect(text.startsWith('#!/bin/sh\n')).toBe(true)
      expect(text).toContain('exec 2>&1\n')
      expect(text).toContain(`node='${process.execPath}'`)
      expect(text).toContain(
        `hook='${join(HOOKS, ['pre-exec.js', 'post-exec.js', 'restore-post-exec.js'][i]!)}'`,
      )
      expect(text).toContain("DPXEN_CONFIG='/etc/opt/omni/client/dpxen/dpxen.yaml'")
      expect(result.stdout).toContain(`wrote   ${path} (wrapper)`)
    }
    const skeleton = join(prefix, 'etc/opt/omni/client/dpxen/dpxen.yaml')
    expect(statSync(skeleton).mode & 0o777).toBe(0o600)
    expect(result.stdout).toMatch(
      /Pre-exec dpxen-pre-exec, Post-exec dpxen-post-exec; restore Post-exec dpxen-restore-post-exec/,
    )
    // The skeleton is a configuration dpxen reads: only the placeholder password file is missing.
    const check = await execa(process.execPath, [DPXEN, 'check', skeleton], { reject: false })
    expect(check.stdout).toMatch(/passwordFile.*\/etc\/opt\/omni\/client\/dpxen\/password/)
    expect(check.exitCode).toBe(2)
  })

  it('--dry-run prints every file with its content and writes nothing', async () => {
    const prefix = tempDir()
    const result = await setup('--prefix', prefix, '--dry-run')
    expect(result.exitCode).toBe(0)
    for (const name of WRAPPERS)
      expect(result.stdout).toContain(`--- ${join(prefix, 'opt/omni/lbin', name)} (mode 755)`)
    expect(result.stdout).toContain(`--- ${join(prefix, 'etc/opt/omni/client/dpxen/dpxen.yaml')} (mode 600)`)
    expect(result.stdout).toContain('exec "$node" "$hook" "$@"')
    expect(result.stdout).toContain('mode: online')
    expect(existsSync(join(prefix, 'opt'))).toBe(false)
    expect(existsSync(join(prefix, 'etc'))).toBe(false)
  })

  it('keeps an existing configuration, refuses a script it did not write, and --remove removes exactly what it wrote', async () => {
    const prefix = tempDir()
    const config = join(prefix, 'etc/opt/omni/client/dpxen/dpxen.yaml')
    const lbin = join(prefix, 'opt/omni/lbin')
    expect((await setup('--prefix', prefix)).exitCode).toBe(0)
    writeFileSync(config, 'mode: allOnline\n')
    const again = await setup('--prefix', prefix)
    expect(again.stdout).toContain(`kept    ${config}: a configuration exists there; it was not changed`)
    expect(readFileSync(config, 'utf8')).toBe('mode: allOnline\n')
    // Someone else's script where a wrapper would go: refused, untouched.
    writeFileSync(join(lbin, 'dpxen-post-exec-restore'), '#!/bin/sh\necho mine\n')
    const foreign = await setup('--prefix', prefix, '--suffix', 'restore')
    expect(foreign.exitCode).toBe(2)
    expect(foreign.stdout).toMatch(
      /dpxen-post-exec-restore exists and was not written by dpxen setup: it was left as it is/,
    )
    expect(foreign.stdout.split('\n').filter(Boolean)).toHaveLength(2)
    expect(readFileSync(join(lbin, 'dpxen-post-exec-restore'), 'utf8')).toBe('#!/bin/sh\necho mine\n')
    writeFileSync(join(lbin, 'other-script'), 'x')

    const removed = await setup('--prefix', prefix, '--remove')
    expect(removed.exitCode).toBe(0)
    for (const name of WRAPPERS) expect(existsSync(join(lbin, name))).toBe(false)
    expect(removed.stdout).toContain(`kept    ${config}: changed since dpxen setup wrote it`)
    expect(readFileSync(config, 'utf8')).toBe('mode: allOnline\n')
    expect(existsSync(join(lbin, 'other-script'))).toBe(true)
    expect(existsSync(join(lbin, 'dpxen-post-exec-restore'))).toBe(true)
    expect(existsSync(join(lbin, 'dpxen-pre-exec-restore'))).toBe(true) // the --suffix run's own
    const none = await setup('--prefix', prefix, '--remove')
    expect(none.exitCode).toBe(2)
    expect(none.stdout).toMatch(/no setup record at .*dpxen-setup\.json/)
  })

  it('--suffix: a second set of wrappers with a configuration of its own', async () => {
    const prefix = tempDir()
    const result = await setup('--prefix', prefix, '--suffix', 'restore')
    expect(result.exitCode).toBe(0)
    const text = readFileSync(join(prefix, 'opt/omni/lbin/dpxen-restore-post-exec-restore'), 'utf8')
    expect(text).toContain("DPXEN_CONFIG='/etc/opt/omni/client/dpxen/dpxen-restore.yaml'")
    expect(existsSync(join(prefix, 'etc/opt/omni/client/dpxen/dpxen-restore.yaml'))).toBe(true)
    expect((await setup('--prefix', prefix, '--suffix', '../x')).stdout).toMatch(
      /--suffix "\.\.\/x": letters/,
    )
  })

  it('wrappers in Data Protector sessions: a backup through them; a missing node or configuration is a session message', async () => {
    const { dir, backupDir: staging, config } = await world({ mode: 'online', vmName: ['Debian'] })
    mkdirSync(staging)
    const store = new Store(join(dir, 'store'))
    const wrappers = async (name: string, ...args: string[]): Promise<string> => {
      const prefix = join(dir, name)
      const result = await setup('--prefix', prefix, ...args)
      expect(result.exitCode, result.stdout).toBe(0)
      return join(prefix, 'opt/omni/lbin')
    }
    const good = await wrappers('good', '--config', config)
    const ok = await runBackupSession(
      spec(staging, { preExec: join(good, 'dpxen-pre-exec'), postExec: join(good, 'dpxen-post-exec') }),
      { store },
    )
    expect(ok.status).toBe('Completed')
    expect(ok.messages.some((m) => m.source === 'pre-exec' && /Debian: done/.test(m.text))).toBe(true)

    const noNode = await wrappers('no-node', '--config', config, '--node', '/opt/nowhere/bin/node')
    const failed = await runBackupSession(spec(staging, { preExec: join(noNode, 'dpxen-pre-exec') }), {
      store,
    })
    expect(failed.status).toBe('Failed')
    expect(failed.messages.map((m) => m.text)).toContain(
      'dpxen-pre-exec: cannot run Node.js at /opt/nowhere/bin/node (where dpxen setup found it): install Node.js there, or run dpxen setup again with the node to use',
    )

    const noConfig = await wrappers('no-config', '--config', join(dir, 'missing.json'))
    const failedToo = await runBackupSession(spec(staging, { preExec: join(noConfig, 'dpxen-pre-exec') }), {
      store,
    })
    expect(failedToo.status).toBe('Failed')
    expect(failedToo.messages.map((m) => m.text)).toContain(
      `dpxen: config ${join(dir, 'missing.json')}: not found (check the path given to the hook)`,
    )
  })
})

/**
 * The cmd rules the .cmd wrappers rely on, enough to run their straight-line part: `set "N=V"`
 * (%% is %), %NAME% expanded before a line is parsed, double quotes making & | < > ( ) literal,
 * `if not exist "P" goto L`, `exit /b`. Returns the command line it would run, split as
 * CommandLineToArgvW splits it, or the echo and exit code of the branch taken.
 */
function interpretCmd(
  text: string,
  exists: (path: string) => boolean,
): { run?: string[]; echo?: string; exit?: string } {
  const lines = text.split('\r\n')
  const vars = new Map<string, string>()
  const expand = (line: string): string =>
    line.replace(/%%|%([A-Za-z_][A-Za-z0-9_]*)%|%\*/g, (m, name: string | undefined) =>
      m === '%%' ? '%' : m === '%*' ? '' : (vars.get(name!) ?? ''),
    )
  let echo: string | undefined
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!
    if (/^(@echo off|rem |setlocal$|$)/.test(raw)) continue
    const set = /^set "([A-Z_]+)=(.*)"$/.exec(raw)
    if (set) {
      vars.set(set[1]!, set[2]!.replaceAll('%%', '%'))
      continue
    }
    const line = expand(raw)
    // Outside double quotes, none of cmd's operators but the trailing 2>&1 may appear (parentheses
    // only matter inside a ( ) block, which the wrappers do not use).
    const unquoted = line.replace(/"[^"]*"/g, '').replace(/ 2>&1$/, '')
    expect(unquoted, raw).not.toMatch(/[&|<>^]/)
    const goto = /^if not exist "([^"]*)" goto (\w+)$/.exec(line)
    if (goto) {
      if (!exists(goto[1]!)) i = lines.indexOf(`:${goto[2]}`)
      expect(i, raw).toBeGreaterThan(-1)
      continue
    }
    if (line.startsWith('echo ')) echo = line.slice(5)
    else if (line.startsWith('exit /b ')) return { echo, exit: line.slice(8) }
    else if (line.startsWith('"')) return { run: [...line.matchAll(/"([^"]*)"/g)].map((m) => m[1]!) }
    else throw new Error(`a line the interpreter does not know: ${raw}`)
  }
  throw new Error('fell off the end')
}

describe('dpxen setup (Windows .cmd, as text)', () => {
  const node = 'C:\\Program Files\\node 100%\\node.exe'
  const home = 'D:\\Apps (x86)\\Data Protector & Co'

  it('writes .cmd wrappers into <Data_Protector_home>\\bin whose cmd parse runs node with the hook, paths intact', async () => {
    const prefix = tempDir()
    const result = await setup('--platform', 'windows', '--prefix', prefix, '--dp-home', home, '--node', node)
    expect(result.exitCode, result.stdout).toBe(0)
    const bin = join(prefix, 'D', 'Apps (x86)', 'Data Protector & Co', 'bin')
    for (const name of WRAPPERS) {
      const text = readFileSync(join(bin, `${name}.cmd`), 'utf8')
      expect(text.split('\r\n').every((l) => !l.includes('\n'))).toBe(true)
      expect(text).toContain(' %* 2>&1\r\n')
      const hook = interpretCmd(text, () => true).run!
      expect(hook[0]).toBe(node)
      expect(hook[1]).toMatch(/\\dist\\hooks\\(pre-exec|post-exec|restore-post-exec)\.js$/)
      expect(text).toContain(
        'set "DPXEN_CONFIG=C:\\ProgramData\\OmniBack\\Config\\client\\dpxen\\dpxen.yaml"',
      )
      const missing = interpretCmd(text, (p) => p !== node)
      expect(missing).toEqual({
        echo: `${name}: cannot run Node.js at "${node}" (where dpxen setup found it): install Node.js there, or run dpxen setup again with the node to use`,
        exit: '127',
      })
    }
    const skeleton = readFileSync(
      join(prefix, 'C', 'ProgramData', 'OmniBack', 'Config', 'client', 'dpxen', 'dpxen.yaml'),
      'utf8',
    )
    expect(skeleton).toContain('backupDir: "C:\\\\tmp\\\\backup"\r\n')
    expect(skeleton).toContain(
      'passwordFile: "C:\\\\ProgramData\\\\OmniBack\\\\Config\\\\client\\\\dpxen\\\\password"',
    )
  })
})
