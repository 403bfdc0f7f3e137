// The backup pre-exec: export the selected VMs into backupDir, one line per VM as it starts and
// ends, a progress line at least every progressInterval, and the outcome recorded in the state
// file for the post-exec. Partial failures keep the exit code 0 (Data Protector still backs up
// the good VMs) unless failSessionOnError is set; nothing exported is an error.
import { promises as fsp } from 'node:fs'
import { performance } from 'node:perf_hooks'
import type { HookContext } from '../hook/context.js'
import { EXIT } from '../hook/exit-codes.js'
import type { Config } from '../config/schema.js'
import { DpxenError, messageOf } from '../core/errors.js'
import { formatBytes, formatRate } from '../core/format.js'
import { type Logger } from '../core/log.js'
import { startTicker, type Active } from '../core/progress.js'
import { recoverRestores } from '../pool/journal.js'
import { allowListeners } from '../core/signals.js'
import { connect } from '../xapi/connect.js'
import type { Host } from '../xapi/host.js'
import { askedForHelp, isPreview } from '../hook/start.js'
import { prepareParent, startBackupHook } from './one-vm.js'
import { restartStopped } from '../pool/lifecycle.js'
import { readPool, type PoolView } from '../pool/view.js'
import { removeOurFile, removeStalePartials } from '../staging/files.js'
import { manifestName } from '../staging/manifest.js'
import { dumpPoolDatabase } from './metadata.js'
import { xvaNames } from '../staging/names.js'
import { selectVms, type VmPlan } from './select.js'
import { sweepSnapshots } from '../pool/snapshots.js'
import { holdStaging } from '../staging/folder.js'
import { newState, readState, writeState, type RunState } from './state.js'
import { JOURNAL_FILE, LOCK_FILE, STATE_FILE } from '../staging/names.js'
import { BACKUP_ENGINES, type VmBackupContext } from './vm.js'
import { backupIncremental } from './incremental.js'

/** Runs `work` over the items with at most `limit` at once. */
async function eachLimited<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++]!)
  })
  await Promise.all(workers)
}

/** Removes what an earlier run left in backupDir: the files its state lists, partial files. */
async function cleanStaging(config: Config, log: Logger, host: Host): Promise<void> {
  const old = await readState(config.backupDir)
  if (old) {
    await restartStopped(host, log, old.stopped ?? [])
    for (const file of old.files) await removeOurFile(config.backupDir, file)
    await removeOurFile(config.backupDir, STATE_FILE)
    log.info(`dpxen: removed the files of an earlier run (${old.startedAt}) that no post-exec cleaned up`)
  }
  for (const partial of await removeStalePartials(config.backupDir))
    log.info(`dpxen: removed the partial file ${partial} of an interrupted run`)
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

async function preview(ctx: HookContext, config: Config, log: Logger): Promise<number> {
  const conn = await connect(config, log, ctx.signal)
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
  if (askedForHelp(given, 'dpxen-pre-exec')) return EXIT.OK
  const { ctx, vm, config, log } = await startBackupHook(given, 'pre-exec')
  if (isPreview(ctx.env)) return preview(ctx, config, log)
  await prepareParent(config, vm)
  const lock = await holdStaging(config, 'pre-exec', { env: ctx.env, signal: ctx.signal, log })
  let staged = false
  try {
    const conn = await connect(config, log, ctx.signal)
    try {
      const code = await backupAll(ctx, config, log, conn)
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

async function backupAll(ctx: HookContext, config: Config, log: Logger, host: Host): Promise<number> {
  await cleanStaging(config, log, host)
  for (const line of await recoverRestores(host, config.backupDir, log)) log.info(line)
  await checkForeign(config, log)
  const pool = await sweepAndRead(ctx, log, host)
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

  const active = new Map<string, Active>()
  const stopTicker = startTicker(log, active, config.progressInterval)
  let saving = Promise.resolve()
  const record = (update: (s: RunState) => void): Promise<void> => {
    update(state)
    saving = saving.then(() => writeState(config.backupDir, state))
    return saving
  }
  const shared = { config, log, host, space: { reserved: 0 }, active, record, runId: state.runId }
  allowListeners(ctx.signal, config.concurrency)
  try {
    await eachLimited(plans, config.concurrency, async (plan) => {
      if (ctx.signal.aborted) return
      await backupOne(ctx, { ...shared, fileName: names.get(plan.uuid)! }, plan)
    })
    if (config.metadata && !ctx.signal.aborted) await saveDatabase(ctx, shared)
  } finally {
    stopTicker()
    await record((s) => (s.finishedAt = new Date().toISOString()))
  }
  if (ctx.signal.aborted) throw new DpxenError('ABORTED', 'interrupted')
  return summarize(config, log, state)
}

/**
 * Removes leftover snapshots of ours and reads the pool, in one read: VM.get_all_records of a
 * large pool is megabytes. Snapshots are never planned, so those the sweep destroys do not
 * matter to the plan.
 */
async function sweepAndRead(ctx: HookContext, log: Logger, host: Host): Promise<PoolView> {
  const pool = await readPool(host)
  const swept = await sweepSnapshots(host, log, {
    vms: pool.vms,
    vdis: pool.vdis,
    ...(ctx.retryDelaysMs ? { delays: ctx.retryDelaysMs } : {}),
  })
  for (const name of swept.destroyed)
    log.info(`dpxen: removed the leftover snapshot "${name}" of an earlier run`)
  for (const line of swept.failed)
    log.info(`dpxen: warning: a leftover snapshot could not be removed: ${line}`)
  return pool
}

/** metadata: the pool database beside the XVA files; a failure is the run's error, not a VM's. */
async function saveDatabase(ctx: HookContext, run: Omit<RunShared, 'fileName'>): Promise<void> {
  try {
    const file = await dumpPoolDatabase(run.host, run.config, run.log, ctx.signal)
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
  active: Map<string, Active>
  record: (update: (s: RunState) => void) => Promise<void>
  fileName: string
  runId: string
}

async function backupOne(ctx: HookContext, run: RunShared, plan: VmPlan): Promise<void> {
  const { log } = run
  const entry: Active = { name: plan.name, status: 'starting', bytes: 0, since: performance.now() }
  run.active.set(plan.uuid, entry)
  log.info(
    `dpxen: ${plan.name}: backup started (${run.config.mode}, ${plan.powerState}, ${plan.disks.length} disk(s), up to ${formatBytes(plan.estimate)})`,
  )
  const vmCtx: VmBackupContext = {
    host: run.host,
    log,
    config: run.config,
    runId: run.runId,
    ...(ctx.env.SESSIONID ? { dataProtectorSession: ctx.env.SESSIONID } : {}),
    ...(ctx.env.MODE ? { dataProtectorLevel: ctx.env.MODE } : {}),
    signal: ctx.signal,
    space: run.space,
    ...(ctx.retryDelaysMs ? { retryDelaysMs: ctx.retryDelaysMs } : {}),
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
  } finally {
    run.active.delete(plan.uuid)
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
