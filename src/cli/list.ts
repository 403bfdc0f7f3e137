// `dpxen list [DIR | CONFIG]`: what a staging folder holds, from the manifests, without reading
// the files: each backup's VM, kind, time, Data Protector session, size and whether its
// checksums were verified as it streamed; files dpxen would not recognise; who holds the folder.
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

/** One line for an XVA file, from its manifest. */
async function describe(dir: string, name: string): Promise<{ line: string; bytes: number }> {
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
  ]
  return { line: `${name}: ${parts.join(', ')}`, bytes }
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
  const xvas = names.filter((n) => n.endsWith('.xva'))
  for (const name of xvas) {
    const { line, bytes } = await describe(dir, name)
    total += bytes
    ctx.out(`dpxen: ${line}`)
  }
  const foreign = names.filter((n) => !isOurName(n))
  if (foreign.length) ctx.out(`dpxen: not dpxen's: ${foreign.join(', ')}`)
  const holder = await describeHolder(dir)
  if (holder) ctx.out(`dpxen: ${dir} is held: ${holder}`)
  ctx.out(`dpxen: ${dir}: ${xvas.length} backup file(s), ${formatBytes(total)}`)
  return EXIT.OK
}
