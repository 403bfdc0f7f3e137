// The README's key tables are made from the field table: a key added, renamed or given another
// default shows in the README, or this fails (npm run docs rewrites them).
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { fillKeyTables } from '../../src/config/doc.js'
import { KEYS } from '../../src/config/fields.js'

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')

describe('README configuration tables', () => {
  it('are the ones the field table makes (run npm run docs)', () => {
    expect(readme).toBe(fillKeyTables(readme))
  })

  it('list every key exactly once', () => {
    const rows = [...readme.matchAll(/^\| `(\w+)` \|/gm)].map((m) => m[1])
    for (const key of KEYS)
      expect(
        rows.filter((r) => r === key),
        key,
      ).toHaveLength(1)
  })
})
