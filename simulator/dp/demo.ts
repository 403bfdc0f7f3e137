#!/usr/bin/env node
// npm run demo: a whole simulated Data Protector backup and restore of XenServer VMs with dpxen.
// A demo pool on xapi-sim, a backup session whose pre-exec and post-exec are the dpxen hooks,
// damage to the pool, a restore session with dpxen's restore post-exec, and proof that the VMs
// are back: their disk checksums equal those at backup time; then a restore test (a health
// check: each backup booted as a copy without network, then destroyed). It cleans up after itself.
// The pool serves HTTPS with a self-signed certificate, as a real one does, and the demo trusts
// it the way an administrator would: `dpxen check` shows the fingerprint, the line goes into
// the configuration.
import { createHash } from 'node:crypto'
import {
  createReadStream,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
  chmodSync,
  truncateSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { selfSignedCertificate } from '../xapi/http/self-signed.js'
import { startXapiSim, type XapiSim } from '../xapi/server.js'
import { runRestoreSession } from './restore.js'
import { runBackupSession } from './session.js'
import { Store, type Message, type SessionRecord } from './store.js'

type Rec = Record<string, unknown>
const hooks = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'hooks')
const command = (hook: string, config: string): string =>
  `"${process.execPath}" "${join(hooks, hook)}" "${config}"`

function say(text = ''): void {
  console.log(text)
}

function sha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256')
    createReadStream(path)
      .on('data', (d) => hash.update(d))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', reject)
  })
}

/** The disks of a VM as the simulator stores them: position, VDI record, file. */
function disks(sim: XapiSim, name: string): { position: string; vdi: Rec; file: string }[] {
  const { db, disks: store } = sim.context
  const vm = db.all('VM').find(([, v]) => v.name_label === name && !v.is_a_snapshot && !v.is_a_template)
  if (!vm) return []
  return (vm[1].VBDs as string[])
    .map((ref) => db.get('VBD', ref))
    .filter((vbd): vbd is Rec => vbd !== undefined && vbd.type === 'Disk')
    .map((vbd) => {
      const vdi = db.require('VDI', vbd.VDI)
      return { position: String(vbd.userdevice), vdi, file: store.path(String(vdi.uuid)) }
    })
    .sort((a, b) => a.position.localeCompare(b.position))
}

async function fingerprints(sim: XapiSim, names: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>()
  for (const name of names) out.set(name, await Promise.all(disks(sim, name).map((d) => sha256(d.file))))
  return out
}

const show = (m: Message): void => {
  if (m.source === 'pre-exec' || m.source === 'post-exec') say(`    ${m.source.padEnd(9)} | ${m.text}`)
  else if (/Session .* finished|started/.test(m.text))
    say(`    ${m.source.padEnd(9)} | ${m.text.replace(/^\[Normal\] /, '')}`)
}

