// Writes the README's configuration key tables from the field table (src/config/fields.ts):
// each `<!-- keys: GROUP... -->` … `<!-- /keys -->` block gets the keys of its groups.
// Run by `npm run docs` (after a build); test/config/readme.test.ts fails when they differ.
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const { fillKeyTables } = await import(join(root, 'build/dev.js'))
const path = join(root, 'README.md')
const before = readFileSync(path, 'utf8')
const after = fillKeyTables(before)
if (after !== before) writeFileSync(path, after)
console.log(after === before ? 'README.md: key tables up to date' : 'README.md: key tables written')
