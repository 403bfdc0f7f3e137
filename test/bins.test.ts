// Every executable of package.json is runnable by `npx --no-install` and directly.
import { readFileSync, statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))
const bins = Object.entries(
  JSON.parse(readFileSync(`${root}/package.json`, 'utf8')).bin as Record<string, string>,
)

describe('executables', () => {
  it.each(bins)('%s runs with npx --no-install and is executable', async (name, target) => {
    expect(statSync(`${root}/${target}`).mode & 0o111).toBe(0o111)
    const result = await execa('npx', ['--no-install', name, '--help'], {
      cwd: root,
      reject: false,
      env: { PATH: process.env.PATH },
    })
    expect(result.stderr).not.toMatch(/not found/)
    expect(result.exitCode).toBe(0)
    expect(result.stdout).toMatch(/^usage: /)
  })
})
