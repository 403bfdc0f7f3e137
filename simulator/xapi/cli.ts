#!/usr/bin/env node
// xapi-sim: a XenServer / XCP-ng simulator speaking real XML-RPC and XVA over HTTP.
import { readFileSync } from 'node:fs'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { parseFault } from './faults.js'
import { selfSignedCertificate } from './http/self-signed.js'
import { DEFAULT_PASSWORD, startXapiSim } from './server.js'

const USAGE = `usage: xapi-sim serve [--host H] [--port P] [--state DIR] [--demo | --seed FILE]
                      [--user U] [--password PW] [--checksum xxhash|sha1]
                      [--hosts N] [--auth-delay SECONDS] [--fault SPEC]...
                      [--tls | --tls-cert FILE --tls-key FILE]
  --hosts N: a pool of N hosts, host k at 127.0.0.k on the same port (the first is the master);
             --demo makes three unless told
  --tls: serve https with a self-signed certificate made at start for each host, as a new host does`

const OPTIONS = {
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'string', default: '0' },
  state: { type: 'string' },
  demo: { type: 'boolean', default: false },
  seed: { type: 'string' },
  user: { type: 'string', default: 'root' },
  password: { type: 'string', default: DEFAULT_PASSWORD },
  checksum: { type: 'string', default: 'xxhash' },
  hosts: { type: 'string' },
  'auth-delay': { type: 'string', default: '5' },
  fault: { type: 'string', multiple: true, default: [] as string[] },
  tls: { type: 'boolean', default: false },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
} satisfies ParseArgsConfig['options']

/** serve's options, checked; throws with the line to print. */
function serveOptions(args: string[]) {
  const { values } = parseArgs({ args, options: OPTIONS })
  if (values.checksum !== 'xxhash' && values.checksum !== 'sha1')
    throw new Error('--checksum must be xxhash or sha1')
  if (values.demo && values.seed) throw new Error('--demo and --seed exclude each other')
  for (const spec of values.fault) parseFault(spec)
  if (!/^\d+$/.test(values.port)) throw new Error(`--port must be a number, not "${values.port}"`)
  // --demo is a pool of three hosts unless told otherwise (or given a --host of its own).
  const hosts = values.hosts ?? (values.demo && values.host === '127.0.0.1' ? '3' : '1')
  if (!/^([1-9]|1[0-6])$/.test(hosts)) throw new Error(`--hosts must be 1 to 16, not "${hosts}"`)
  if (hosts !== '1' && values.host !== '127.0.0.1')
    throw new Error('--hosts: a pool of several hosts listens at 127.0.0.1 … 127.0.0.N (leave --host out)')
  if (Boolean(values['tls-cert']) !== Boolean(values['tls-key']))
    throw new Error('--tls-cert and --tls-key go together')
  if (values.tls && values['tls-cert']) throw new Error('--tls and --tls-cert exclude each other')
  return { ...values, hosts: Number(hosts), checksum: values.checksum as 'xxhash' | 'sha1' }
}

/** Starts the pool the options describe, and says where it listens (and its fingerprints with --tls). */
async function serve(values: ReturnType<typeof serveOptions>) {
  const count = values.hosts
  // Members redirect to https, as xapi does: a pool of several hosts always has certificates.
  const made =
    values.tls || (count > 1 && !values['tls-cert'])
      ? await Promise.all(
          Array.from({ length: count }, (_, i) =>
            selfSignedCertificate(
              count === 1 ? [...new Set(['127.0.0.1', 'localhost', values.host])] : [`127.0.0.${i + 1}`],
            ),
          ),
        )
      : undefined
  const sim = await startXapiSim({
    host: values.host,
    port: Number(values.port),
    ...(values.state ? { stateDir: values.state } : {}),
    demo: values.demo,
    ...(values.seed ? { seed: values.seed } : {}),
    user: values.user,
    password: values.password,
    checksum: values.checksum,
    faults: values.fault,
    hosts: count,
    authFailureDelayMs: Number(values['auth-delay']) * 1000,
    ...(values['tls-cert'] && values['tls-key']
      ? { tls: { cert: readFileSync(values['tls-cert']), key: readFileSync(values['tls-key']) } }
      : {}),
    ...(made ? { tls: made } : {}),
    scheme: values.tls || values['tls-cert'] ? 'https' : 'http',
  })
  console.log(`xapi-sim listening on ${sim.url}`)
  if (made && values.tls) console.log(`xapi-sim certificate SHA-256 fingerprint ${made[0]!.fingerprint}`)
  for (const [i, url] of sim.hostUrls.slice(1).entries()) {
    console.log(`xapi-sim pool member listening on ${url}`)
    if (made && values.tls)
      console.log(`xapi-sim member certificate SHA-256 fingerprint ${made[i + 1]!.fingerprint}`)
  }
  console.log(`xapi-sim NBD servers on port ${sim.context.nbd.port} of every host`)
  return sim
}

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2)
  if (command === '--help' || command === '-h') {
    console.log(USAGE)
    return 0
  }
  if (command !== 'serve') {
    console.error(command === undefined ? USAGE : `xapi-sim: unknown command "${command}"\n${USAGE}`)
    return 2
  }
  let values
  try {
    values = serveOptions(rest)
  } catch (error) {
    console.error(`xapi-sim: ${error instanceof Error ? error.message : String(error)}\n${USAGE}`)
    return 2
  }
  const sim = await serve(values)
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve)
    process.once('SIGINT', resolve)
  })
  await sim.close()
  return 0
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`xapi-sim: ${error instanceof Error ? error.message : String(error)}`)
    process.exit(1)
  },
)
