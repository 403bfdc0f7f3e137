// The backup post-exec: deletes what the pre-exec wrote in backupDir (the files its state file
// lists, and the state file) and nothing else, sweeps leftover snapshots of ours, and reports
// the recorded outcome: non-zero when any VM failed, so the session ends "Completed with errors".
import { existsSync } from 'node:fs'
import type { HookContext } from '../hook/context.js'
import type { Config } from '../config/schema.js'
import type { Logger } from '../core/log.js'
import { EXIT } from '../hook/exit-codes.js'
import { messageOf } from '../core/errors.js'
import { recoverRestores } from '../pool/journal.js'
import { connect } from '../xapi/connect.js'
import { removeOurFile, removeStalePartials } from '../staging/files.js'
import { askedForHelp, isPreview } from '../hook/start.js'
import { prepareParent, startBackupHook } from './one-vm.js'
import { restartStopped } from '../pool/lifecycle.js'
import { sweepSnapshots } from '../pool/snapshots.js'
import { settleBases } from '../pool/base.js'
import { holdStaging } from '../staging/folder.js'
import { readState } from './state.js'
import { STATE_FILE } from '../staging/names.js'

export async function runPostExec(given: HookContext): Promise<number> {
  if (askedForHelp(given, 'dpxen-post-exec')) return EXIT.OK
  const { ctx, vm, config, log } = await startBackupHook(given, 'post-exec')
  if (isPreview(ctx.env)) {
    log.info('dpxen: preview: the post-exec changes nothing')
    return EXIT.OK
  }
  if (ctx.env.SMEXIT !== undefined) log.debug(`Data Protector session exit code SMEXIT=${ctx.env.SMEXIT}`)
  if (!existsSync(config.backupDir)) {
    log.info(`dpxen: ${config.backupDir} does not exist: nothing to clean up (the pre-exec did not run?)`)
    return EXIT.OK
  }
  await prepareParent(config, vm)
  const lock = await holdStaging(config, 'post-exec', { env: ctx.env, signal: ctx.signal, log })
  try {
    return await collect(ctx, config, log)
  } finally {
    await lock.release()
  }
}

/**
 * Whether Data Protector backed up every file: SMEXIT 0 (session post-exec) or BDACC 0 (object
 * post-exec); without either (run by hand), yes.
 */
function sessionBackedUp(env: NodeJS.ProcessEnv): boolean {
  if (env.SMEXIT !== undefined) return env.SMEXIT === '0'
  if (env.BDACC !== undefined) return env.BDACC === '0'
  return true
}

async function collect(ctx: HookContext, config: Config, log: Logger): Promise<number> {
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
    const conn = await connect(config, log, ctx.signal)
    try {
      for (const line of await recoverRestores(conn, config.backupDir, log)) log.info(line)
      if (state) await restartStopped(conn, log, state.stopped ?? [])
      if (state && config.incremental) {
        const backedUp = sessionBackedUp(ctx.env) && state.finishedAt !== undefined
        const ok = new Map(state.vms.filter((v) => v.ok).map((v) => [v.uuid, v.name]))
        const settled = await settleBases(conn, { runId: state.runId, ok, backedUp }, log)
        for (const line of settled) log.info(`dpxen: ${line}`)
      }
      const swept = await sweepSnapshots(conn, log, {
        ...(state ? { runId: state.runId } : {}),
        ...(ctx.retryDelaysMs ? { delays: ctx.retryDelaysMs } : {}),
      })
      for (const name of swept.destroyed) log.info(`dpxen: removed the leftover snapshot "${name}"`)
      for (const line of swept.failed) log.info(`dpxen: a leftover snapshot could not be removed: ${line}`)
      if (swept.failed.length) code = EXIT.VM_FAILED
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
