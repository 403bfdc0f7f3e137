// The pool database (GET /pool/xmldbdump), saved beside the XVAs when `metadata` is set, as the
// Xen Cloud Platform guide recommends for disaster recovery.
import type { Config } from '../config/schema.js'
import type { Logger } from '../core/log.js'
import type { Host } from '../xapi/host.js'
import { bytesOnly } from '../xva/check.js'
import { safeName } from '../staging/names.js'
import { transferToFile } from './export.js'

export async function dumpPoolDatabase(
  host: Host,
  config: Config,
  log: Logger,
  signal: AbortSignal,
): Promise<string> {
  const name = `${safeName(config.server)}_pool-database.xml`
  await transferToFile(host, log, {
    label: 'the pool database',
    dir: config.backupDir,
    fileName: name,
    signal,
    direct: false,
    path: '/pool/xmldbdump',
    query: {},
    verifier: bytesOnly(),
  })
  return name
}
