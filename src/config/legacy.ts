// Reads the original integration's DPxen_config.py as it is, without running Python:
// `name = value` assignments of strings, booleans, None, numbers and lists; `#` comments;
// lists may span lines. The white paper's own examples leave the url unquoted, so a bare
// value is taken as a string. Strings are decoded as Python 3 decodes them (escapes, raw and
// triple-quoted strings); what Python would read differently (bytes, f-strings, \N{...}) is
// refused, never taken literally. A problem never shows the text of a password line.

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

const SIMPLE_ESCAPES: Record<string, string> = {
  '\n': '',
  '\\': '\\',
  "'": "'",
  '"': '"',
  a: '\x07',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
  v: '\v',
}

/** Decodes a Python 3 string body's escapes; an error for what dpxen will not guess at. */
function decodeEscapes(body: string): { value: string } | { error: string } {
  let out = ''
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!
    if (c !== '\\') {
      out += c
      continue
    }
    const e = body[++i]
    if (e === undefined) return { error: 'ends with a lone backslash' }
    const simple = SIMPLE_ESCAPES[e]
    if (simple !== undefined) {
      out += simple
      continue
    }
    if (/[0-7]/.test(e)) {
      const digits = /^[0-7]{1,3}/.exec(body.slice(i))![0]
      out += String.fromCodePoint(parseInt(digits, 8))
      i += digits.length - 1
      continue
    }
    const width = e === 'x' ? 2 : e === 'u' ? 4 : e === 'U' ? 8 : 0
    if (width) {
      const hex = body.slice(i + 1, i + 1 + width)
      if (!new RegExp(`^[0-9A-Fa-f]{${width}}$`).test(hex)) return { error: `has a bad \\${e} escape` }
      const code = parseInt(hex, 16)
      if (code > 0x10ffff) return { error: `has a \\${e} escape beyond Unicode` }
      out += String.fromCodePoint(code)
      i += width
      continue
    }
    if (e === 'N') return { error: 'uses a \\N{name} escape (write the character itself)' }
    // Python keeps an unknown escape as it is, backslash included.
    out += `\\${e}`
  }
  return { value: out }
}

/** A Python string literal: undefined if `text` is not one, an error if it is one dpxen refuses. */
function parseString(text: string): { value: string } | { error: string } | undefined {
  const match = /^([A-Za-z]{0,2})('''|"""|'|")([\s\S]*)$/.exec(text)
  if (!match) return undefined
  const [, prefix = '', quote = '', rest = ''] = match
  const raw = /r/i.test(prefix)
  // Where the string ends: the first closing quote not escaped (a raw string's \" is kept, but
  // does not end it either, as in Python).
  let end = -1
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '\\') i++
    else if (rest.startsWith(quote, i)) {
      end = i
      break
    }
  }
  if (end < 0) return { error: 'has an unterminated string' }
  if (end + quote.length !== rest.length)
    return { error: 'is not one string (something follows its closing quote)' }
  const body = rest.slice(0, end)
  const kind = prefix.toLowerCase()
  if (kind === '' || kind === 'u') return decodeEscapes(body)
  if (raw && kind.length === 1) return { value: body }
  return { error: `is a ${prefix}"…" string, which dpxen does not read (use a plain string)` }
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

function parseValue(text: string, secret: boolean): { value: unknown } | { error: string } {
  const t = text.trim()
  const what = (value: string): string => (secret ? 'the value' : value)
  if (t === '') return { error: 'has no value' }
  if (t === 'True' || t === 'False') return { value: t === 'True' }
  if (t === 'None') return { value: undefined }
  if (/^-?\d+(\.\d+)?$/.test(t)) return { value: Number(t) }
  const str = parseString(t)
  if (str !== undefined) return str
  if ((t.startsWith('[') && t.endsWith(']')) || (t.startsWith('(') && t.endsWith(')'))) {
    const items = splitList(t.slice(1, -1))
    const values: unknown[] = []
    for (const item of items) {
      const parsed = parseValue(item, secret)
      if ('error' in parsed) return { error: `list item ${what(item)}: ${parsed.error}` }
      values.push(parsed.value)
    }
    return { value: values }
  }
  if (/^["'[(]/.test(t)) return { error: `cannot read ${what(`the value ${t}`)}` }
  // A bare word such as http://host (the white paper's examples write url unquoted).
  if (/^[^\s"'[\]()]+$/.test(t)) return { value: t }
  return { error: `cannot read ${what(`the value ${t}`)}` }
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
  const firstLine = new Map<string, number>()
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1
    let statement = stripComment(lines[i]!)
    while (bracketDepth(statement) > 0 && i + 1 < lines.length) statement += ` ${stripComment(lines[++i]!)}`
    if (statement.trim() === '') continue
    if (/^\s*(import|from)\s/.test(statement)) continue
    const match = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)(.*)$/.exec(statement)
    if (!match) {
      // Only the first word: the line may be a password written without its `=`.
      const word = /^\s*([A-Za-z_][A-Za-z0-9_]*)/.exec(statement)?.[1]
      problems.push({
        line: start,
        message: `not an assignment (name = value)${word ? `: it starts with ${word}` : ''}`,
      })
      continue
    }
    const first = firstLine.get(match[1]!)
    if (first !== undefined) {
      problems.push({
        line: start,
        message: `${match[1]} is set twice (first on line ${first}): keep one of them`,
      })
      continue
    }
    firstLine.set(match[1]!, start)
    const parsed = parseValue(match[2]!, /pass/i.test(match[1]!))
    if ('error' in parsed) problems.push({ line: start, message: `${match[1]}: ${parsed.error}` })
    else values[match[1]!] = parsed.value
  }
  return { values, problems }
}
