// `dpxen check [CONFIG]`: validates the configuration, connects, and reports what the mode
// would back up (disks, snapshot capability, sizes) and whether backupDir has room. Against an
// https host whose certificate is not trusted (or no longer the pinned one) it shows the
// certificate and the exact line to pin it, and goes no further: trust on first use.
// `dpxen verify FILE.xva`: checks an XVA's layout and every checksum (and its manifest's).
// `dpxen list [DIR | CONFIG]`: what a staging folder holds (list.ts).
// `dpxen restore [OPTIONS] [CONFIG]`: the restore post-exec run by hand (restore.ts).
// `dpxen health-check [OPTIONS] [CONFIG]`: proves that backups boot (health.ts).
// `dpxen setup [OPTIONS]`: the wrappers Data Protector runs and a configuration skeleton (setup.ts).
import { existsSync, promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { DpxenError, messageOf } from '../core/errors.js'
import { formatBytes } from '../core/format.js'
import { createLogger } from '../core/log.js'
import { freeSpace } from '../staging/files.js'
import { loadManifest, manifestName, type Manifest } from '../staging/manifest.js'
import { startHook } from '../hook/start.js'
import { settleLeftovers } from '../pool/recover.js'
import { holdStaging } from '../staging/folder.js'
import { readState } from '../backup/state.js'
import { selectVms, snapshotRefusal } from '../backup/select.js'
import { readPool } from '../pool/view.js'
import { PARTIAL_SUFFIX } from '../staging/names.js'
import { fingerprintLine, probeCertificate } from '../xapi/certificate.js'
import { checkHosts, checkNbd } from './hosts.js'
import { connect } from '../xapi/connect.js'
import { FileSink } from '../xva/file-sink.js'
import { verifyFile } from '../xva/verify-file.js'
import type { Config } from '../config/schema.js'
import type { Logger } from '../core/log.js'
import type { HookContext } from '../hook/context.js'
import { EXIT } from '../hook/exit-codes.js'
import { checkAccess } from './access.js'
import { list } from './list.js'
import { healthCommand } from './health.js'
import { restoreCommand } from './restore.js'
import { setupCommand } from './setup.js'

const USAGE =
  'usage: dpxen check [CONFIG] | dpxen list [DIR | CONFIG] | dpxen recover [CONFIG] | dpxen restore [OPTIONS] [CONFIG] | dpxen health-check [OPTIONS] [CONFIG] | dpxen setup [OPTIONS] | dpxen verify FILE.xva'

/** What each command does, for `dpxen COMMAND --help` (restore and setup have their own). */
const HELP: Record<string, string> = {
  check:
    'usage: dpxen check [CONFIG]\n  checks the configuration, the certificate and every host of the pool, and what the mode would back up; changes nothing',
  list: 'usage: dpxen list [DIR | CONFIG]\n  what a folder of backups holds and restores to; changes nothing',
  recover:
    'usage: dpxen recover [CONFIG]\n  finishes or undoes what a killed backup or restore left (snapshots, stopped VMs, half-made disks)',
  verify:
    "usage: dpxen verify FILE.xva\n  checks an XVA's layout and every checksum, and its manifest's; changes nothing",
}

export async function runDpxen(ctx: HookContext): Promise<number> {
  const [command, ...rest] = ctx.args
  const help =
    command !== undefined && Object.hasOwn(HELP, command) && rest.some((a) => a === '--help' || a === '-h')
  if (help) {
    ctx.out(HELP[command]!)
    return EXIT.OK
  }
  if (command === 'check') return check({ ...ctx, args: rest })
  if (command === 'recover') return recover({ ...ctx, args: rest })
  if (command === 'list') return list({ ...ctx, args: rest })
  if (command === 'restore') return restoreCommand({ ...ctx, args: rest })
  if (command === 'health-check') return healthCommand({ ...ctx, args: rest })
  if (command === 'setup') return setupCommand({ ...ctx, args: rest })
  if (command === 'verify' && rest.length === 1) return verify(ctx, rest[0]!)
  if (command === undefined || command === '--help' || command === 'help') {
    ctx.out(USAGE)
    return command === undefined ? EXIT.CONFIG : EXIT.OK
  }
  throw new DpxenError('USAGE', `unknown command "${[command, ...rest].join(' ')}" (${USAGE})`)
}

async function check(ctx: HookContext): Promise<number> {
  const { config, log } = await startHook(ctx, 'check')
  log.info(`configuration ${config.source}: OK (mode ${config.mode}, ${config.url}, user ${config.username})`)
  if (config.url.startsWith('https:') && !(await certificateTrusted(config, log))) {
    log.info('not ready: the certificate is not trusted (nothing was sent to the host)')
    return EXIT.CONNECT
  }
  let problems = await checkAccess(config, log)
  const conn = await connect(config, log, ctx)
  try {
    log.info(`connected to ${conn.url}`)
    problems += await checkHosts(conn, log)
    if (config.cbt) problems += await checkNbd(conn, log)
    const view = await readPool(conn)
    const { plans, problems: missing, skipped } = selectVms(view, config)
    for (const line of skipped) log.info(`skip    ${line}`)
    const online = config.method === 'snapshot'
    let total = 0
    for (const plan of plans) {
      total += plan.estimate
      const blocked = online ? snapshotRefusal(plan) : undefined
      if (blocked) problems++
      log.info(
        `${blocked ? 'PROBLEM' : 'ok     '} ${plan.name} (${plan.uuid}) ${plan.powerState}, up to ${formatBytes(plan.estimate)}`,
      )
      for (const d of plan.disks) {
        log.info(
          `          disk ${d.userdevice}: ${formatBytes(d.virtualSize)} on ${d.srName}, snapshot ${d.canSnapshot ? 'allowed' : 'NOT allowed'}`,
        )
      }
      if (blocked)
        log.info(`          ${blocked}${/offline/.test(blocked) ? '' : ' (use offline mode for it)'}`)
    }
    for (const m of missing) {
      problems++
      log.info(`PROBLEM ${m.reason}`)
    }
    if (existsSync(config.backupDir)) {
      const free = await freeSpace(config.backupDir)
      const room = free >= total
      if (!room) problems++
      log.info(
        `${room ? 'ok     ' : 'PROBLEM'} ${config.backupDir}: ${formatBytes(free)} free, the backup needs up to ${formatBytes(total)}`,
      )
      log.info(`note    ${config.backupDir}: ${await writeMode(config.backupDir, config.directIo)}`)
    } else log.info(`note    ${config.backupDir} does not exist yet; the pre-exec creates it`)
  } finally {
    await conn.close()
  }
  log.info(problems ? `not ready: ${problems} problem(s)` : 'ready')
  return problems ? EXIT.VM_FAILED : EXIT.OK
}

/**
 * `dpxen recover [CONFIG]`: settles what a run killed outright left, without waiting for the
 * next backup or restore: an interrupted restore (journal), VMs a backup stopped, leftover
 * snapshots. It deletes no file in backupDir.
 */
async function recover(ctx: HookContext): Promise<number> {
  const hook = await startHook(ctx, 'recover')
  const { config, log } = hook
  const there = existsSync(config.backupDir)
  if (!there)
    log.info(`dpxen: ${config.backupDir} does not exist: nothing to recover there; checking the pool`)
  const held = there ? await holdStaging(config, 'recover', hook) : undefined
  try {
    const conn = await connect(config, log, hook)
    try {
      const state = held ? await readState(config.backupDir) : undefined
      const { settled, failed } = await settleLeftovers(conn, log, {
        ...(held ? { dir: config.backupDir } : {}),
        stopped: state?.stopped ?? [],
      })
      log.info(
        settled
          ? `dpxen: recovered ${settled} thing(s) an interrupted run left`
          : 'dpxen: nothing to recover',
      )
      return failed ? EXIT.VM_FAILED : EXIT.OK
    } finally {
      await conn.close()
    }
  } finally {
    await held?.release()
  }
}

/** Whether the host's certificate is trusted as configured; if not, says what it is and how to pin it. */
async function certificateTrusted(config: Config, log: Logger): Promise<boolean> {
  const cert = await probeCertificate(config.url, config.caFile ? { caFile: config.caFile } : {})
  if (config.fingerprint ? cert.fingerprint === config.fingerprint : cert.trusted) {
    log.info(`ok      certificate ${cert.fingerprint} (${config.fingerprint ? 'pinned' : 'verified'})`)
    return true
  }
  const day = (d: Date): string => d.toISOString().slice(0, 10)
  if (config.fingerprint) {
    log.info(`PROBLEM the certificate of ${config.url} has changed since it was pinned:`)
    log.info(`          pinned  ${config.fingerprint}`)
    log.info(`          now     ${cert.fingerprint}`)
  } else {
    log.info(`PROBLEM the certificate of ${config.url} is not trusted (${cert.reason ?? 'unverified'}):`)
    log.info(`          SHA-256 ${cert.fingerprint}`)
  }
  log.info(`          subject ${cert.subject}; issuer ${cert.issuer}`)
  log.info(`          valid   ${day(cert.validFrom)} to ${day(cert.validTo)}`)
  log.info(
    "          compare it with the host's own (on the host: openssl x509 -noout -fingerprint -sha256 -in /etc/xensource/xapi-ssl.pem)",
  )
  log.info(
    `          if they are the same, ${config.fingerprint ? 'replace the fingerprint line' : 'add this line'} in ${config.source}:`,
  )
  log.info(`          ${fingerprintLine(config.source, cert.fingerprint)}`)
  return false
}

/** How XVA files would be written in `dir`: tried with one block in a file of its own. */
async function writeMode(dir: string, direct: boolean): Promise<string> {
  if (!direct) return 'XVA files are written through the page cache (directIo: false)'
  const probe = join(dir, `.dpxen-check-${process.pid}${PARTIAL_SUFFIX}`)
  try {
    const sink = await FileSink.open(probe, { flags: 'wx', mode: 0o600, slabSize: 4096, slabs: 2, direct })
    sink.take(Buffer.alloc(4096))
    await sink.close()
    return sink.direct
      ? 'XVA files are written around the page cache (O_DIRECT)'
      : 'XVA files are written through the page cache (this system or file system has no O_DIRECT)'
  } catch (error) {
    return `a test write failed: ${messageOf(error)}`
  } finally {
    await fsp.rm(probe, { force: true })
  }
}

/** The manifest beside a verified file; one that cannot be read as one is refused (exit 6), never quoted. */
async function manifestOf(path: string): Promise<Manifest> {
  return loadManifest(path).catch((error: unknown) => {
    throw new DpxenError('XVA_INVALID', `${messageOf(error)}: remove it to verify the XVA alone`)
  })
}

async function verify(ctx: HookContext, file: string): Promise<number> {
  const log = createLogger({ out: ctx.out, name: 'verify' })
  ctx.useLogger(log)
  if (!existsSync(file)) throw new DpxenError('USAGE', `${file}: no such file`)
  const result = await verifyFile(file, ctx.signal)
  const { summary } = result
  log.info(`${file}: valid XVA of VM ${summary.vm.name} (${summary.vm.uuid})`)
  for (const d of summary.disks) {
    log.info(
      `  disk ${d.userdevice || d.id}: ${formatBytes(d.virtualSize)}, ${d.chunks} chunk(s), ${formatBytes(d.dataBytes)} of data`,
    )
  }
  log.info(
    `  ${formatBytes(result.bytes)} (${result.compression}), checksums ${summary.checksum}: all match; xxh64 ${result.xxh64}`,
  )
  const manifestPath = manifestName(file)
  if (existsSync(manifestPath)) {
    const manifest = await manifestOf(manifestPath)
    if (manifest.file?.xxh64 !== result.xxh64 || manifest.file?.bytes !== result.bytes) {
      throw new DpxenError(
        'XVA_INVALID',
        `${file} does not match its manifest (size or XXH64 differ): the file was changed or damaged`,
      )
    }
    log.info('  matches its manifest')
  }
  return EXIT.OK
}
