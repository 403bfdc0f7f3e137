// The restore post-exec: Data Protector has put the selected XVA files back into backupDir;
// this puts them back into the pool. Every file is verified end to end before the pool is
// touched; each VM gets one line with its outcome; any failure makes the exit code non-zero.
// The files stay (the backup post-exec, or the administrator, removes them).
import { performance } from 'node:perf_hooks'
import type { HookContext } from '../hook/context.js'
import { EXIT } from '../hook/exit-codes.js'
import { DpxenError, messageOf } from '../core/errors.js'
import { formatBytes, formatRate } from '../core/format.js'
import { startTicker, type Active } from '../core/progress.js'
import { askedForHelp, isPreview, startHook } from '../hook/start.js'
import { readPool } from '../pool/view.js'
import { connect } from '../xapi/connect.js'
import type { RestoreContext } from './common.js'
import { examine, listFiles, type RestoreItem } from './find.js'
import { recoverRestores } from '../pool/journal.js'
import { holdStaging } from '../staging/folder.js'
import type { Config } from '../config/schema.js'
import type { Logger } from '../core/log.js'
import { restoreOffline } from './offline.js'
import { restoreOnline } from './online.js'
import { resolveSr } from './target.js'

export async function runRestorePostExec(ctx: HookContext): Promise<number> {
  if (askedForHelp(ctx, 'dpxen-restore-post-exec')) return EXIT.OK
  const { config, log } = await startHook(ctx, 'restore-post-exec')
  const online = config.mode === 'online' || config.mode === 'allOnline'
  const { files, others } = await listFiles(config)
  if (files.length === 0) {
    const kind = online ? 'online (…_Snapshot.xva)' : 'offline'
    const hint = others.length
      ? `; it holds ${online ? 'offline' : 'online'} backups (${others.join(', ')}): set mode to ${online ? 'offline or allOffline' : 'online or allOnline'} to restore them`
      : ' (select the files in the Data Protector restore, with backupDir as the destination)'
    log.info(`dpxen: no ${kind} backup files in ${config.backupDir}${hint}`)
    return EXIT.VM_FAILED
  }
  const lock = await holdStaging(config.backupDir, 'restore-post-exec', {
    session: ctx.env.SESSIONID,
    lockTimeout: config.lockTimeout,
    signal: ctx.signal,
    log,
  })
  try {
    return await restoreFiles(ctx, config, log, files, others)
  } finally {
    await lock.release()
  }
}

async function restoreFiles(
  ctx: HookContext,
  config: Config,
  log: Logger,
  files: string[],
  others: string[],
): Promise<number> {
  const online = config.mode === 'online' || config.mode === 'allOnline'
  const conn = await connect(config, log, ctx.signal)
  try {
    for (const line of await recoverRestores(conn.session, config.backupDir, log)) log.info(line)
    const view = await readPool(conn.session)
    const target = resolveSr(view, config)
    const failures: string[] = []
    const fail = (name: string, reason: string): void => {
      failures.push(name)
      log.info(`dpxen: ${name}: FAILED: ${reason}`)
    }

    // Verify every file first: a damaged file fails its VM before anything changes. Progress
    // lines go on meanwhile: a terabyte of files is long minutes of reading, and Data Protector
    // aborts a script silent for 15.
    const items: RestoreItem[] = []
    const verifying = new Map<string, Active>()
    const stopVerifyTicker = startTicker(log, verifying, config.progressInterval)
    for (const file of files) {
      if (ctx.signal.aborted) break
      const entry: Active = { name: file, status: 'verifying', bytes: 0, since: performance.now() }
      verifying.set(file, entry)
      try {
        const started = performance.now()
        const item = await examine(config.backupDir, file, ctx.signal, (n) => (entry.bytes = n))
        const seconds = (performance.now() - started) / 1000
        log.info(
          `dpxen: ${file}: verified ${formatBytes(item.verified.bytes)} in ${seconds.toFixed(1)} s (${formatRate(item.verified.bytes, seconds)})`,
        )
        items.push(item)
      } catch (error) {
        if (error instanceof DpxenError && error.code === 'ABORTED') break
        fail(file, `${messageOf(error)}; the pool is unchanged`)
      } finally {
        verifying.delete(file)
      }
    }
    stopVerifyTicker()
    let chosen = items
    if (config.mode === 'online' || config.mode === 'offline') {
      chosen = []
      for (const name of config.vmName) {
        const mine = items.filter((i) => i.vmName === name || i.vmUuid === name)
        if (mine.length === 1) chosen.push(mine[0]!)
        else if (mine.length > 1)
          fail(
            name,
            `several files hold backups of ${name} (${mine.map((i) => i.file).join(', ')}); keep one in ${config.backupDir}`,
          )
        else {
          const hint = others.length
            ? ` (${config.backupDir} also holds ${online ? 'offline' : 'online'} backups: is mode right?)`
            : ''
          fail(
            name,
            `no ${online ? 'online' : 'offline'} backup file for ${name} in ${config.backupDir}: select it in the Data Protector restore${hint}`,
          )
        }
      }
    }
    if (isPreview(ctx.env)) {
      for (const item of chosen)
        log.info(`dpxen: preview: would restore ${item.vmName} from ${item.file} into SR "${target.name}"`)
      return EXIT.OK
    }

    const active = new Map<string, Active>()
    const stopTicker = startTicker(log, active, config.progressInterval)
    try {
      for (const item of chosen) {
        if (ctx.signal.aborted) break
        const entry: Active = { name: item.vmName, status: 'starting', bytes: 0, since: performance.now() }
        active.set(item.vmUuid, entry)
        const rctx: RestoreContext = {
          session: conn.session,
          agents: conn.agents,
          log,
          config,
          view,
          target,
          signal: ctx.signal,
          ...(ctx.retryDelaysMs ? { retryDelaysMs: ctx.retryDelaysMs } : {}),
          onStatus: (s) => (entry.status = s),
        }
        log.info(
          `dpxen: ${item.vmName}: restore started from ${item.file} (${online ? 'disks' : 'whole VM'})`,
        )
        try {
          const outcome = await (online ? restoreOnline : restoreOffline)(rctx, item)
          log.info(`dpxen: ${item.vmName}: ${outcome.summary}`)
        } catch (error) {
          if (error instanceof DpxenError && error.code === 'ABORTED') throw error
          fail(item.vmName, messageOf(error))
          log.debug(error instanceof Error ? (error.stack ?? '') : String(error))
        } finally {
          active.delete(item.vmUuid)
        }
      }
    } finally {
      stopTicker()
    }
    if (ctx.signal.aborted) throw new DpxenError('ABORTED', 'interrupted')
    const ok = chosen.length - failures.filter((f) => chosen.some((c) => c.vmName === f)).length
    if (failures.length) {
      log.info(`dpxen: restore finished with ${failures.length} failure(s); ${ok} VM(s) restored`)
      return EXIT.VM_FAILED
    }
    log.info(`dpxen: all ${ok} VM(s) restored`)
    return EXIT.OK
  } finally {
    await conn.close()
  }
}
