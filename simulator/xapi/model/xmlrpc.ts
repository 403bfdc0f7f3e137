// XML-RPC as xapi writes it: ocaml-rpc's non-strict printer (untyped <value> strings for
// strings, refs and 64-bit ints; no whitespace; no <fault>s) and a lenient reader.
import { Readable } from 'node:stream'
import Deserializer from 'xmlrpc/lib/deserializer.js'

/** A float, printed as <double> (%.16g) even when integral. */
export class Double {
  constructor(readonly value: number) {}
}
/** A 32-bit int, printed as <i4> (xapi uses it only in event.from's valid_ref_counts). */
export class I4 {
  constructor(readonly value: number) {}
}

/** What the printer accepts. 64-bit ints must already be strings, as on the wire. */
export type Wire = string | boolean | Double | I4 | Date | Wire[] | { [key: string]: Wire }

const ESCAPES: Record<string, string> = { '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' }

/** Escapes like ocaml-rpc: <>&" become entities, control characters but TAB/LF/CR are dropped. */
export function escapeXml(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '').replace(/[<>&"]/g, (c) => ESCAPES[c]!)
}

/** xapi's datetime form: basic ISO 8601 without date hyphens, UTC, `Z`. */
export function formatDateTime(date: Date): string {
  const iso = date.toISOString() // 2025-03-19T04:16:24.000Z
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}T${iso.slice(11, 19)}Z`
}

function formatDouble(value: number): string {
  if (!Number.isFinite(value)) return 'NaN'
  return String(Number(value.toPrecision(16)))
}

/** Prints one value (`<value>…</value>`). */
export function printValue(value: Wire): string {
  if (typeof value === 'string') return `<value>${escapeXml(value)}</value>`
  if (typeof value === 'boolean') return `<value><boolean>${value ? 1 : 0}</boolean></value>`
  if (value instanceof Double) return `<value><double>${formatDouble(value.value)}</double></value>`
  if (value instanceof I4) return `<value><i4>${value.value}</i4></value>`
  if (value instanceof Date)
    return `<value><dateTime.iso8601>${formatDateTime(value)}</dateTime.iso8601></value>`
  if (Array.isArray(value))
    return `<value><array><data>${value.map(printValue).join('')}</data></array></value>`
  let members = ''
  for (const [name, member] of Object.entries(value)) {
    members += `<member><name>${escapeXml(name)}</name>${printValue(member)}</member>`
  }
  return `<value><struct>${members}</struct></value>`
}

/** A methodResponse whose single param is `value`, as xapi sends it. */
export function printResponse(value: Wire): string {
  return `<?xml version="1.0"?><methodResponse><params><param>${printValue(value)}</param></params></methodResponse>`
}

export function printSuccess(value: Wire): string {
  return printResponse({ Status: 'Success', Value: value })
}

export function printFailure(description: string[]): string {
  return printResponse({ Status: 'Failure', ErrorDescription: description })
}

/** Parses a methodCall body; rejects with a parse error on malformed XML. */
export function parseMethodCall(body: Buffer): Promise<{ method: string; params: unknown[] }> {
  return new Promise((resolve, reject) => {
    new Deserializer('utf8').deserializeMethodCall(Readable.from([body]), (error, method, params) => {
      if (error) reject(error instanceof Error ? error : new Error(String(error)))
      else if (typeof method !== 'string') reject(new Error('methodCall without methodName'))
      else resolve({ method, params: params ?? [] })
    })
  })
}

/** Parses a bare `<value>…</value>` fragment (ova.xml, task results). */
export function parseValueFragment(fragment: string): Promise<unknown> {
  const body = `<?xml version="1.0"?><methodResponse><params><param>${fragment}</param></params></methodResponse>`
  return new Promise((resolve, reject) => {
    new Deserializer('utf8').deserializeMethodResponse(Readable.from([Buffer.from(body)]), (error, value) => {
      if (error) reject(error instanceof Error ? error : new Error(String(error)))
      else resolve(value)
    })
  })
}
