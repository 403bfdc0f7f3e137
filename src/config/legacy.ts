// Reads the original integration's DPxen_config.py as it is, without running Python:
// `name = value` assignments of strings, booleans, None, numbers and lists; `#` comments;
// lists may span lines. The white paper's own examples leave the url unquoted, so a bare
// value is taken as a string.

export interface LegacyProblem {
  line: number
  message: string
}

export interface LegacyResult {
  values: Record<string, unknown>
  problems: LegacyProblem[]
}

/** Strips a # comment that is outside quotes. */
function stripComment(line: string): string {
  let quote: string | undefined
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!
    if (quote) {
      if (c === '\\') i++
      else if (c === quote) quote = undefined
    } else if (c === '"' || c === "'") quote = c
    else if (c === '#') return line.slice(0, i)
  }
  return line
}

function parseString(text: string): string | undefined {
  const match = /^(?:[rRuU])?("([^"\\]|\\.)*"|'([^'\\]|\\.)*')$/.exec(text)
  if (!match) return undefined
  const body = match[1]!.slice(1, -1)
  if (/^[rR]/.test(text)) return body
  return body.replace(
    /\\(.)/g,
    (_m, c: string) => ({ n: '\n', t: '\t', '\\': '\\', '"': '"', "'": "'" })[c] ?? `\\${c}`,
  )
}

function splitList(inner: string): string[] {
  const items: string[] = []
  let current = ''
  let quote: string | undefined
  for (let i = 0; i < inner.length; i++) {
    const c = inner[i]!
    if (quote) {
      current += c
      if (c === '\\') current += inner[++i] ?? ''
      else if (c === quote) quote = undefined
    } else if (c === '"' || c === "'") {
      quote = c
      current += c
    } else if (c === ',') {
      items.push(current.trim())
      current = ''
    } else current += c
  }
  if (current.trim()) items.push(current.trim())
  return items
}

function parseValue(text: string): { value: unknown } | { error: string } {
  const t = text.trim()
  if (t === '') return { error: 'has no value' }
  if (t === 'True' || t === 'False') return { value: t === 'True' }
  if (t === 'None') return { value: undefined }
  if (/^-?\d+(\.\d+)?$/.test(t)) return { value: Number(t) }
  const str = parseString(t)
  if (str !== undefined) return { value: str }
  if ((t.startsWith('[') && t.endsWith(']')) || (t.startsWith('(') && t.endsWith(')'))) {
    const items = splitList(t.slice(1, -1))
    const values: unknown[] = []
    for (const item of items) {
      const parsed = parseValue(item)
      if ('error' in parsed) return { error: `list item ${item}: ${parsed.error}` }
      values.push(parsed.value)
    }
    return { value: values }
  }
  if (/^["'[(]/.test(t)) return { error: `cannot read the value ${t}` }
  // A bare word such as http://host (the white paper's examples write url unquoted).
  if (/^[^\s"'[\]()]+$/.test(t)) return { value: t }
  return { error: `cannot read the value ${t}` }
}

function bracketDepth(text: string): number {
  let depth = 0
  let quote: string | undefined
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (quote) {
      if (c === '\\') i++
      else if (c === quote) quote = undefined
    } else if (c === '"' || c === "'") quote = c
    else if (c === '[' || c === '(') depth++
    else if (c === ']' || c === ')') depth--
  }
  return depth
}

/** Parses the text of a DPxen_config.py. Keys are returned as written. */
export function parseLegacyConfig(text: string): LegacyResult {
  const values: Record<string, unknown> = {}
  const problems: LegacyProblem[] = []
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1
    let statement = stripComment(lines[i]!)
    while (bracketDepth(statement) > 0 && i + 1 < lines.length) statement += ` ${stripComment(lines[++i]!)}`
    if (statement.trim() === '') continue
    if (/^\s*(import|from)\s/.test(statement)) continue
    const match = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)(.*)$/.exec(statement)
    if (!match) {
      problems.push({ line: start, message: `not an assignment: ${statement.trim()}` })
      continue
    }
    const parsed = parseValue(match[2]!)
    if ('error' in parsed) problems.push({ line: start, message: `${match[1]}: ${parsed.error}` })
    else values[match[1]!] = parsed.value
  }
  return { values, problems }
}
