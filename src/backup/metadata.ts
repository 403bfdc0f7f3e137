// The pool database (GET /pool/xmldbdump), saved beside the XVAs when `metadata` is set, as the
// Xen Cloud Platform guide recommends for disaster recovery.
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import type { Config } from '../config/schema.js'
import { DpxenError } from '../core/errors.js'
import { drain, getResource, resourceUrl, type StreamAgents } from '../xapi/http.js'
import type { XapiSession } from '../xapi/session.js'
import { safeName } from '../staging/names.js'
import { PARTIAL_SUFFIX } from '../staging/names.js'

export async function dumpPoolDatabase(
  session: XapiSession,
  agents: StreamAgents,
  config: Config,
  signal: AbortSignal,
): Promise<string> {
  const name = `${safeName(config.server)}_pool-database.xml`
  const path = join(config.backupDir, name)
  const res = await getResource(agents, resourceUrl(session, '/pool/xmldbdump', {}), {
    signal,
    idleMs: config.stallTimeout * 1000,
  })
  if (res.statusCode !== 200) {
    await drain(res)
    throw new DpxenError('EXPORT_FAILED', `the host answered HTTP ${res.statusCode} to the database dump`)
  }
  // Exclusively: a link planted under the partial name is never written through.
  await fsp.rm(path + PARTIAL_SUFFIX, { force: true })
  const handle = await fsp.open(path + PARTIAL_SUFFIX, 'wx', 0o600)
  let done = false
  try {
    for await (const chunk of res) await handle.write(chunk as Buffer)
    await handle.sync()
    done = true
  } finally {
    await handle.close()
    if (!done) await fsp.rm(path + PARTIAL_SUFFIX, { force: true })
  }
  await fsp.rename(path + PARTIAL_SUFFIX, path)
  return name
}
