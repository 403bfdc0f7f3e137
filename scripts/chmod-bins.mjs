// Makes every `bin` target of package.json directly executable after a build
// (tsc keeps the shebang but not the mode bits).
import { chmodSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
for (const target of Object.values(pkg.bin ?? {})) {
  chmodSync(join(root, target), 0o755)
}
