// dpxen's version: written into the bundle when it is built (scripts/build.mjs), read from
// package.json when the sources run as they are (tests).
import { readFileSync } from 'node:fs'

declare const __DPXEN_VERSION__: string | undefined

function readVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      name?: string
      version?: string
    }
    if (pkg.name === 'dpxen' && pkg.version) return pkg.version
  } catch {
    // not beside the sources
  }
  return 'unknown'
}

export const VERSION = typeof __DPXEN_VERSION__ === 'string' ? __DPXEN_VERSION__ : readVersion()
