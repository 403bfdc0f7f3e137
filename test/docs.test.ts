// The manual (README.md and docs/): its key tables are the ones the field table makes (a key
// added, renamed or given another default shows, or this fails: npm run docs rewrites them),
// every key is listed once, every link inside it leads to a page and a heading that exist, none
// leads out of the package, and it ships in the tarball.
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { fillKeyTables } from '../src/config/doc.js'
import { KEYS } from '../src/config/fields.js'
import { runDpxen } from '../src/cli/dpxen.js'
import { BASE_PREFIX, SNAPSHOT_PREFIX } from '../src/pool/tags.js'
import { run } from './helpers/hooks.js'
import { normalise, sourceMessages } from './helpers/messages.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const pages = [
  'README.md',
  ...readdirSync(join(root, 'docs'))
    .filter((n) => n.endsWith('.md'))
    .map((n) => `docs/${n}`),
]
const text = new Map(pages.map((p) => [p, readFileSync(join(root, p), 'utf8')]))

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function anchor(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-')
}

function anchors(page: string): Set<string> {
  const out = new Set<string>()
  let fenced = false
  for (const line of text.get(page)!.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced
    const h = !fenced && /^#{1,6} (.*)$/.exec(line)
    if (h) out.add(anchor(h[1]!))
  }
  return out
}

describe('the manual', () => {
  it('has key tables made by the field table (run npm run docs), each key listed once', () => {
    for (const [page, body] of text) expect(body, page).toBe(fillKeyTables(body))
    const rows = [...text.values()].flatMap((body) => [...body.matchAll(/^\| `(\w+)` \|/gm)].map((m) => m[1]))
    for (const key of KEYS)
      expect(
        rows.filter((r) => r === key),
        key,
      ).toHaveLength(1)
  })

  it('links only to pages and headings that exist, never out of the package', () => {
    const broken: string[] = []
    for (const [page, body] of text) {
      const stripped = body.replace(/```[\s\S]*?```/g, '')
      for (const [, target] of stripped.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^https?:/.test(target!)) continue
        const [file, hash] = target!.split('#') as [string, string | undefined]
        const to = file === '' ? page : normalize(join(dirname(page), file))
        if (to.startsWith('..') || !text.has(to))
          broken.push(`${page}: ${target} (no such page in the package)`)
        else if (hash && !anchors(to).has(hash)) broken.push(`${page}: ${target} (no such heading)`)
      }
      if (/\.\.\/shared|\bshared\/reference\b/.test(body))
        broken.push(`${page}: names ../shared, which users do not have`)
    }
    expect(broken).toEqual([])
  })

  it('keeps the README short, and ships docs/ in the tarball', () => {
    expect(text.get('README.md')!.split('\n').length).toBeLessThanOrEqual(300)
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { files: string[] }
    expect(pkg.files).toContain('docs')
  })

  it('names only commands that exist: each `dpxen COMMAND` answers --help, each executable is a bin', async () => {
    const said = new Set(sourceMessages(root).map((m) => m.text))
    const commands = new Set<string>()
    const executables = new Set<string>()
    for (const body of text.values()) {
      const code = [...body.matchAll(/```[\s\S]*?```|`[^`\n]+`/g)].map((m) => m[0].replace(/`/g, ''))
      for (const span of code) {
        // A line dpxen prints, or the name it gives a snapshot, is not a command.
        // Nor is a xenstore key (vm-data/dpxen-health-check).
        if (
          said.has(normalise(span)) ||
          span.startsWith(BASE_PREFIX) ||
          span.startsWith(SNAPSHOT_PREFIX) ||
          span.includes('vm-data/')
        )
          continue
        for (const [, name] of span.matchAll(/(?:^|[\s(])dpxen ([a-z][a-z-]*)/gm)) commands.add(name!)
        for (const [, name] of span.matchAll(/(?:^|[\s(/\\])(dpxen-[a-z-]+?)(?:-NAME|\.cmd)?(?=$|[\s)"'])/gm))
          executables.add(name!)
      }
    }
    expect([...commands].sort()).toEqual(
      expect.arrayContaining(['check', 'health-check', 'list', 'recover', 'restore', 'setup', 'verify']),
    )
    for (const command of commands) {
      const answer = await run(runDpxen, [command, '--help'])
      expect(answer.code, `dpxen ${command} --help: ${answer.text}`).toBe(0)
      expect(answer.text).toMatch(new RegExp(`usage: dpxen ${command}`))
    }
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      bin: Record<string, string>
    }
    expect([...executables].filter((e) => !(e in pkg.bin))).toEqual([])
  })

  describe('the troubleshooting page', () => {
    const page = text.get('docs/troubleshooting.md')!
    /** The lines each bullet quotes first (its code spans up to the first plain word), by section. */
    const quoted: { section: string; line: string }[] = []
    let section = ''
    for (const block of page.split(/\n(?=- |#)/)) {
      const heading = /^#{2,} (.*)/.exec(block)
      if (heading) section = heading[1]!
      const lead = /^- ((?:`[^`]+`(?:,\s+)?)+)/.exec(block)
      if (lead)
        for (const [, line] of lead[1]!.matchAll(/`([^`]+)`/g))
          quoted.push({ section, line: normalise(line!) })
    }
    // Sections that quote other things than dpxen's own lines: the shape of a line, xapi's codes.
    const ownLines = quoted.filter((q) => !['Reading a line', 'Refusals from the pool'].includes(q.section))

    it('holds every line in src/ that asks for action (a DpxenError, a warning), word for word', () => {
      const messages = sourceMessages(root)
      expect(messages.length).toBeGreaterThan(80)
      const on = new Set(ownLines.map((q) => q.line))
      const missing = messages.filter((m) => !on.has(m.text)).map((m) => `${m.at} (${m.kind}): ${m.text}`)
      expect(
        missing,
        'add these lines to docs/troubleshooting.md, with what they mean and what to do',
      ).toEqual([])
    })

    it('quotes no line that dpxen no longer prints', () => {
      const said = new Set(sourceMessages(root).map((m) => m.text))
      expect(ownLines.length).toBeGreaterThan(80)
      expect(ownLines.filter((q) => !said.has(q.line)).map((q) => `${q.section}: ${q.line}`)).toEqual([])
    })
  })
})
