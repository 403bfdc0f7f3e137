// The layering is enforced by the lint (eslint.config.js, LAYERS): an import that runs back up
// fails it. This checks the rule itself, so a change to the configuration cannot quietly turn
// it off: every upward import between src/ folders is refused, every downward one allowed.
import { ESLint } from 'eslint'
import { describe, expect, it } from 'vitest'

const ORDER = ['core', 'config', 'xapi', 'xva', 'staging', 'pool', 'hook', 'backup', 'restore', 'cli']
/** Pairs that are neither above nor below each other: siblings that must not import each other. */
const SIBLINGS = new Set([
  'xapi>xva',
  'xva>xapi',
  'backup>restore',
  'restore>backup',
  'hook>staging',
  'hook>pool',
  'hook>xapi',
  'hook>xva',
  'staging>xapi',
  'staging>xva',
  'xva>config',
  'pool>xva',
])

const eslint = new ESLint({ cwd: new URL('..', import.meta.url).pathname })

async function refused(from: string, to: string): Promise<boolean> {
  const [result] = await eslint.lintText(`import { x } from '../${to}/module.js'\nexport const y = x\n`, {
    filePath: `src/${from}/probe.ts`,
  })
  return result!.messages.some((m) => m.ruleId === 'no-restricted-imports')
}

describe('architecture: imports run one way', () => {
  it('refuses every upward import between src/ folders and allows every downward one', async () => {
    const wrong: string[] = []
    for (const [i, from] of ORDER.entries()) {
      for (const [j, to] of ORDER.entries()) {
        if (from === to) continue
        const allowed = j < i && !SIBLINGS.has(`${from}>${to}`)
        if ((await refused(from, to)) === allowed)
          wrong.push(`${from} -> ${to}: ${allowed ? 'refused' : 'allowed'}`)
      }
    }
    expect(wrong).toEqual([])
  })

  it('refuses an import of the executables from src/', async () => {
    expect(await refused('cli', '../hooks')).toBe(true)
  })
})
