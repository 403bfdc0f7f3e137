// A XenAPI failure: xapi's error code followed by its parameters, exactly as it goes on the wire.

export class XapiFailure extends Error {
  readonly description: string[]
  /** Raised after a 200 went out: xapi writes its error page into the body (export_raw_vdi). */
  inBody?: boolean
  constructor(code: string, ...params: string[]) {
    super(`${code}(${params.join(', ')})`)
    this.name = 'XapiFailure'
    this.description = [code, ...params]
  }
  get code(): string {
    return this.description[0]!
  }
}

/** xapi's catch-all for failures that have no API error of their own. */
export function toFailure(error: unknown): XapiFailure {
  if (error instanceof XapiFailure) return error
  return new XapiFailure('INTERNAL_ERROR', error instanceof Error ? error.message : String(error))
}
