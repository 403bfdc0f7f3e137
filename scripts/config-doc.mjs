// Writes the manual's configuration key tables from the field table (src/config/fields.ts): each
// `<!-- keys: GROUP... -->` … `<!-- /keys -->` block, in README.md and docs/*.md, gets the keys of
// its groups. Run by `npm run docs` (after a build); test/docs.test.ts fails when they differ.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const { fillKeyTables } = await import(join(root, 'build/dev.js'))
const pages = [
  'README.md',
  ...readdirSync(join(root, 'docs'))
    .filter((n) => n.endsWith('.md'))
    .map((n) => `docs/${n}`),
]
for (const page of pages) {
  const path = join(root, page)
  const before = readFileSync(path, 'utf8')
  const after = fillKeyTables(before)
  if (after !== before) writeFileSync(path, after)
  if (after !== before || before.includes('<!-- keys:'))
    console.log(`${page}: key tables ${after === before ? 'up to date' : 'written'}`)
}
