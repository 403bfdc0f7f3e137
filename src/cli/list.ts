// `dpxen list [DIR | CONFIG]`: what a staging folder holds, from the manifests, without reading
// the files: each backup's VM, kind, time, Data Protector session, size and whether its
// checksums were verified as it streamed; incremental runs by VM and the point each VM can be
// restored to; when each backup was last health-checked (the record beside the folder); files
// dpxen would not recognise; who holds the folder.
import { existsSync, promises as fsp, statSync } from 'node:fs'
import { join } from 'node:path'
import { MODES } from '../config/schema.js'
import { formatBytes } from '../core/format.js'
import type { HookContext } from '../hook/context.js'
import { EXIT } from '../hook/exit-codes.js'
import { startHook } from '../hook/start.js'
import { isOurName } from '../staging/files.js'
import { describeHolder } from '../staging/folder.js'
import { readManifest } from '../staging/manifest.js'
import { readChainManifests } from '../staging/chain.js'
import { lastCheckOf, readHealthChecks, type HealthCheck } from '../staging/health-record.js'
import { chainPoints } from '../restore/chain.js'
import { cannotRebuild } from '../restore/rebuild.js'

/** When the backup was last health-checked and how it went (staging/health-record.ts). */
function healthOf(checks: HealthCheck[], backup: { vmUuid: string; backup: string }): string {
  const last = lastCheckOf(checks, backup)
  if (!last) return 'never health-checked'
  return `health check ${last.passed ? 'passed' : 'FAILED'} on ${last.checked.slice(0, 16).replace('T', ' ')} UTC`
}

/** One line for an XVA file, from its manifest. */
async function describe(
  dir: string,
  name: string,
  checks: HealthCheck[],
): Promise<{ line: string; bytes: number }> {
  const bytes = (await fsp.stat(join(dir, name))).size
  const manifest = await readManifest(join(dir, name))
  if (!manifest)
    return {
      line: `${name}: ${formatBytes(bytes)}, no manifest (dpxen verify ${name} checks the file)`,
      bytes,
    }
  const kind = MODES[manifest.mode]?.method === 'snapshot' ? 'online' : 'offline'
  const sizeOk =
    manifest.file.bytes === bytes ? '' : ` (the manifest says ${manifest.file.bytes} bytes: damaged?)`
  const parts = [
    `${manifest.vm.name} (${manifest.vm.uuid})`,
    `${kind} backup of ${manifest.started.slice(0, 16).replace('T', ' ')} UTC from ${manifest.server}`,
    manifest.dataProtectorSession
      ? `Data Protector session ${manifest.dataProtectorSession}`
      : 'not from a Data Protector session',
    `${formatBytes(bytes)}${sizeOk}`,
    manifest.file.checksumsVerified
      ? 'checksums verified as it was written'
      : 'checksums not verified (verifyExport: false)',
    healthOf(checks, { vmUuid: manifest.vm.uuid, backup: manifest.started }),
  ]
  return { line: `${name}: ${parts.join(', ')}`, bytes }
}

/** Incremental runs, by VM, and the point each VM's files can be restored to. Returns their bytes. */
async function describeChains(ctx: HookContext, dir: string, checks: HealthCheck[]): Promise<number> {
  const found = await readChainManifests(dir)
  let total = 0
  for (const { name, manifest: m } of found) {
    let bytes = 0
    const missing: string[] = []
    const files = [...m.disks, ...(m.vmMetadata ? [m.vmMetadata] : [])]
    for (const disk of files) {
      const size = await fsp.stat(join(dir, disk.file)).then(
        (st) => st.size,
        () => undefined,
      )
      if (size === undefined) missing.push(disk.file)
      else if (size !== disk.bytes)
        missing.push(`${disk.file} (${size} bytes, the manifest says ${disk.bytes})`)
      bytes += size ?? 0
    }
    total += bytes
    const what =
      m.position === 0 ? 'full' : `incremental ${m.position} of chain ${m.chain}, since run ${m.parentRun}`
    const session = m.dataProtectorSession
      ? `Data Protector session ${m.dataProtectorSession}`
      : 'not from a Data Protector session'
    ctx.out(
      `dpxen: ${name}: ${m.vm.name} (${m.vm.uuid}) run ${m.run}, ${what}, ${m.disks.length} disk(s), ${formatBytes(bytes)}, ${session}${missing.length ? `; MISSING or damaged: ${missing.join(', ')}` : ''}`,
    )
  }
  const { points, problems } = chainPoints(found)
  for (const p of points) {
    const whole = cannotRebuild(p)
    ctx.out(
      `dpxen: ${p.vmName}: restorable to run ${p.runs.at(-1)!.manifest.run} (${p.runs.map((r) => r.manifest.run).join(' > ')}); ${whole ? `onto the existing VM only: ${whole}` : `the whole VM${p.runs.at(-1)!.manifest.vmMetadata!.vtpm ? ' with its vTPM' : ''}, made again if it is gone`}; ${healthOf(checks, { vmUuid: p.vmUuid, backup: `run ${p.runs.at(-1)!.manifest.run}` })}`,
    )
  }
  for (const p of problems) ctx.out(`dpxen: ${p.vmName}: not restorable: ${p.reason}`)
  return total
}

export async function list(ctx: HookContext): Promise<number> {
  const [target] = ctx.args
  const dir =
    target && existsSync(target) && statSync(target).isDirectory()
      ? target
      : (await startHook(ctx, 'list')).config.backupDir
  let names: string[]
  try {
    names = (await fsp.readdir(dir)).sort()
  } catch (error) {
    ctx.out(`dpxen: cannot read ${dir}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
    return EXIT.STAGING
  }
  let total = 0
  const checks = await readHealthChecks(dir)
  const xvas = names.filter((n) => n.endsWith('.xva'))
  for (const name of xvas) {
    const { line, bytes } = await describe(dir, name, checks)
    total += bytes
    ctx.out(`dpxen: ${line}`)
  }
  total += await describeChains(ctx, dir, checks)
  const foreign = names.filter((n) => !isOurName(n))
  if (foreign.length) ctx.out(`dpxen: not dpxen's: ${foreign.join(', ')}`)
  const holder = await describeHolder(dir)
  if (holder) ctx.out(`dpxen: ${dir} is held: ${holder}`)
  ctx.out(`dpxen: ${dir}: ${xvas.length} backup file(s), ${formatBytes(total)}`)
  return EXIT.OK
}
