// Health checks of the backups in a folder: `dpxen health-check`, or the restore post-exec with
// `healthCheck` (a scheduled Data Protector restore session that becomes a restore test). For
// each VM, the newest backup there (an XVA of either kind, or a chain's newest point) is verified
// as a restore verifies it, then checked (health.ts), one VM at a time. A VM tagged
// dpxen:no-health-check on the pool is skipped, said. One line a VM; each outcome is recorded
// beside the folder (staging/health-record.ts) for `dpxen list`. Any check that fails makes the
// exit code EXIT.HEALTH_FAILED, so Data Protector ends the session Completed with errors.
import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { DpxenError, messageOf } from '../core/errors.js'
import { formatBytes, formatRate } from '../core/format.js'
import { eachTracked } from '../core/progress.js'
import { EXIT } from '../hook/exit-codes.js'
import type { Run } from '../hook/start.js'
import { settleLeftovers } from '../pool/recover.js'
import { NO_HEALTH_CHECK_TAG } from '../pool/tags.js'
import { readPool, type PoolView } from '../pool/view.js'
import { readChainManifests } from '../staging/chain.js'
import { removeOurFile } from '../staging/files.js'
import { holdStaging } from '../staging/folder.js'
import { recordHealthCheck } from '../staging/health-record.js'
import { manifestName } from '../staging/manifest.js'
import { connect } from '../xapi/connect.js'
import type { Host } from '../xapi/host.js'
import { chainPoints, verifyChain, type ChainPoint } from './chain.js'
import type { RestoreContext } from './common.js'
import { copyName, importAsNewVm } from './copy.js'
import { examine, listFiles, type RestoreItem } from './find.js'
import { checkBackup, failedBecause, healthWait, type HealthSubject } from './health.js'
import { rebuildVm } from './rebuild.js'
import { originalSr, resolveSr, type TargetSr } from './target.js'

/** The copy's name: the VM's, and which backup it comes from. */
const COPY_NAME = '{name} [dpxen health check of {date}]'

/** One VM's newest backup in the folder, as a check needs it. */
interface Candidate extends HealthSubject {
  /** How the session line names the backup: "backup of 2026-12-01 01:00 UTC, session …". */
  what: string
  /** The backup, as the record keys it: an XVA's start time, or a chain run's name. */
  backup: string
  session?: string
  /** When it was taken (ms), to pick the newest of a VM's. */
  time: number
  /** Where its first disk was: the copy goes there unless healthCheckSr says otherwise. */
  srUuid?: string
  srName?: string
  /** Verifies its files (before anything is made on the pool). */
  verify(signal: AbortSignal): Promise<void>
  /** Its files in the folder, removed after the check unless keepRestoredFiles. */
  files: string[]
}

const shownTime = (iso: string): string => `${iso.slice(0, 16).replace('T', ' ')} UTC`

function xvaCandidate(item: RestoreItem): Candidate {
  const m = item.manifest
  const started = m?.started ?? ''
  return {
    vmName: item.vmName,
    vmUuid: item.vmUuid,
    diskBytes: item.verified.summary.disks.reduce((sum, d) => sum + d.virtualSize, 0),
    what: `${item.kind === 'snapshot' ? 'online' : 'offline'} backup ${item.file}${started ? ` of ${shownTime(started)}` : ''}`,
    backup: started || item.file,
    ...(m?.dataProtectorSession ? { session: m.dataProtectorSession } : {}),
    time: Date.parse(started) || 0,
    ...(m?.disks[0]?.srUuid ? { srUuid: m.disks[0].srUuid } : {}),
    verify: async () => undefined,
    files: [item.file, manifestName(item.file)],
    makeCopy: (ctx, tags) =>
      importAsNewVm(ctx, item, {
        restore: false,
        name: copyName(COPY_NAME, { ...item, started }),
        tags,
      }),
  }
}

