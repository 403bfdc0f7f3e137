// One VM as a Data Protector object of its own (`dpxen-pre-exec --vm NAME`, as the object's
// pre-exec; `dpxen-post-exec --vm NAME`, as its post-exec): the VM is exported into its own
// folder under backupDir, which is the object Data Protector backs up, and the post-exec empties
// it before the next object's pre-exec runs. The staging folder then holds one VM at a time.
import { dirname, join } from 'node:path'
import type { Config } from '../config/schema.js'
import type { HookContext } from '../hook/context.js'
import { beginHook, type Run } from '../hook/start.js'
import { prepareStaging } from '../staging/folder.js'
import { safeName } from '../staging/names.js'

/** The configuration for one VM: that VM only, staged in its own folder under backupDir. */
export function forOneVm(config: Config, vm: string | undefined): Config {
  if (vm === undefined) return config
  return {
    ...config,
    mode: config.method === 'snapshot' ? 'online' : 'offline',
    allVms: false,
    vmName: [vm],
    backupDir: join(config.backupDir, safeName(vm)),
  }
}

/** Before a VM's folder is made or used: its parent, backupDir, must be safe as well. */
export async function prepareParent(config: Config, vm: string | undefined): Promise<void> {
  if (vm !== undefined) await prepareStaging(dirname(config.backupDir))
}

/**
 * How the backup hooks start (beginHook), the configuration narrowed to one VM when --vm names
 * one; undefined when --help was answered.
 */
export async function startBackupHook(
  given: HookContext,
  name: 'pre-exec' | 'post-exec',
): Promise<(Run & { vm?: string }) | undefined> {
  const run = await beginHook(given, name)
  return run && { ...run, config: forOneVm(run.config, run.vm) }
}
