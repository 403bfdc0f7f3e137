declare module 'xmlrpc/lib/deserializer.js' {
  import type { Readable } from 'node:stream'
  export default class Deserializer {
    constructor(encoding?: string)
    deserializeMethodCall(
      stream: Readable,
      callback: (error: unknown, method?: string, params?: unknown[]) => void,
    ): void
    deserializeMethodResponse(stream: Readable, callback: (error: unknown, value?: unknown) => void): void
  }
}

declare module 'xmlrpc/lib/serializer.js' {
  const Serializer: { serializeMethodCall(method: string, params: never[]): string }
  export default Serializer
}