function chainCandidate(point: ChainPoint, dir: string): Candidate {
  const last = point.runs.at(-1)!.manifest
  const files = point.runs.flatMap(({ name, manifest }) => [
    name,
    ...manifest.disks.map((d) => d.file),
    ...(manifest.vmMetadata ? [manifest.vmMetadata.file] : []),
  ])
  return {
    vmName: point.vmName,
    vmUuid: point.vmUuid,
    diskBytes: last.disks.reduce((sum, d) => sum + d.virtualSize, 0),
    what: `incremental run ${last.run} of ${shownTime(last.created)} (${point.runs.length} run(s) of its chain)`,
    backup: `run ${last.run}`,
    ...(last.dataProtectorSession ? { session: last.dataProtectorSession } : {}),
    time: Date.parse(last.created) || 0,
    ...(last.disks[0]?.srName ? { srName: last.disks[0].srName } : {}),
    verify: (signal) => verifyChain(dir, point, signal),
    files,
    makeCopy: async (ctx, tags) => (await rebuildVm(ctx, point, { copy: true, tags })).vm,
  }
}

/**
 * The newest backup of each VM in the folder; files that do not verify are failures already
 * (said, and returned by VM name).
 */
async function candidates(run: Run): Promise<{ found: Candidate[]; damaged: Map<string, string> }> {
  const { config } = run
  const { files, others } = await listFiles(config)
  const all: Candidate[] = []
  const damaged = new Map<string, string>()
  // Progress lines while large files verify: Data Protector aborts a script silent for 15 minutes.
  await eachTracked(
    [...files, ...others],
    {
      log: run.log,
      interval: config.progressInterval,
      signal: run.signal,
      name: (f) => f,
      status: 'verifying',
    },
    async (file, entry) => {
      try {
        const started = performance.now()
        const item = await examine(config.backupDir, file, run.signal, (n) => (entry.bytes = n))
        const seconds = (performance.now() - started) / 1000
        run.log.info(
          `dpxen: ${file}: verified ${formatBytes(item.verified.bytes)} in ${seconds.toFixed(1)} s (${formatRate(item.verified.bytes, seconds)})`,
        )
        all.push(xvaCandidate(item))
      } catch (error) {
        if (!run.signal.aborted) damaged.set(file, messageOf(error))
      }
    },
  )
  if (run.signal.aborted) throw new DpxenError('ABORTED', 'interrupted')
  const { points, problems } = chainPoints(await readChainManifests(config.backupDir))
  for (const p of problems) damaged.set(p.vmName, p.reason)
  all.push(...points.map((p) => chainCandidate(p, config.backupDir)))
  const newest = new Map<string, Candidate>()
  for (const c of all) if ((newest.get(c.vmUuid)?.time ?? -1) < c.time) newest.set(c.vmUuid, c)
  return { found: [...newest.values()].sort((a, b) => a.vmName.localeCompare(b.vmName)), damaged }
}

/** healthCheckSr, else the SR the backup's first disk was on, else the pool's default SR. */
function copySr(view: PoolView, config: Run['config'], c: Candidate): TargetSr {
  if (config.healthCheckSr.trim())
    return resolveSr(view, { ...config, sr: config.healthCheckSr }, 'healthCheckSr')
  const byName = [...view.srs.values()].filter((sr) => c.srName !== undefined && sr.name_label === c.srName)
  const own = originalSr(view, c.srUuid ?? (byName.length === 1 ? String(byName[0]!.uuid) : undefined))
  const usable =
    own && (view.srs.get(own.ref)?.allowed_operations as string[] | undefined)?.includes('vdi_create')
  return usable ? own : resolveSr(view, { ...config, sr: '' }, 'healthCheckSr')
}

export interface HealthOptions {
  /** Only these VMs (names or uuids); every VM with a backup in the folder when empty. */
  vms?: string[]
}

/** The health checks of a folder's backups: the exit code. */
export async function runHealthChecks(run: Run, name: string, options: HealthOptions = {}): Promise<number> {
  const { config, log } = run
  const lock = await holdStaging(config, name, run)
  try {
    const conn = await connect(config, log, run)
    try {
      await settleLeftovers(conn, log, { dir: config.backupDir })
      return await checkAll(run, conn, options)
    } finally {
      await conn.close()
    }
  } finally {
    await lock.release()
  }
}

