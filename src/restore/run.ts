// The restore post-exec: Data Protector has put the selected XVA files back into backupDir;
// this puts them back into the pool. Every file is verified end to end before the pool is
// touched; each VM gets one line with its outcome; any failure makes the exit code non-zero.
// Each restored VM's file and manifest are then removed (keepRestoredFiles keeps them).
import { performance } from 'node:perf_hooks'
import type { Config, Method } from '../config/schema.js'
import { DpxenError, messageOf } from '../core/errors.js'
import { formatBytes, formatRate, type Ms } from '../core/format.js'
import type { Logger } from '../core/log.js'
import { eachTracked, type Active } from '../core/progress.js'
import type { HookContext } from '../hook/context.js'
import { EXIT } from '../hook/exit-codes.js'
import { beginHook, startHook, type Run } from '../hook/start.js'
import { settleLeftovers } from '../pool/recover.js'
import { readPool } from '../pool/view.js'
import { removeOurFile } from '../staging/files.js'
import { holdStaging } from '../staging/folder.js'
import { manifestName } from '../staging/manifest.js'
import { readChainManifests } from '../staging/chain.js'
import { connect } from '../xapi/connect.js'
import type { Host } from '../xapi/host.js'
import type { RestoreContext, RestoreOutcome } from './common.js'
import { restoreCopy } from './copy.js'
import { chainPoints, restoreChain, verifyChain, type ChainPoint } from './chain.js'
import { examine, listFiles, type RestoreItem } from './find.js'
import { runHealthChecks } from './health-run.js'
import { restoreOffline } from './offline.js'
import { restoreOnline } from './online.js'
import { resolveSr, type TargetSr } from './target.js'

/** The restore engine of each kind of backup (the mode's method). */
const RESTORE_ENGINES: Record<Method, (ctx: RestoreContext, item: RestoreItem) => Promise<RestoreOutcome>> = {
  snapshot: restoreOnline,
  shutdown: restoreOffline,
}

/** The two kinds of backup file, as the session messages name them. */
const KIND: Record<Method, string> = { snapshot: 'online', shutdown: 'offline' }
const OTHER: Record<Method, Method> = { snapshot: 'shutdown', shutdown: 'snapshot' }

/** One restore's run, and its failures (one line each, as they happen). */
interface RestoreRun extends Run {
  failures: string[]
  fail(name: string, reason: string): void
}

export async function runRestorePostExec(ctx: HookContext): Promise<number> {
  const hook = await beginHook(ctx, 'restore-post-exec', { forRestore: true })
  return hook ? restoreWith(hook, 'restore-post-exec') : EXIT.OK
}

/**
 * The restore, as the post-exec runs it or `dpxen restore` by hand: the configuration's
 * `restore` section applies, then `overrides` (the command line's values).
 */
export async function runRestore(
  ctx: HookContext,
  name: string,
  options: { overrides?: Record<string, unknown>; preview?: boolean } = {},
): Promise<number> {
  return restoreWith(await startHook(ctx, name, { forRestore: true, ...options }), name)
}

/** The restore, once its run has started: the files found and checked, then each restored. */
async function restoreWith(hook: Run, name: string): Promise<number> {
  const { config, log } = hook
  // A restore session scheduled as a restore test: the backups are checked, not restored.
  if (config.healthCheck) return runHealthChecks(hook, name)
  const { files, others } = await listFiles(config)
  const chains = config.method === 'snapshot' ? await readChainManifests(config.backupDir) : []
  if (files.length === 0 && chains.length === 0) return noFiles(config, log, others)
  const lock = await holdStaging(config, name, hook)
  const failures: string[] = []
  const run: RestoreRun = {
    ...hook,
    failures,
    fail: (name, reason) => {
      failures.push(name)
      log.info(`dpxen: ${name}: FAILED: ${reason}`)
    },
  }
  try {
    const conn = await connect(config, log, run)
    try {
      // What an interrupted restore in this folder left is settled once, before anything else.
      await settleLeftovers(conn, log, {
        dir: config.backupDir,
      })
      const code = chains.length ? await restoreChains(run, conn, chains) : EXIT.OK
      if (files.length === 0) return code
      return Math.max(code, await restoreFiles(run, conn, files, others))
    } finally {
      await conn.close()
    }
  } finally {
    await lock.release()
  }
}

