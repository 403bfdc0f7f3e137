// The lines dpxen can put in a Data Protector session that ask for action, read from its sources
// with TypeScript's own parser: every DpxenError's message (the `VM: FAILED: …` line, or a hook's
// last line) and every warning and failure a hook logs (`dpxen: warning: …`, `dpxen: …: FAILED …`). Interpolations become `…`, and
// a message chosen by a condition counts as each of its branches. The troubleshooting page
// (docs/troubleshooting.md) must hold each of them; test/docs.test.ts checks that it does.
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import ts from 'typescript'

export interface SourceMessage {
  /** The message with each interpolation as `…`. */
  text: string
  /** The error code (for a DpxenError) or 'warning'. */
  kind: string
  /** file:line, for the test's failure message. */
  at: string
}

/** The message's possible texts, or none when it is not written out here (a variable, a call). */
function texts(node: ts.Expression): string[] {
  if (ts.isParenthesizedExpression(node)) return texts(node.expression)
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return [node.text]
  if (ts.isTemplateExpression(node)) {
    // A span whose expression is itself a written-out choice (`${a ? 'x' : 'y'}`) stays one `…`.
    return [node.head.text + node.templateSpans.map((s) => `…${s.literal.text}`).join('')]
  }
  if (ts.isConditionalExpression(node)) return [...texts(node.whenTrue), ...texts(node.whenFalse)]
  if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.PlusToken) {
    const left = texts(node.left)
    const right = texts(node.right)
    return (left.length ? left : ['…']).flatMap((l) => (right.length ? right : ['…']).map((r) => l + r))
  }
  return []
}

/** Collapses what a reader cannot tell apart: runs of `…`, spaces. */
export function normalise(text: string): string {
  return text
    .replace(/…(\s*…)+/g, '…')
    .replace(/\s+/g, ' ')
    .trim()
}

function* files(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) yield* files(path)
    else if (entry.name.endsWith('.ts')) yield path
  }
}

export function sourceMessages(root: string): SourceMessage[] {
  const out: SourceMessage[] = []
  for (const path of files(join(root, 'src'))) {
    const source = ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.Latest, true)
    const at = (node: ts.Node): string =>
      `${relative(root, path)}:${source.getLineAndCharacterOfPosition(node.getStart()).line + 1}`
    const visit = (node: ts.Node): void => {
      if (ts.isNewExpression(node) && node.expression.getText() === 'DpxenError' && node.arguments) {
        const [code, message] = node.arguments
        if (code && message && ts.isStringLiteral(code))
          for (const text of texts(message))
            out.push({ text: normalise(text), kind: code.text, at: at(node) })
      }
      // CBT's reasons for falling back (backup/cbt.ts), each printed within a warning line.
      if (ts.isNewExpression(node) && node.expression.getText() === 'CbtUnusable' && node.arguments?.[0])
        for (const text of texts(node.arguments[0]))
          out.push({ text: normalise(text), kind: 'cbt', at: at(node) })
      // A health check's reasons (restore/health.ts), each printed within its FAILED line.
      if (ts.isCallExpression(node) && node.expression.getText() === 'failedBecause' && node.arguments[0])
        for (const text of texts(node.arguments[0]))
          out.push({ text: normalise(text), kind: 'health', at: at(node) })
      if (
        ts.isCallExpression(node) &&
        ts.isPropertyAccessExpression(node.expression) &&
        node.expression.name.text === 'info' &&
        node.arguments[0]
      )
        for (const text of texts(node.arguments[0]))
          if (/^dpxen: (…: )?(warning|FAILED)\b/.test(text))
            out.push({
              text: normalise(text),
              kind: /FAILED/.test(text) ? 'failed' : 'warning',
              at: at(node),
            })
      ts.forEachChild(node, visit)
    }
    visit(source)
  }
  return out
}