async function checkAll(run: Run, conn: Host, options: HealthOptions): Promise<number> {
  const { config, log } = run
  const { found, damaged } = await candidates(run)
  const wanted = (c: { vmName: string; vmUuid: string }): boolean =>
    !options.vms?.length || options.vms.some((v) => v === c.vmName || v === c.vmUuid)
  const chosen = found.filter(wanted)
  let failed = 0
  for (const [what, why] of damaged)
    if (!options.vms?.length || options.vms.includes(what)) {
      failed++
      log.info(`dpxen: ${what}: health check FAILED: ${why}`)
    }
  if (chosen.length === 0 && failed === 0)
    throw new DpxenError(
      'VM_FAILED',
      `no backup${options.vms?.length ? ` of ${options.vms.join(', ')}` : ''} in ${config.backupDir} to health-check (restore the files into it with Data Protector first)`,
    )
  const view = await readPool(conn)
  const runId = randomUUID()
  let passed = 0
  await eachTracked(
    chosen,
    {
      log,
      interval: config.progressInterval,
      signal: run.signal,
      name: (c) => c.vmName,
      status: 'verifying',
    },
    async (c, entry) => {
      const outcome = await checkOne(run, conn, view, c, {
        runId,
        onStatus: (s) => (entry.status = s),
      })
      if (outcome === 'passed') passed++
      else if (outcome === 'failed') failed++
    },
  )
  if (run.signal.aborted) throw new DpxenError('ABORTED', 'interrupted')
  if (run.session.preview) return EXIT.OK
  log.info(`dpxen: health checks: ${passed} passed, ${failed} failed`)
  return failed ? EXIT.HEALTH_FAILED : EXIT.OK
}

/** One VM's check, its line and its record: passed, failed, or skipped (tagged, or a preview). */
async function checkOne(
  run: Run,
  conn: Host,
  view: PoolView,
  c: Candidate,
  how: { runId: string; onStatus: (status: string) => void },
): Promise<'passed' | 'failed' | 'skipped'> {
  const { config, log } = run
  const original = [...view.vms.values()].find((vm) => vm.uuid === c.vmUuid)
  if (((original?.tags as string[] | undefined) ?? []).includes(NO_HEALTH_CHECK_TAG)) {
    log.info(`dpxen: ${c.vmName}: health check skipped: the VM is tagged ${NO_HEALTH_CHECK_TAG}`)
    return 'skipped'
  }
  const from = `${c.what}${c.session ? `, Data Protector session ${c.session}` : ''}`
  let result
  try {
    await c.verify(run.signal)
    const target = copySr(view, config, c)
    if (run.session.preview) {
      log.info(
        `dpxen: preview: would health-check ${c.vmName} from ${from}: a copy on SR "${target.name}", started without network, its guest given ${Math.round(healthWait(config, c.diskBytes) / 1000)} s`,
      )
      return 'skipped'
    }
    log.info(`dpxen: ${c.vmName}: health check started from ${from}, the copy on SR "${target.name}"`)
    const ctx: RestoreContext = {
      host: conn,
      log,
      config: {
        ...config,
        restoreAs: 'copy',
        copyName: COPY_NAME,
        originalSr: false,
        startAfterRestore: false,
      },
      view,
      target,
      signal: run.signal,
      onStatus: how.onStatus,
    }
    result = await checkBackup(ctx, c, how.runId)
  } catch (error) {
    if (run.signal.aborted) throw error
    result = failedBecause(messageOf(error))
  }
  const line = `dpxen: ${c.vmName}: health check ${result.passed ? 'passed' : 'FAILED'}: ${result.detail} (${from})`
  log.info(line)
  await recordHealthCheck(config.backupDir, {
    vmName: c.vmName,
    vmUuid: c.vmUuid,
    backup: c.backup,
    ...(c.session ? { session: c.session } : {}),
    checked: new Date().toISOString(),
    passed: result.passed,
    line,
  }).catch((error: unknown) => log.debug(`the health check record could not be written: ${messageOf(error)}`))
  if (!config.keepRestoredFiles) for (const file of c.files) await removeOurFile(config.backupDir, file)
  return result.passed ? 'passed' : 'failed'
}
