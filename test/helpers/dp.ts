// A Data Protector backup specification for dp-sim: one filesystem object, the staging folder.
import type { BackupSpec } from '../../simulator/dp/spec.js'

export function backupSpec(staging: string, extra: Partial<BackupSpec> = {}): BackupSpec {
  return {
    name: 'xen',
    client: 'dpclient',
    trees: [staging],
    owner: 'root.sys@dp',
    inactivityTimeout: 900,
    execScriptOnPreview: false,
    ...extra,
  }
}
