// The build: esbuild bundles each executable with everything it imports (dependencies included)
// into dist/, so the package needs nothing from a registry and nothing compiled when it is
// installed. Code shared by several executables goes into dist/chunks/. The bench and the
// project's scripts are bundled into build/ (left out of the package). Type checking is
// `npm run typecheck`'s job: esbuild only strips the types.
//   node scripts/build.mjs [--dev]   (--dev: also build/)
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))

const common = {
  absWorkingDir: root,
  bundle: true,
  platform: 'node',
  format: 'esm',
  // The oldest Node line supported (package.json engines).
  target: 'node20.18',
  // Bundled CommonJS packages call require() for Node's own modules; an ES module has none.
  banner: {
    js: "import { createRequire as __dpxenRequire } from 'node:module'; const require = __dpxenRequire(import.meta.url);",
  },
  define: { __DPXEN_VERSION__: JSON.stringify(pkg.version) },
  // cosmiconfig loads TypeScript only for a dpxen.config.ts, which dpxen does not search for.
  external: ['typescript'],
  // jsonc-parser's `main` is a UMD build whose require() calls esbuild cannot follow.
  alias: { 'jsonc-parser': 'jsonc-parser/lib/esm/main.js' },
  legalComments: 'none',
  metafile: true,
  logLevel: 'warning',
}

/** package.json's bin targets (dist/X.js) plus the demo, each from its X.ts. */
const executables = Object.fromEntries(
  [...Object.values(pkg.bin), 'dist/simulator/dp/demo.js'].map((target) => {
    const name = target.replace(/^dist\//, '').replace(/\.js$/, '')
    return [name, `${name}.ts`]
  }),
)

/** The license of every package bundled into the executables, in one file beside them. */
function writeLicenses(metafile, path) {
  const packages = new Map()
  for (const input of Object.keys(metafile.inputs)) {
    const match = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input)
    if (!match) continue
    const dir = join(root, input.slice(0, match.index + match[0].length))
    packages.set(match[1], dir)
  }
  const parts = [`dpxen ${pkg.version} bundles these packages; their licenses follow.\n`]
  for (const [name, dir] of [...packages].sort(([a], [b]) => a.localeCompare(b))) {
    const meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
    const file = readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(f))
    const text = file ? readFileSync(join(dir, file), 'utf8').trim() : `License: ${meta.license}`
    parts.push(`${'='.repeat(78)}\n${name} ${meta.version} (${meta.license})\n\n${text}\n`)
  }
  writeFileSync(path, parts.join('\n'))
}

rmSync(join(root, 'dist'), { recursive: true, force: true })
const product = await build({
  ...common,
  entryPoints: executables,
  outdir: 'dist',
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
})
writeLicenses(product.metafile, join(root, 'dist', 'THIRD-PARTY-LICENSES.txt'))

if (process.argv.includes('--dev')) {
  rmSync(join(root, 'build'), { recursive: true, force: true })
  await build({
    ...common,
    entryPoints: { bench: 'scripts/bench/main.ts', dev: 'scripts/dev-exports.ts' },
    outdir: 'build',
    splitting: true,
    chunkNames: 'chunks/[name]-[hash]',
    external: [...common.external, 'esbuild'],
  })
}
