// The backup post-exec: deletes what the pre-exec wrote in backupDir (the files its state file
// lists, and the state file) and nothing else, sweeps leftover snapshots of ours, and reports
// the recorded outcome: non-zero when any VM failed, so the session ends "Completed with errors".
import { existsSync } from 'node:fs'
import type { HookContext } from '../hook/context.js'
import { EXIT } from '../hook/exit-codes.js'
import { messageOf } from '../core/errors.js'
import { settleLeftovers } from '../pool/recover.js'
import { connect } from '../xapi/connect.js'
import { removeOurFile, removeStalePartials } from '../staging/files.js'
import type { Run } from '../hook/start.js'
import { prepareParent, startBackupHook } from './one-vm.js'
import { settleBases } from '../pool/base.js'
import { holdStaging } from '../staging/folder.js'
import { readState } from './state.js'
import { STATE_FILE } from '../staging/names.js'

export async function runPostExec(given: HookContext): Promise<number> {
  const hook = await startBackupHook(given, 'post-exec')
  if (!hook) return EXIT.OK
  const { vm, config, log } = hook
  if (hook.session.preview) {
    log.info('dpxen: preview: the post-exec changes nothing')
    return EXIT.OK
  }
  if (!existsSync(config.backupDir)) {
    log.info(`dpxen: ${config.backupDir} does not exist: nothing to clean up (the pre-exec did not run?)`)
    return EXIT.OK
  }
  await prepareParent(config, vm)
  const lock = await holdStaging(config, 'post-exec', hook)
  try {
    return await collect(hook)
  } finally {
    await lock.release()
  }
}

async function collect(hook: Run): Promise<number> {
  const { config, log } = hook
  const state = await readState(config.backupDir)
  let removed = 0
  if (state) {
    for (const file of state.files) if (await removeOurFile(config.backupDir, file)) removed++
  }
  await removeOurFile(config.backupDir, STATE_FILE)
  // Partial files of a run that was killed: with the folder held, nothing else writes them.
  removed += (await removeStalePartials(config.backupDir)).length
  log.info(`dpxen: removed ${removed} file(s) dpxen wrote in ${config.backupDir}`)

  let code: number = EXIT.OK
  try {
    const conn = await connect(config, log, hook)
    try {
      // A run Data Protector kept becomes the VMs' bases before the sweep, which would take this
      // run's snapshots for leftovers.
      if (state && config.incremental) {
        const backedUp = hook.session.backedUp && state.finishedAt !== undefined
        const ok = new Map(state.vms.filter((v) => v.ok).map((v) => [v.uuid, v.name]))
        const settled = await settleBases(conn, { runId: state.runId, ok, backedUp }, log)
        for (const line of settled) log.info(`dpxen: ${line}`)
      }
      const left = await settleLeftovers(conn, log, {
        dir: config.backupDir,
        ...(state ? { stopped: state.stopped ?? [], runId: state.runId } : {}),
      })
      if (left.failed) code = EXIT.VM_FAILED
    } finally {
      await conn.close()
    }
  } catch (error) {
    log.info(`dpxen: warning: could not check the pool for leftover snapshots: ${messageOf(error)}`)
  }

  if (!state) {
    log.info(
      `dpxen: no record of a backup in ${config.backupDir} (the pre-exec did not run, or this ran twice)`,
    )
    return code
  }
  const failures = [
    ...state.vms.filter((v) => !v.ok).map((v) => `${v.name}: ${v.reason ?? 'failed'}`),
    ...state.errors,
  ]
  if (!state.finishedAt) failures.push('the pre-exec did not finish (interrupted?)')
  for (const failure of failures) log.info(`dpxen: FAILED in the backup: ${failure}`)
  if (failures.length) return EXIT.VM_FAILED
  log.info(`dpxen: the backup of ${state.vms.length} VM(s) had no errors`)
  return code
}