/** Incremental backups: each VM's newest run present, its chain verified, then rebuilt. */
async function restoreChains(
  run: RestoreRun,
  conn: Host,
  found: Awaited<ReturnType<typeof readChainManifests>>,
): Promise<number> {
  const { config, log } = run
  const wanted = (name: string, uuid: string): boolean =>
    config.allVms || config.vmName.some((n) => n === name || n === uuid)
  const { points, problems } = chainPoints(found)
  for (const p of problems) if (wanted(p.vmName, '')) run.fail(p.vmName, p.reason)
  const view = await readPool(conn)
  const target = resolveSr(view, config)
  let restored = 0
  // A line every progressInterval while chains verify and disks are written: Data Protector
  // aborts a script silent for 15 minutes.
  await eachTracked(
    points.filter((p) => wanted(p.vmName, p.vmUuid)),
    { ...tracking(run), name: (point) => point.vmName, status: 'verifying its files' },
    async (point, entry) => {
      try {
        const runs = found.filter((f) => f.manifest.vm.uuid === point.vmUuid)
        if (await restorePoint(run, restoreContext(run, conn, { view, target }, entry), point, runs))
          restored++
      } catch (error) {
        if (error instanceof DpxenError && error.code === 'ABORTED') throw error
        run.fail(point.vmName, messageOf(error))
      }
    },
  )
  if (run.signal.aborted) throw new DpxenError('ABORTED', 'interrupted')
  if (run.failures.length) return EXIT.VM_FAILED
  log.info(`dpxen: ${restored} VM(s) restored from incremental backups`)
  return EXIT.OK
}

/**
 * One VM's point: its chain verified, then (unless a preview) its disks rebuilt and the files of
 * every run of the VM in backupDir removed: the point's, and those of older chains a Data
 * Protector restore chain brought back with them.
 */
async function restorePoint(
  run: RestoreRun,
  rctx: RestoreContext,
  point: ChainPoint,
  all: ChainPoint['runs'],
): Promise<boolean> {
  const { config, log } = run
  const runs = point.runs.map((r) => r.manifest.run)
  await verifyChain(config.backupDir, point, run.signal)
  if (run.session.preview) {
    log.info(`dpxen: preview: would rebuild the disks of ${point.vmName} from runs ${runs.join(', ')}`)
    return false
  }
  log.info(
    `dpxen: ${point.vmName}: restore started from run ${runs.at(-1)} (chain of ${runs.length} run(s), verified)`,
  )
  const outcome = await restoreChain(rctx, point)
  log.info(`dpxen: ${point.vmName}: ${outcome.summary}`)
  if (!config.keepRestoredFiles)
    for (const { name, manifest } of all) {
      for (const disk of manifest.disks) await removeOurFile(config.backupDir, disk.file)
      if (manifest.vmMetadata) await removeOurFile(config.backupDir, manifest.vmMetadata.file)
      await removeOurFile(config.backupDir, name)
    }
  return true
}

/** The context a VM's restore works in; its status lines go to `entry` (the progress ticker). */
function restoreContext(
  run: RestoreRun,
  conn: Host,
  pool: { view: RestoreContext['view']; target: TargetSr },
  entry: Active,
): RestoreContext {
  return {
    host: conn,
    log: run.log,
    config: run.config,
    ...pool,
    signal: run.signal,
    onStatus: (s) => (entry.status = s),
  }
}

/** No file of the mode's kind: says what backupDir holds and what to change. */
function noFiles(config: Config, log: Logger, others: string[]): number {
  const hint = others.length
    ? `; it holds ${KIND[OTHER[config.method]]} backups (${others.join(', ')}): set mode to ${config.method === 'snapshot' ? 'offline or allOffline' : 'online or allOnline'} to restore them`
    : ' (select the files in the Data Protector restore, with backupDir as the destination)'
  log.info(`dpxen: no ${KIND[config.method]} backup files in ${config.backupDir}${hint}`)
  return EXIT.VM_FAILED
}

async function restoreFiles(run: RestoreRun, conn: Host, files: string[], others: string[]): Promise<number> {
  const { config, log } = run
  const view = await readPool(conn)
  const target = resolveSr(view, config)
  const verified = await verifyAll(run, files)
  const mine = verified.filter((item) => item.kind === config.method)
  others.push(...verified.filter((item) => item.kind !== config.method).map((item) => item.file))
  if (mine.length === 0 && verified.length > 0) return noFiles(config, log, others)
  const chosen = choose(run, mine, others)
  if (run.session.preview) {
    for (const item of chosen)
      log.info(
        `dpxen: preview: would restore ${item.vmName} from ${item.file}${config.restoreAs === 'copy' ? ' as a copy' : ''} into SR "${target.name}"`,
      )
    return EXIT.OK
  }
  await restoreEach(run, conn, { view, target }, chosen)
  if (run.signal.aborted) throw new DpxenError('ABORTED', 'interrupted')
  const ok = chosen.length - run.failures.filter((f) => chosen.some((c) => c.vmName === f)).length
  if (run.failures.length) {
    log.info(`dpxen: restore finished with ${run.failures.length} failure(s); ${ok} VM(s) restored`)
    return EXIT.VM_FAILED
  }
  log.info(`dpxen: all ${ok} VM(s) restored`)
  return EXIT.OK
}

