// Incremental backups of one large VM: a full run, then incremental runs with a share of the
// disk's blocks changed before each (in 2 MiB runs, the VHD block size), then a restore of the
// full alone and one of the full and all its deltas. The targets of the incremental issue are
// checked and printed: an incremental writes at most 1.5x the changed bytes plus metadata,
// takes at most a tenth of a full's time, and the chain restore runs at 0.9x or more of the full
// restore's throughput. With `cbt`, the same runs read the changed blocks over NBD (changed
// block tracking), and the SR space the base holds between runs is reported beside: the target
// is no data at all (its disks keep their tracking metadata alone).
import { mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { bigVmConfig, startBigVm } from './transfer.js'
import { login } from './client.js'
import { median, type Machine } from './machine.js'
import { OC_BASE_OF } from '../../src/pool/tags.js'
import type { Options } from './options.js'

export interface IncrementalRow {
  sizeGiB: number
  changedShare: number
  deltas: number
  full: { bytes: number; seconds: number }
  incremental: {
    changedBytes: number
    bytes: number[]
    seconds: number[]
    medianBytes: number
    medianSeconds: number
  }
  restore: {
    fullMBps: number
    chainMBps: number
    fullSeconds: number
    chainSeconds: number
    chainBytes: number
  }
  targets: { bytes: boolean; time: boolean; restore: boolean }
  /** Changed block tracking: the deltas read over NBD. */
  cbt: boolean
  /** Bytes the base's disks hold on the SR after each run's post-exec (physical_utilisation). */
  baseBytes: number[]
}

const DELTAS = 7

/** Moves the run's files out of the staging folder (what Data Protector keeps); their bytes. */
function keep(staging: string, kept: string): number {
  let bytes = 0
  for (const f of readdirSync(staging).filter((n) => !n.startsWith('.'))) {
    bytes += statSync(join(staging, f)).size
    renameSync(join(staging, f), join(kept, f))
  }
  return bytes
}

/** What the VM's base holds on the SR: its disks' physical_utilisation. */
async function baseBytes(client: Awaited<ReturnType<typeof login>>): Promise<number> {
  const vdis = await client.session.call<Record<string, Record<string, unknown>>>('VDI.get_all_records')
  return Object.values(vdis)
    .filter((v) => (v.other_config as Record<string, string>)[OC_BASE_OF])
    .reduce((sum, v) => sum + Number(v.physical_utilisation), 0)
}

export async function benchIncremental(
  m: Machine,
  options: Options,
  work: string,
  size: number,
  cbt = false,
): Promise<IncrementalRow> {
  const share = 0.02
  const label = cbt ? 'incremental (cbt)' : 'incremental'
  const dir = join(work, `incremental-${cbt ? 'cbt-' : ''}${size}g`)
  const staging = join(dir, 'staging')
  const kept = join(dir, 'kept')
  mkdirSync(kept, { recursive: true })
  process.stdout.write(`seeding a ${size} GiB VM (3/4 data) for incremental runs… `)
  const sim = await startBigVm(options, dir, size)
  console.log('done')
  try {
    const config = bigVmConfig(join(dir, 'incremental.json'), sim, options, {
      mode: 'online',
      backupDir: staging,
      incremental: true,
      fullEvery: 100,
      ...(cbt ? { cbt: true } : {}),
    })
    const client = await login(sim.url, options.tls?.fingerprint)
    if (cbt) {
      const network = (await client.session.call<string[]>('network.get_all'))[0]!
      await client.session.call('network.add_purpose', network, options.tls ? 'nbd' : 'insecure_nbd')
    }
    const held: number[] = []
    const vm = (await client.session.call<string[]>('VM.get_by_name_label', 'big'))[0]!
    const vbd = (await client.session.call<string[]>('VM.get_VBDs', vm))[0]!
    const vdiUuid = await client.session.call<string>(
      'VDI.get_uuid',
      await client.session.call<string>('VBD.get_VDI', vbd),
    )
    const bytesOfDisk = size * 1024 ** 3

    await m.beforeRun(dir, bytesOfDisk)
    const full = await m.hook('pre-exec.js', config)
    const fullBytes = keep(staging, kept)
    await m.untimedHook('post-exec.js', config)
    held.push(await baseBytes(client))
    console.log(`${label} ${size} GiB: full run ${fullBytes} bytes in ${full.seconds.toFixed(1)} s`)

    const row: IncrementalRow['incremental'] = {
      changedBytes: 0,
      bytes: [],
      seconds: [],
      medianBytes: 0,
      medianSeconds: 0,
    }
    for (let d = 1; d <= DELTAS; d++) {
      const changed = await sim.context.disks.change(vdiUuid, bytesOfDisk, share, `run-${d}`, d * 2, 2)
      row.changedBytes = changed.length * 1024 * 1024
      await m.beforeRun(dir, row.changedBytes * 2)
      const run = await m.hook('pre-exec.js', config)
      row.seconds.push(run.seconds)
      row.bytes.push(keep(staging, kept))
      await m.untimedHook('post-exec.js', config)
      held.push(await baseBytes(client))
    }
    row.medianBytes = median(row.bytes)
    row.medianSeconds = median(row.seconds)
    console.log(
      `${label} ${size} GiB, ${(share * 100).toFixed(0)} % changed (${row.changedBytes} bytes): ${row.medianBytes} bytes in ${row.medianSeconds.toFixed(2)} s (median of ${DELTAS}); ${(row.medianBytes / row.changedBytes).toFixed(3)}x the changed bytes, ${(row.medianSeconds / full.seconds).toFixed(3)} of the full's time`,
    )

    // A restore of the full alone, then of the full and every delta (the files put back as Data
    // Protector would); each rebuilds the disk in a new VDI and swaps it in.
    const names = readdirSync(kept).sort()
    const fullManifest = names.filter((n) => n.endsWith('.chain.json'))[0]!
    const prefix = fullManifest.slice(0, -'.chain.json'.length)
    const fullFiles = names.filter(
      (n) =>
        n === fullManifest ||
        n === `${prefix}.metadata.tar` ||
        (n.startsWith(`${prefix}_`) && n.endsWith('.vhd')),
    )
    const restoreWith = async (files: string[]): Promise<{ seconds: number; bytes: number }> => {
      rmSync(staging, { recursive: true, force: true })
      mkdirSync(staging, { mode: 0o700 })
      let bytes = 0
      for (const f of files) {
        renameSync(join(kept, f), join(staging, f))
        bytes += statSync(join(staging, f)).size
      }
      await m.beforeRun(dir, bytes)
      const r = await m.hook('restore-post-exec.js', config)
      for (const f of files) renameSync(join(staging, f), join(kept, f))
      return { seconds: r.seconds, bytes }
    }
    const alone = await restoreWith(fullFiles)
    const chain = await restoreWith(names)
    const restore = {
      fullSeconds: alone.seconds,
      fullMBps: alone.bytes / 1e6 / alone.seconds,
      chainSeconds: chain.seconds,
      chainBytes: chain.bytes,
      chainMBps: chain.bytes / 1e6 / chain.seconds,
    }
    console.log(
      `${label} ${size} GiB restore: the full alone ${restore.fullMBps.toFixed(0)} MB/s (${alone.seconds.toFixed(1)} s), the full and ${DELTAS} deltas ${restore.chainMBps.toFixed(0)} MB/s (${chain.seconds.toFixed(1)} s, ${chain.bytes} bytes): ${(restore.chainMBps / restore.fullMBps).toFixed(2)}x`,
    )
    const metadata = 64 * 1024
    const targets = {
      bytes: row.medianBytes <= 1.5 * row.changedBytes + metadata,
      time: row.medianSeconds <= full.seconds / 10,
      restore: restore.chainMBps >= 0.9 * restore.fullMBps,
    }
    console.log(
      `${label} ${size} GiB: the base holds ${median(held)} bytes on the SR between runs (median of ${held.length})`,
    )
    console.log(
      `${label} targets: bytes ${targets.bytes ? 'met' : 'MISSED'}, time ${targets.time ? 'met' : 'MISSED'}, chain restore ${targets.restore ? 'met' : 'MISSED'}`,
    )
    return {
      sizeGiB: size,
      changedShare: share,
      deltas: DELTAS,
      full: { bytes: fullBytes, seconds: full.seconds },
      incremental: row,
      restore,
      targets,
      cbt,
      baseBytes: held,
    }
  } finally {
    await sim.close()
  }
}
