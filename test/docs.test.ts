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
})