/**
 * Verifies every file first: a damaged file fails its VM before anything changes. Progress
 * lines go on meanwhile: a terabyte of files is long minutes of reading, and Data Protector
 * aborts a script silent for 15.
 */
async function verifyAll(run: RestoreRun, files: string[]): Promise<RestoreItem[]> {
  const { config, log } = run
  const items: RestoreItem[] = []
  await eachTracked(
    files,
    { ...tracking(run), name: (file) => file, status: 'verifying' },
    async (file, entry) => {
      try {
        const started = performance.now()
        const item = await examine(config.backupDir, file, run.signal, (n) => (entry.bytes = n))
        const seconds = (performance.now() - started) / 1000
        log.info(
          `dpxen: ${file}: verified ${formatBytes(item.verified.bytes)} in ${seconds.toFixed(1)} s (${formatRate(item.verified.bytes, seconds)})`,
        )
        items.push(item)
      } catch (error) {
        // An abort ends the loop: the signal stops eachTracked before the next file.
        if (error instanceof DpxenError && error.code === 'ABORTED') return
        run.fail(file, `${messageOf(error)}; the pool is unchanged`)
      }
    },
  )
  return items
}

/** The items to restore: all of them (allOnline, allOffline), else one file for each vmName. */
function choose(run: RestoreRun, items: RestoreItem[], others: string[]): RestoreItem[] {
  const { config } = run
  if (config.allVms) return items
  const kind = KIND[config.method]
  const chosen: RestoreItem[] = []
  for (const name of config.vmName) {
    const mine = items.filter((i) => i.vmName === name || i.vmUuid === name)
    if (mine.length === 1) chosen.push(mine[0]!)
    else if (mine.length > 1)
      run.fail(
        name,
        `several files hold backups of ${name} (${mine.map((i) => i.file).join(', ')}); keep one in ${config.backupDir}`,
      )
    else {
      const hint = others.length
        ? ` (${config.backupDir} also holds ${KIND[OTHER[config.method]]} backups: is mode right?)`
        : ''
      run.fail(
        name,
        `no ${kind} backup file for ${name} in ${config.backupDir}: select it in the Data Protector restore${hint}`,
      )
    }
  }
  return chosen
}

/**
 * Removes a restored VM's file and manifest from backupDir, so the next backup does not store
 * them again nor a later restore take them for new (keepRestoredFiles keeps them).
 */
async function removeRestored(config: Config, item: RestoreItem, log: Logger): Promise<void> {
  const removed = [await removeOurFile(config.backupDir, item.file)]
  removed.push(await removeOurFile(config.backupDir, manifestName(item.file)))
  if (removed[0])
    log.info(
      `dpxen: ${item.vmName}: removed ${item.file} from ${config.backupDir} (keepRestoredFiles: true keeps it)`,
    )
}

/** Restores the items one after the other, a line for each outcome and progress meanwhile. */
async function restoreEach(
  run: RestoreRun,
  conn: Host,
  pool: { view: RestoreContext['view']; target: TargetSr },
  items: RestoreItem[],
): Promise<void> {
  const { config, log } = run
  await eachTracked(items, { ...tracking(run), name: (item) => item.vmName }, async (item, entry) => {
    const rctx = restoreContext(run, conn, pool, entry)
    const how =
      config.restoreAs === 'copy' ? 'as a copy' : config.method === 'snapshot' ? 'disks' : 'whole VM'
    log.info(`dpxen: ${item.vmName}: restore started from ${item.file} (${how})`)
    try {
      const engine = config.restoreAs === 'copy' ? restoreCopy : RESTORE_ENGINES[config.method]
      const outcome = await engine(rctx, item)
      log.info(`dpxen: ${item.vmName}: ${outcome.summary}`)
      if (!config.keepRestoredFiles) await removeRestored(config, item, log)
    } catch (error) {
      if (error instanceof DpxenError && error.code === 'ABORTED') throw error
      run.fail(item.vmName, messageOf(error))
      log.debug(error instanceof Error ? (error.stack ?? '') : String(error))
    }
  })
}

/** How a restore's loops show progress: every progressInterval, stopping on the run's signal. */
function tracking(run: RestoreRun): { log: Logger; interval: Ms; signal: AbortSignal } {
  return { log: run.log, interval: run.config.progressInterval, signal: run.signal }
}
