// XML-RPC for the client side: requests with the `xmlrpc` package's serializer, answers with
// our own fast parser (core/xml-parse.ts).
import Serializer from 'xmlrpc/lib/serializer.js'
import { parseResponse, parseValue } from '../core/xml-parse.js'

/** xapi takes 64-bit ints as strings (XO does the same); floats stay <double>. */
function prepare(value: unknown): unknown {
  if (typeof value === 'number' && Number.isInteger(value)) return String(value)
  if (Array.isArray(value)) return value.map(prepare)
  if (value !== null && typeof value === 'object' && !(value instanceof Date)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, prepare(v)]))
  }
  return value
}

export function encodeCall(method: string, params: unknown[]): string {
  return Serializer.serializeMethodCall(method, params.map(prepare) as never[])
}

export async function decodeResponse(body: string): Promise<unknown> {
  return parseResponse(body)
}

/** Parses a bare `<value>` fragment: ova.xml, task results. */
export async function decodeValue(fragment: string): Promise<unknown> {
  return parseValue(fragment)
}

/** The refs in a task result such as `<value>OpaqueRef:…</value>` or an array of them. */
export function refsInResult(result: string): string[] {
  return [...result.matchAll(/OpaqueRef:[0-9a-fA-F-]+/g)]
    .map((m) => m[0])
    .filter((r) => r !== 'OpaqueRef:NULL')
}
