// undici's Agent and request, loaded without the rest of the package. undici's index loads
// fetch, WebSocket, EventSource, the caches, the mock agents and more: 120 ms of every hook's
// start-up on the benchmark machine, where the two modules used here take 40 ms (timed imports
// on one core; `dpxen --help` went from 370-394 to 285-303 ms). Both are stable parts of
// undici 7, which package-lock.json pins; every test that makes an XML-RPC call fails if they
// move. (Imported by path, the bundler takes just these files into the package.)
import AgentClass from 'undici/lib/dispatcher/agent.js'
import requestWith from 'undici/lib/api/api-request.js'
import type { Dispatcher } from 'undici'

export const Agent = AgentClass

export type { Dispatcher }

/** undici's request(url, options) through `dispatcher`. */
export function request(
  dispatcher: Dispatcher,
  url: string,
  options: Omit<Dispatcher.RequestOptions, 'origin' | 'path'>,
): Promise<Dispatcher.ResponseData> {
  const target = new URL(url)
  return requestWith.call(dispatcher, {
    ...options,
    origin: target.origin,
    path: `${target.pathname}${target.search}`,
  })
}
