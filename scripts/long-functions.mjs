// Lists the functions longer than a limit (60 lines by default), longest first:
//
//   node scripts/long-functions.mjs [--limit 60] [--check] [FOLDER...]   (default: src)
//
// A long function may stay when the comment before it says why, in a sentence starting
// "Long because". With --check (npm run lint) an unexplained one in the folders fails.
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { parseArgs } from 'node:util'
import ts from 'typescript'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { limit: { type: 'string', default: '60' }, check: { type: 'boolean', default: false } },
})
const limit = Number(values.limit)
const roots = positionals.length ? positionals : ['src']

function* files(path) {
  if (statSync(path).isDirectory()) for (const name of readdirSync(path)) yield* files(join(path, name))
  else if (path.endsWith('.ts')) yield path
}

function nameOf(node, source) {
  if (node.name) return node.name.getText(source)
  if (ts.isConstructorDeclaration(node)) return 'constructor'
  const parent = node.parent
  if (parent && ts.isVariableDeclaration(parent)) return parent.name.getText(source)
  if (parent && ts.isPropertyAssignment(parent)) return parent.name.getText(source)
  if (parent && ts.isCallExpression(parent))
    return `(callback of ${parent.expression.getText(source).slice(0, 40)})`
  return '(anonymous)'
}

const found = []
for (const root of roots) {
  for (const file of files(root)) {
    const text = readFileSync(file, 'utf8')
    const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true)
    const visit = (node) => {
      if (ts.isFunctionLike(node) && node.body) {
        const start = source.getLineAndCharacterOfPosition(node.getStart(source)).line
        const end = source.getLineAndCharacterOfPosition(node.getEnd()).line
        const lines = end - start + 1
        if (lines > limit) {
          // The comments before the function (or before the statement that holds it).
          let holder = node
          while (
            holder.parent &&
            !ts.isSourceFile(holder.parent) &&
            !ts.isBlock(holder.parent) &&
            !ts.isClassLike(holder.parent)
          )
            holder = holder.parent
          const comments = (ts.getLeadingCommentRanges(text, holder.getFullStart()) ?? [])
            .map((c) => text.slice(c.pos, c.end))
            .join('\n')
          const why = /Long because/i.test(comments)
          found.push({ where: `${relative('.', file)}:${start + 1}`, name: nameOf(node, source), lines, why })
        }
      }
      ts.forEachChild(node, visit)
    }
    visit(source)
  }
}
found.sort((a, b) => b.lines - a.lines)
for (const f of found)
  console.log(`${String(f.lines).padStart(4)}  ${f.where}  ${f.name}${f.why ? '  (explained)' : ''}`)
const unexplained = found.filter((f) => !f.why)
console.log(
  `${found.length} function(s) over ${limit} lines in ${roots.join(', ')}; ${unexplained.length} without a reason`,
)
if (values.check && unexplained.length) process.exit(1)
