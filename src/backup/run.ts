// The backup pre-exec: export the selected VMs into backupDir, one line per VM as it starts and
// ends, a progress line at least every progressInterval, and the outcome recorded in the state
// file for the post-exec. Partial failures keep the exit code 0 (Data Protector still backs up
// the good VMs) unless failSessionOnError is set; nothing exported is an error.
import { promises as fsp } from 'node:fs'
import type { HookContext } from '../hook/context.js'
import { EXIT } from '../hook/exit-codes.js'
import type { Config } from '../config/schema.js'
import { DpxenError, messageOf } from '../core/errors.js'
import { formatBytes, formatRate } from '../core/format.js'
import { type Logger } from '../core/log.js'
import { eachTracked, type Active } from '../core/progress.js'
import { settleLeftovers } from '../pool/recover.js'
import { allowListeners } from '../core/signals.js'
import { connect } from '../xapi/connect.js'
import type { Host } from '../xapi/host.js'
import type { Run } from '../hook/start.js'
import { prepareParent, startBackupHook } from './one-vm.js'
import { removeOurFile, removeStalePartials } from '../staging/files.js'
import { manifestName } from '../staging/manifest.js'
import { dumpPoolDatabase } from './metadata.js'
import { readPool } from '../pool/view.js'
import { xvaNames } from '../staging/names.js'
import { selectVms, type VmPlan } from './select.js'
import { holdStaging } from '../staging/folder.js'
import { newState, readState, writeState, type RunState } from './state.js'
import { JOURNAL_FILE, LOCK_FILE, STATE_FILE } from '../staging/names.js'
import { BACKUP_ENGINES, type VmBackupContext } from './vm.js'
import { backupIncremental } from './incremental.js'

/**
 * Removes what an earlier run left in backupDir: the files its state lists, partial files.
 * Returns the VMs that run stopped, for settleLeftovers to start again.
 */
async function cleanStaging(config: Config, log: Logger): Promise<{ uuid: string; name: string }[]> {
  const old = await readState(config.backupDir)
  if (old) {
    for (const file of old.files) await removeOurFile(config.backupDir, file)
    await removeOurFile(config.backupDir, STATE_FILE)
    log.info(`dpxen: removed the files of an earlier run (${old.startedAt}) that no post-exec cleaned up`)
  }
  for (const partial of await removeStalePartials(config.backupDir))
    log.info(`dpxen: removed the partial file ${partial} of an interrupted run`)
  return old?.stopped ?? []
}

/**
 * Refuses a backupDir that holds files this run did not write (a restore's kept files, someone's
 * copy): Data Protector would back them up with this session, and a restore would take them
 * for backups. allowForeignFiles goes on, saying which.
 */
async function checkForeign(config: Config, log: Logger): Promise<void> {
  const ours = new Set([LOCK_FILE, JOURNAL_FILE, STATE_FILE])
  const foreign = (await fsp.readdir(config.backupDir)).filter((name) => !ours.has(name)).sort()
  if (foreign.length === 0) return
  const shown =
    foreign.length > 10
      ? `${foreign.slice(0, 10).join(', ')} and ${foreign.length - 10} more`
      : foreign.join(', ')
  if (config.allowForeignFiles) {
    log.info(
      `dpxen: warning: ${config.backupDir} also holds ${shown}; they are backed up with this session (allowForeignFiles)`,
    )
    return
  }
  throw new DpxenError(
    'STAGING_UNSAFE',
    `${config.backupDir} holds files this backup did not write: ${shown} (Data Protector would back them up with the VMs): move or remove them, or set allowForeignFiles: true`,
  )
}

async function preview(hook: Run): Promise<number> {
  const { config, log } = hook
  const conn = await connect(config, log, hook)
  try {
    const { plans, problems, skipped } = selectVms(await readPool(conn), config)
    log.info(
      `dpxen: preview: mode ${config.mode} would back up ${plans.length} VM(s) to ${config.backupDir}; nothing is changed`,
    )
    for (const plan of plans)
      log.info(
        `dpxen: preview: ${plan.name} (${plan.powerState}, ${plan.disks.length} disk(s), up to ${formatBytes(plan.estimate)})`,
      )
    for (const p of problems) log.info(`dpxen: preview: ${p.reason}`)
    for (const line of skipped) log.info(`dpxen: preview: ${line}`)
    return EXIT.OK
  } finally {
    await conn.close()
  }
}

export async function runPreExec(given: HookContext): Promise<number> {
  const hook = await startBackupHook(given, 'pre-exec')
  if (!hook) return EXIT.OK
  const { vm, config, log } = hook
  if (hook.session.preview) return preview(hook)
  await prepareParent(config, vm)
  const lock = await holdStaging(config, 'pre-exec', hook)
  let staged = false
  try {
    const conn = await connect(config, log, hook)
    try {
      const code = await backupAll(hook, conn)
      // The files wait for Data Protector's backup and this session's post-exec.
      await lock.stage()
      staged = true
      return code
    } finally {
      await conn.close()
    }
  } finally {
    if (!staged) await lock.release()
  }
}