/** `dpxen check` shows the pool's certificate; its fingerprint line goes into the configuration. */
async function trustOnFirstUse(config: string): Promise<boolean> {
  const check = (): Promise<{ exitCode?: number; stdout: string }> =>
    execa(process.execPath, [join(hooks, 'dpxen.js'), 'check', config], { reject: false })
  say('0. Trust on first use: dpxen check against the pool, whose certificate is self-signed')
  const first = await check()
  const lines = first.stdout.split('\n')
  for (const line of lines.filter((l) => /PROBLEM|SHA-256|subject|valid|fingerprint"/.test(l)))
    say(`    dpxen check | ${line.trim()}`)
  const pin = /"fingerprint": "([0-9A-F:]+)"/.exec(first.stdout)?.[1]
  if (first.exitCode !== 3 || !pin) {
    say(`    dpxen check did not offer a fingerprint (exit ${first.exitCode}):\n${first.stdout}`)
    return false
  }
  const values = JSON.parse(readFileSync(config, 'utf8')) as Record<string, unknown>
  writeFileSync(config, JSON.stringify({ ...values, fingerprint: pin }, null, 2))
  const second = await check()
  say(`    added the fingerprint line; dpxen check now says: ${second.stdout.trim().split('\n').at(-1)}`)
  say()
  return second.exitCode === 0
}

/** The demo's configuration, with the password in a file of its own as an administrator would keep it. */
function writeDemoConfig(work: string, url: string, staging: string): string {
  const passwordFile = join(work, 'password')
  writeFileSync(passwordFile, 'xenroot\n', { mode: 0o600 })
  const config = join(work, 'dpxen.json')
  const values = {
    mode: 'online',
    url,
    username: 'root',
    passwordFile,
    vmName: ['Debian', 'vm2'],
    backupDir: staging,
    restoreMissingVm: true,
  }
  writeFileSync(config, JSON.stringify(values, null, 2))
  chmodSync(config, 0o600)
  return config
}

/** Debian's disks overwritten with garbage, vm2 deleted with its disks. */
async function damage(sim: XapiSim): Promise<void> {
  for (const d of disks(sim, 'Debian')) {
    await sim.context.disks.writable(String(d.vdi.uuid))
    truncateSync(d.file, 0)
    truncateSync(d.file, Number(d.vdi.virtual_size))
    writeFileSync(d.file, Buffer.alloc(65536, 0x42), { flag: 'r+' })
  }
  const vm2 = sim.context.db.all('VM').find(([, v]) => v.name_label === 'vm2')![0]
  const { destroyVmWithDevices } = await import('../xapi/model/vmops.js')
  await destroyVmWithDevices(sim.context, vm2, true)
}

/** Says, disk by disk, whether each VM's disks hash as they did at the backup; whether all do. */
function compare(vms: string[], before: Map<string, string[]>, after: Map<string, string[]>): boolean {
  let ok = true
  for (const name of vms) {
    const b = before.get(name)!
    const a = after.get(name)!
    b.forEach((hash, i) => {
      const same = a[i] === hash
      ok &&= same
      say(
        `    ${name.padEnd(7)} disk ${i}: ${hash.slice(0, 16)}… ${same ? '=' : '≠'} ${(a[i] ?? 'missing').slice(0, 16)}…  ${same ? 'OK' : 'DIFFERENT'}`,
      )
    })
    ok &&= a.length === b.length
  }
  return ok
}

/** What the demo is about to do. */
function introduce(url: string, vms: string[], staging: string): void {
  say('dpxen demo: a Data Protector backup and restore of XenServer VMs, all simulated')
  say(`  pool:    xapi-sim, three hosts, master at ${url} (VMs Debian, running, 2 disks, the first on`)
  say(
    "           the third host's local storage: its transfers are redirected there; vm2, halted; legacy-win)",
  )
  say(`  dpxen:   online backup of ${vms.join(' and ')} into ${staging}`)
  say()
}

/** Step 1: Data Protector's backup session, the hooks as its pre- and post-exec. */
async function backupStep(store: Store, staging: string, config: string): Promise<SessionRecord> {
  say('1. Backup session (pre-exec: dpxen-pre-exec, object: the staging folder, post-exec: dpxen-post-exec)')
  // The post-exec would empty the staging folder; the files live on in the session store.
  const backup = await runBackupSession(
    {
      name: 'xen-online',
      client: 'localhost',
      trees: [staging],
      preExec: command('pre-exec.js', config),
      postExec: command('post-exec.js', config),
      owner: 'root.sys@localhost',
      inactivityTimeout: 900,
      execScriptOnPreview: false,
    },
    { store, onMessage: show },
  )
  say(`    result: ${backup.status}, ${backup.report.files} file(s), ${backup.report.bytes} bytes`)
  return backup
}

/** Step 4: the disks hash as at the backup, and no snapshot is left. */
async function proofStep(sim: XapiSim, vms: string[], before: Map<string, string[]>): Promise<boolean> {
  const after = await fingerprints(sim, vms)
  say('4. Proof: disk SHA-256 at backup time and now')
  const same = compare(vms, before, after)
  const leftovers = sim.context.db.all('VM').filter(([, v]) => v.is_a_snapshot).length
  say(`    snapshots left in the pool: ${leftovers}`)
  say()
  return same && leftovers === 0
}

/**
 * Step 5: a restore test, as an auditor asks for one: the same backup restored again by Data
 * Protector, its post-exec a health check (a configuration with `healthCheck: true`): each VM
 * made as a copy without network, started, its guest agent awaited, then destroyed.
 */
async function healthStep(
  sim: XapiSim,
  store: Store,
  backup: SessionRecord,
  config: string,
): Promise<boolean> {
  const values = JSON.parse(readFileSync(config, 'utf8')) as Record<string, unknown>
  const checkConfig = join(dirname(config), 'dpxen-health-check.json')
  writeFileSync(checkConfig, JSON.stringify({ ...values, restore: { healthCheck: true } }, null, 2), {
    mode: 0o600,
  })
  say(
    `5. Restore test: ${backup.id} restored again, post-exec dpxen-restore-post-exec with healthCheck: true`,
  )
  const vms = sim.context.db.all('VM').length
  const check = await runRestoreSession({
    store,
    session: backup.id,
    trees: [],
    conflict: 'overwrite',
    postExec: command('restore-post-exec.js', checkConfig),
    onMessage: show,
  })
  const left = sim.context.db.all('VM').length - vms
  say(`    result: ${check.status}; copies left in the pool: ${left}`)
  say()
  return check.status === 'Completed' && left === 0
}

async function main(): Promise<number> {
  const work = mkdtempSync(join(tmpdir(), 'dpxen-demo-'))
  // Three hosts, each its own certificate, as each XenServer host makes one.
  const tls = await Promise.all([1, 2, 3].map((k) => selfSignedCertificate([`127.0.0.${k}`])))
  const sim = await startXapiSim({
    demo: true,
    hosts: 3,
    stateDir: join(work, 'pool'),
    authFailureDelayMs: 0,
    tls,
  })
  try {
    const staging = join(work, 'staging')
    const config = writeDemoConfig(work, sim.url, staging)
    const store = new Store(join(work, 'dp-store'))
    const vms = ['Debian', 'vm2']

    introduce(sim.url, vms, staging)
    if (!(await trustOnFirstUse(config))) return 1
    const before = await fingerprints(sim, vms)

    const backup = await backupStep(store, staging, config)
    if (backup.status !== 'Completed') return 1
    say()

    say("2. Damage: Debian's disks are overwritten with garbage, vm2 is deleted with its disks")
    await damage(sim)
    const damaged = await fingerprints(sim, vms)
    say(
      `    Debian's disks now differ from the backup: ${before.get('Debian')!.every((h, i) => h !== damaged.get('Debian')![i])}; vm2 exists: ${disks(sim, 'vm2').length > 0}`,
    )
    say()

    say(`3. Restore session of ${backup.id} into the staging folder, post-exec: dpxen-restore-post-exec`)
    const restore = await runRestoreSession({
      store,
      session: backup.id,
      trees: [],
      conflict: 'overwrite',
      postExec: command('restore-post-exec.js', config),
      onMessage: show,
    })
    say(`    result: ${restore.status}`)
    say()

    const ok = restore.status === 'Completed' && (await proofStep(sim, vms, before))
    const booted = await healthStep(sim, store, backup, config)
    const passed = ok && booted
    say(
      passed
        ? 'demo passed: both VMs are back exactly as they were backed up, and their backups boot'
        : 'demo FAILED',
    )
    return passed ? 0 : 1
  } finally {
    await sim.close()
    rmSync(work, { recursive: true, force: true })
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`demo: ${error instanceof Error ? error.stack : String(error)}`)
    process.exit(1)
  },
)
