// The parts of Vates' npm `xen-api` client (dev dependency, used by the interop tests) that we call.
declare module 'xen-api' {
  import type { Readable } from 'node:stream'
  export interface Xapi {
    connect(): Promise<void>
    disconnect(): Promise<void>
    readonly objectsFetched: Promise<void>
    readonly objects: { all: Record<string, unknown> }
    call(method: string, ...args: unknown[]): Promise<unknown>
    callAsync(method: string, ...args: unknown[]): Promise<unknown>
    getResource(path: string, options: { query: Record<string, string> }): Promise<{ body: Readable }>
    putResource(
      body: Buffer | Readable,
      path: string,
      options: { query: Record<string, string | undefined> },
    ): Promise<unknown>
  }
  export function createClient(options: {
    url: string
    auth: { user: string; password: string }
    allowUnauthorized?: boolean
    watchEvents?: boolean | string[]
  }): Xapi
}
