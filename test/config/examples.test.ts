// Every example in config/ is a valid configuration (with its secrets supplied).
import { readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { parseLegacyConfig } from '../../src/config/legacy.js'
import { validateConfig } from '../../src/config/schema.js'
import { tempDir } from '../helpers/hooks.js'

const dir = fileURLToPath(new URL('../../config/', import.meta.url))

describe('example configurations', () => {
  it.each(readdirSync(dir))('config/%s is valid', async (name) => {
    const text = (await import('node:fs')).readFileSync(join(dir, name), 'utf8')
    const raw = name.endsWith('.py')
      ? parseLegacyConfig(text).values
      : (JSON.parse(text) as Record<string, unknown>)
    const secrets = tempDir()
    writeFileSync(join(secrets, 'password'), 'pw')
    // Point file-based secrets and CAs at stand-ins, keep every other key as written.
    const values = { ...raw }
    if (values.passwordFile) values.passwordFile = join(secrets, 'password')
    if (values.caFile) values.caFile = join(secrets, 'password')
    const platform = name.startsWith('windows') ? 'win32' : 'linux'
    const { problems } = validateConfig(values, name, {
      env: { DPXEN_PASSWORD: 'pw' },
      platform,
      baseDir: dir,
    })
    expect(problems).toEqual([])
  })
})
