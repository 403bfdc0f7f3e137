// A bare XML-RPC client for tests: sends a methodCall, returns the raw answer and its parsed value.
import { Readable } from 'node:stream'
import { request } from 'undici'
import Deserializer from 'xmlrpc/lib/deserializer.js'
import Serializer from 'xmlrpc/lib/serializer.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

export interface RawAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
  value: unknown
}

export async function rawCall(
  url: string,
  method: string,
  params: unknown[],
  path = '/',
): Promise<RawAnswer> {
  const res = await request(new URL(path, url), {
    method: 'POST',
    body: Serializer.serializeMethodCall(method, params as never[]),
    headers: { 'content-type': 'text/xml' },
  })
  const body = await res.body.text()
  let value: unknown
  if (res.statusCode === 200) {
    value = await new Promise((resolve, reject) =>
      new Deserializer().deserializeMethodResponse(Readable.from([Buffer.from(body)]), (error, v) =>
        error ? reject(error) : resolve(v),
      ),
    )
  }
  return { status: res.statusCode, headers: res.headers, body, value }
}

export type Envelope =
  { Status: 'Success'; Value: unknown } | { Status: 'Failure'; ErrorDescription: string[] }

/** A logged-in session on the simulator, with helpers that unwrap the envelope. */
export class TestClient {
  constructor(
    readonly url: string,
    readonly session: string,
  ) {}

  static async login(url: string, user = 'root', password = SIM_PASSWORD): Promise<TestClient> {
    const answer = (await rawCall(url, 'session.login_with_password', [user, password, '1.1', 'dpxen-test']))
      .value as Envelope
    if (answer.Status !== 'Success') throw new Error(`login failed: ${answer.ErrorDescription.join(' ')}`)
    return new TestClient(url, String(answer.Value))
  }

  /** The whole envelope of a call with this session. */
  async envelope(method: string, ...params: unknown[]): Promise<Envelope> {
    return (await rawCall(this.url, method, [this.session, ...params])).value as Envelope
  }

  /** The Value of a call that must succeed. */
  async call<T = unknown>(method: string, ...params: unknown[]): Promise<T> {
    const answer = await this.envelope(method, ...params)
    if (answer.Status !== 'Success') throw new Error(`${method} failed: ${answer.ErrorDescription.join(' ')}`)
    return answer.Value as T
  }

  /** The ErrorDescription of a call that must fail. */
  async failure(method: string, ...params: unknown[]): Promise<string[]> {
    const answer = await this.envelope(method, ...params)
    if (answer.Status !== 'Failure') throw new Error(`${method} unexpectedly succeeded`)
    return answer.ErrorDescription
  }

  async vmByName(name: string): Promise<string> {
    const refs = await this.call<string[]>('VM.get_by_name_label', name)
    if (refs.length !== 1) throw new Error(`expected one VM named ${name}, found ${refs.length}`)
    return refs[0]!
  }

  /** Waits for a task to finish and returns its record. */
  async waitTask(task: string): Promise<Record<string, unknown>> {
    for (;;) {
      const rec = await this.call<Record<string, unknown>>('task.get_record', task)
      if (rec.status !== 'pending' && rec.status !== 'cancelling') return rec
      await new Promise((r) => setTimeout(r, 20))
    }
  }
}
