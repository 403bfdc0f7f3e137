// XML-RPC encoding for the client side, on top of the `xmlrpc` package's serializer and parser.
import { Readable } from 'node:stream'
import Deserializer from 'xmlrpc/lib/deserializer.js'
import Serializer from 'xmlrpc/lib/serializer.js'

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

function parse(kind: 'response', body: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    new Deserializer('utf8').deserializeMethodResponse(Readable.from([Buffer.from(body)]), (error, value) => {
      if (error) reject(error instanceof Error ? error : new Error(`${kind}: ${String(error)}`))
      else resolve(value)
    })
  })
}

export function decodeResponse(body: string): Promise<unknown> {
  return parse('response', body)
}

/** Parses a bare `<value>` fragment: ova.xml, task results. */
export function decodeValue(fragment: string): Promise<unknown> {
  return parse(
    'response',
    `<?xml version="1.0"?><methodResponse><params><param>${fragment}</param></params></methodResponse>`,
  )
}

/** The refs in a task result such as `<value>OpaqueRef:…</value>` or an array of them. */
export function refsInResult(result: string): string[] {
  return [...result.matchAll(/OpaqueRef:[0-9a-fA-F-]+/g)]
    .map((m) => m[0])
    .filter((r) => r !== 'OpaqueRef:NULL')
}
