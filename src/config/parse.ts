// Parsing a configuration file's text, JSON or YAML, so that what is wrong is said with its line
// and column, and a key set twice is refused naming both lines: the last one would win in
// silence, and `mode` set twice once turned an online backup into one that shuts VMs down.
// A byte-order mark (Notepad writes one) is accepted. Problems never quote the file's text: a
// line may hold a password.
import { parseTree, getNodeValue, printParseErrorCode, type Node, type ParseError } from 'jsonc-parser'
import { isMap, isScalar, parseDocument, visit } from 'yaml'

/** One problem in a configuration's text: its line (1-based), column when known, and what. */
export interface TextProblem {
  line: number
  column?: number
  message: string
}

export class TextError extends Error {
  readonly problems: TextProblem[]
  constructor(problems: TextProblem[]) {
    super(problems[0]?.message ?? 'cannot be parsed')
    this.problems = problems
  }
}

/** A place in a text: the line and column (both 1-based) of an offset. */
export function position(text: string, offset: number): { line: number; column: number } {
  let line = 1
  let start = 0
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++
    start = i + 1
  }
  return { line, column: offset - start + 1 }
}

/** A problem line's place: `line 3, column 7`, or `line 3`. */
export function placeOf(problem: TextProblem): string {
  return problem.column === undefined
    ? `line ${problem.line}`
    : `line ${problem.line}, column ${problem.column}`
}

const JSON_WORDS: Record<string, string> = {
  InvalidSymbol: 'a character JSON does not allow here',
  InvalidNumberFormat: 'a number written wrongly',
  PropertyNameExpected: 'a key in double quotes was expected',
  ValueExpected: 'a value was expected',
  ColonExpected: 'a colon (:) was expected',
  CommaExpected: 'a comma was expected',
  CloseBraceExpected: 'a closing } was expected',
  CloseBracketExpected: 'a closing ] was expected',
  EndOfFileExpected: 'text after the end of the settings',
  InvalidCommentToken: 'a comment, which JSON does not allow (use YAML for comments)',
  UnexpectedEndOfComment: 'a comment that never ends',
  UnexpectedEndOfString: 'a string that never ends (a missing ")',
  UnexpectedEndOfNumber: 'a number that never ends',
  InvalidUnicode: 'a wrong \\u escape',
  InvalidEscapeCharacter: 'a wrong backslash escape (write \\\\ for one backslash)',
  InvalidCharacter: 'a control character inside a string',
}

function jsonProblem(text: string, error: ParseError): TextProblem {
  const before = text.slice(0, error.offset).trimEnd()
  const here = text[error.offset]
  if (before.endsWith(',') && (here === '}' || here === ']'))
    return {
      ...position(text, before.length - 1),
      message: `a comma before ${here}, which JSON does not allow: remove it`,
    }
  const code = printParseErrorCode(error.error)
  return { ...position(text, error.offset), message: JSON_WORDS[code] ?? code }
}

/** Every key of one object given twice or more: the repeat and where the first one was. */
function jsonDuplicates(text: string, node: Node, problems: TextProblem[]): void {
  if (node.type === 'object') {
    const seen = new Map<string, number>()
    for (const property of node.children ?? []) {
      const key = property.children?.[0]
      if (!key || typeof key.value !== 'string') continue
      const line = position(text, key.offset).line
      const first = seen.get(key.value)
      if (first === undefined) seen.set(key.value, line)
      else problems.push(twice(key.value, line, first))
    }
  }
  for (const child of node.children ?? []) jsonDuplicates(text, child, problems)
}

function twice(key: string, line: number, first: number): TextProblem {
  return { line, message: `"${key}" is set twice (first on line ${first}): keep one of them` }
}

/** The value of a JSON text; throws TextError with every syntax problem or repeated key. */
export function parseJsonText(input: string): unknown {
  const text = input.replace(/^\uFEFF/, '')
  const errors: ParseError[] = []
  const tree = parseTree(text, errors, { allowTrailingComma: false, disallowComments: true })
  if (errors.length) throw new TextError([jsonProblem(text, errors[0]!)])
  if (!tree) throw new TextError([{ line: 1, message: 'holds no settings' }])
  const problems: TextProblem[] = []
  jsonDuplicates(text, tree, problems)
  if (problems.length) throw new TextError(problems)
  return getNodeValue(tree)
}

/** The value of a YAML text; throws TextError with its syntax problems or repeated keys. */
export function parseYamlText(input: string): unknown {
  const text = input.replace(/^\uFEFF/, '')
  const doc = parseDocument(text, { uniqueKeys: false, prettyErrors: false })
  if (doc.errors.length) {
    throw new TextError(
      doc.errors.slice(0, 1).map((e) => ({
        ...position(text, e.pos[0]),
        // yaml's own words, without the excerpt of the file it may add.
        message: e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, ''),
      })),
    )
  }
  const problems: TextProblem[] = []
  visit(doc, {
    Map(_, map) {
      if (!isMap(map)) return
      const seen = new Map<string, number>()
      for (const pair of map.items) {
        if (!isScalar(pair.key)) continue
        const key = String(pair.key.value)
        const line = position(text, pair.key.range?.[0] ?? 0).line
        const first = seen.get(key)
        if (first === undefined) seen.set(key, line)
        else problems.push(twice(key, line, first))
      }
    },
  })
  if (problems.length) throw new TextError(problems)
  return doc.toJS()
}
