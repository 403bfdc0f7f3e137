// dpxen's version, read once from package.json.
import { readFileSync } from 'node:fs'

function readVersion(): string {
  for (const candidate of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(candidate, import.meta.url), 'utf8')) as {
        name?: string
        version?: string
      }
      if (pkg.name === 'dpxen' && pkg.version) return pkg.version
    } catch {
      // try the next place: src/core/ when run from source, dist/src/core/ when built
    }
  }
  return 'unknown'
}

export const VERSION = readVersion()
