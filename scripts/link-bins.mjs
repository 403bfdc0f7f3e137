// After a build: makes every `bin` of package.json directly executable (tsc keeps the shebang,
// not the mode bits) and links it into node_modules/.bin, so `npx --no-install <bin>` finds it
// in a fresh clone (npm links the bins of dependencies there, not the project's own).
import { chmodSync, existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { readFileSync } from 'node:fs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const binDir = join(root, 'node_modules', '.bin')
const linkable = existsSync(join(root, 'node_modules'))
if (linkable) mkdirSync(binDir, { recursive: true })
for (const [name, target] of Object.entries(pkg.bin ?? {})) {
  const file = join(root, target)
  chmodSync(file, 0o755)
  if (!linkable) continue
  if (process.platform === 'win32') {
    writeFileSync(join(binDir, `${name}.cmd`), `@node "%~dp0\\${relative(binDir, file)}" %*\r\n`)
  } else {
    rmSync(join(binDir, name), { force: true })
    symlinkSync(relative(binDir, file), join(binDir, name))
  }
}