async function backupAll(hook: Run, host: Host): Promise<number> {
  const { config, log } = hook
  const stopped = await cleanStaging(config, log)
  // One read of the pool serves the sweep and the plan (VM.get_all_records of a large pool is
  // megabytes); snapshots are never planned, so those the sweep destroys do not matter to it.
  const { pool } = await settleLeftovers(host, log, {
    dir: config.backupDir,
    stopped,
    readPool: true,
  })
  await checkForeign(config, log)
  const { plans, problems, skipped } = selectVms(pool, config)
  for (const line of skipped) log.info(`dpxen: ${line}`)
  const state = newState(config.mode)
  for (const p of problems) {
    state.vms.push({ name: p.name, uuid: '', ok: false, reason: p.reason })
    log.info(`dpxen: ${p.name}: FAILED: ${p.reason}`)
  }
  await writeState(config.backupDir, state)
  const names = xvaNames(config.server, plans, config.method === 'snapshot')
  log.info(
    `dpxen: ${config.mode} backup of ${plans.length} VM(s) from ${config.server} to ${config.backupDir}`,
  )

  let saving = Promise.resolve()
  const record = (update: (s: RunState) => void): Promise<void> => {
    update(state)
    saving = saving.then(() => writeState(config.backupDir, state))
    return saving
  }
  const shared = { config, log, host, space: { reserved: 0 }, record, runId: state.runId }
  allowListeners(hook.signal, config.concurrency)
  try {
    await eachTracked(
      plans,
      {
        log,
        interval: config.progressInterval,
        signal: hook.signal,
        concurrency: config.concurrency,
        name: (plan) => plan.name,
      },
      (plan, entry) => backupOne(hook, { ...shared, fileName: names.get(plan.uuid)! }, plan, entry),
    )
    if (config.metadata && !hook.signal.aborted) await saveDatabase(hook, shared)
  } finally {
    await record((s) => (s.finishedAt = new Date().toISOString()))
  }
  if (hook.signal.aborted) throw new DpxenError('ABORTED', 'interrupted')
  return summarize(config, log, state)
}

/** metadata: the pool database beside the XVA files; a failure is the run's error, not a VM's. */
async function saveDatabase(hook: Run, run: Omit<RunShared, 'fileName'>): Promise<void> {
  try {
    const file = await dumpPoolDatabase(run.host, run.config, run.log, hook.signal)
    await run.record((s) => s.files.push(file))
    run.log.info(`dpxen: saved the pool database as ${file}`)
  } catch (error) {
    await run.record((s) => s.errors.push(`pool database: ${messageOf(error)}`))
    run.log.info(`dpxen: FAILED to save the pool database: ${messageOf(error)}`)
  }
}

interface RunShared {
  config: Config
  log: Logger
  host: Host
  space: { reserved: number }
  record: (update: (s: RunState) => void) => Promise<void>
  fileName: string
  runId: string
}

async function backupOne(hook: Run, run: RunShared, plan: VmPlan, entry: Active): Promise<void> {
  const { log } = run
  log.info(
    `dpxen: ${plan.name}: backup started (${run.config.mode}, ${plan.powerState}, ${plan.disks.length} disk(s), up to ${formatBytes(plan.estimate)})`,
  )
  const vmCtx: VmBackupContext = {
    host: run.host,
    log,
    config: run.config,
    runId: run.runId,
    ...(hook.session.id ? { dataProtectorSession: hook.session.id } : {}),
    ...(hook.session.level ? { dataProtectorLevel: hook.session.level } : {}),
    signal: hook.signal,
    space: run.space,
    onStopping: (p, stopping) =>
      run.record((s) => {
        s.stopped = (s.stopped ?? []).filter((v) => v.uuid !== p.uuid)
        if (stopping) s.stopped.push({ uuid: p.uuid, name: p.name })
      }),
    intend: (files) => run.record((s) => s.files.push(...files.filter((f) => !s.files.includes(f)))),
    onBytes: (n) => (entry.bytes = n),
    onStatus: (s) => (entry.status = s),
  }
  try {
    // Recorded before they exist: a run killed right after a rename leaves no file that the
    // post-exec does not know of. (An incremental run records its own files as it names them.)
    if (!run.config.incremental) {
      const intended = [run.fileName, manifestName(run.fileName)]
      await run.record((s) => s.files.push(...intended.filter((f) => !s.files.includes(f))))
    }
    const engine = run.config.incremental ? backupIncremental : BACKUP_ENGINES[run.config.method]
    const result = await engine(vmCtx, plan, run.fileName)
    await run.record((s) => {
      s.files.push(...result.files.filter((f) => !s.files.includes(f)))
      s.vms.push({ name: plan.name, uuid: plan.uuid, ok: true, file: result.written })
    })
    const { bytes, seconds } = result.export
    log.info(
      `dpxen: ${plan.name}: done, ${formatBytes(bytes)} in ${seconds.toFixed(1)} s (${formatRate(bytes, seconds)}) -> ${result.written}`,
    )
  } catch (error) {
    const reason = error instanceof DpxenError && error.code === 'ABORTED' ? 'interrupted' : messageOf(error)
    await run.record((s) => s.vms.push({ name: plan.name, uuid: plan.uuid, ok: false, reason }))
    log.info(`dpxen: ${plan.name}: FAILED: ${reason}`)
    log.debug(error instanceof Error ? (error.stack ?? reason) : reason)
  }
}

function summarize(config: Config, log: Logger, state: RunState): number {
  const ok = state.vms.filter((v) => v.ok).length
  const failed = state.vms.length - ok + state.errors.length
  if (state.vms.length === 0) {
    log.info(`dpxen: no VM to back up (mode ${config.mode})`)
    return EXIT.VM_FAILED
  }
  if (failed === 0) {
    log.info(`dpxen: all ${ok} VM(s) backed up`)
    return EXIT.OK
  }
  if (ok === 0) {
    log.info(`dpxen: nothing was backed up: ${failed} failure(s), see above`)
    return EXIT.VM_FAILED
  }
  if (config.failSessionOnError) {
    log.info(`dpxen: ${ok} VM(s) backed up, ${failed} failure(s); failing the session (failSessionOnError)`)
    return EXIT.VM_FAILED
  }
  log.info(
    `dpxen: ${ok} VM(s) backed up, ${failed} failure(s); the post-exec will report them (session: Completed with errors)`,
  )
  return EXIT.OK
}
