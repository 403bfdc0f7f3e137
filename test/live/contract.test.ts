// The contract between dpxen and a XenServer / XCP-ng pool: what dpxen relies on, checked
// against xapi-sim (in CI, over HTTP and HTTPS) or, with XEN_TEST_URL set, against a real pool
// (`npm run test:live`; docs/live-testing.md). One suite, two targets, as
// restic tests its backends.
//
// It touches nothing but the scratch VM named by XEN_TEST_VM (which the user gives up to the
// test: its disks are restored over, it may be shut down and started, and the offline restore
// replaces it by its own copy) and what dpxen creates for it (snapshots, imported disks), which
// the hooks remove; afterAll looks for anything left and removes it too.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runPostExec } from '../../src/backup/post.js'
import { runPreExec } from '../../src/backup/run.js'
import { readPool, type PoolView } from '../../src/pool/view.js'
import { destroyVmAndDisks } from '../../src/pool/disks.js'
import { OC_BACKUP_RUN, SNAPSHOT_PREFIX } from '../../src/pool/tags.js'
import { loadConfig } from '../../src/config/load.js'
import { isXapiError } from '../../src/core/errors.js'
import { createLogger } from '../../src/core/log.js'
import { runRestorePostExec } from '../../src/restore/run.js'
import { probeCertificate } from '../../src/xapi/certificate.js'
import { connect } from '../../src/xapi/connect.js'
import type { Host } from '../../src/xapi/host.js'
import { verifyFile } from '../../src/xva/verify-file.js'
import { run, writeConfig } from '../helpers/hooks.js'
import { startSim } from '../helpers/sim.js'
import type { XapiSim } from '../../simulator/xapi/server.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

type Rec = Record<string, unknown>

interface Target {
  url: string
  username: string
  password: string
  /** fingerprint or caFile, for an https host. */
  trust: Record<string, string>
  vm: string
  sr: string
  /** What the test is run against, for the test names. */
  kind: string
}

const live = process.env.XEN_TEST_URL

function fromEnvironment(): Target {
  const need = (name: string): string => {
    const value = process.env[name]
    if (!value) throw new Error(`${name} is not set (see docs/live-testing.md)`)
    return value
  }
  const passwordFile = process.env.XEN_TEST_PASSWORD_FILE
  return {
    url: need('XEN_TEST_URL'),
    username: need('XEN_TEST_USER'),
    password: passwordFile
      ? readFileSync(passwordFile, 'utf8').replace(/\r?\n$/, '')
      : need('XEN_TEST_PASSWORD'),
    trust: {
      ...(process.env.XEN_TEST_FINGERPRINT ? { fingerprint: process.env.XEN_TEST_FINGERPRINT } : {}),
      ...(process.env.XEN_TEST_CA_FILE ? { caFile: process.env.XEN_TEST_CA_FILE } : {}),
    },
    vm: need('XEN_TEST_VM'),
    sr: need('XEN_TEST_SR'),
    kind: 'a real pool',
  }
}

let target: Target
let sim: XapiSim | undefined
let dir: string
let conn: Host

/** A configuration for the scratch VM only; the password in a file, as docs/reference.md advises. */
function config(values: Rec, name: string): string {
  const passwordFile = join(dir, 'password')
  return writeConfig(
    dir,
    {
      url: target.url,
      username: target.username,
      passwordFile,
      vmName: [target.vm],
      sr: target.sr,
      backupDir: join(dir, 'staging'),
      progressInterval: 60,
      // One backup serves several restores here.
      keepRestoredFiles: true,
      ...target.trust,
      ...values,
    },
    name,
  )
}

/** The scratch VM's record and what hangs off it, by name or uuid. */
function scratch(view: PoolView): { ref: string; vm: Rec; macs: string[]; vdis: string[] } {
  const matches = [...view.vms].filter(
    ([, v]) => !v.is_a_snapshot && !v.is_a_template && (v.uuid === target.vm || v.name_label === target.vm),
  )
  expect(matches.length, `exactly one VM named ${target.vm}`).toBe(1)
  const [ref, vm] = matches[0]!
  const macs = (vm.VIFs as string[]).map((r) => String(view.vifs.get(r)?.MAC)).sort()
  const vdis = (vm.VBDs as string[])
    .map((r) => view.vbds.get(r))
    .filter((vbd) => vbd?.type === 'Disk')
    .map((vbd) => String(view.vdis.get(String(vbd!.VDI))?.uuid))
    .sort()
  return { ref, vm, macs, vdis }
}

/** Snapshots and templates dpxen made (tagged with a run, or named as its snapshots) still in the pool. */
function dpxenLeftovers(view: PoolView): string[] {
  return [...view.vms.values()]
    .filter(
      (v) =>
        (v.is_a_snapshot || v.is_a_template) &&
        ((v.other_config as Rec | undefined)?.[OC_BACKUP_RUN] !== undefined ||
          String(v.name_label).startsWith(SNAPSHOT_PREFIX)),
    )
    .map((v) => String(v.name_label))
}

beforeAll(async () => {
  // Not tempDir(): that one goes after each test, and this suite's steps follow one another.
  dir = mkdtempSync(join(tmpdir(), 'dpxen-contract-'))
  if (live) target = fromEnvironment()
  else {
    sim = await startSim({ demo: true, authFailureDelayMs: 10 })
    target = {
      url: sim.url,
      username: 'root',
      password: SIM_PASSWORD,
      trust: {},
      vm: 'vm2',
      sr: 'Local storage',
      kind: 'xapi-sim',
    }
  }
  writeFileSync(join(dir, 'password'), `${target.password}\n`, { mode: 0o600 })
  const loaded = await loadConfig({ path: config({ mode: 'online' }, 'contract.json'), env: {}, cwd: dir })
  conn = await connect(loaded.config, createLogger({ out: () => undefined, name: 'contract' }))
})

afterAll(async () => {
  // Whatever a failed step left: the post-exec removes this run's files and snapshots.
  if (conn) {
    await run(runPostExec, [config({ mode: 'online' }, 'cleanup.json')]).catch(() => undefined)
    await conn.close()
  }
  await sim?.close()
  rmSync(dir, { recursive: true, force: true })
})

describe(`the pool contract (${live ? 'XEN_TEST_URL' : 'xapi-sim'})`, () => {
  it('login: the configured credentials open a session; wrong ones fail with SESSION_AUTHENTICATION_FAILED', async () => {
    expect(await conn.call<string[]>('pool.get_all')).toHaveLength(1)
    const wrong = config(
      { mode: 'online', passwordFile: undefined, password: `not-${randomUUID()}` },
      'wrong.json',
    )
    const result = await run(runPreExec, [wrong])
    expect(result.code).toBe(4)
  })

  it('every host serves the certificate the pool records for it (dpxen trusts members by that record)', async (ctx) => {
    if (conn.hosts.length < 2) return ctx.skip('the pool has one host: no transfer is ever redirected')
    const base = new URL(conn.url)
    const port = base.port ? `:${base.port}` : ''
    for (const host of conn.hosts) {
      const url = `https://${host.address.includes(':') ? `[${host.address}]` : host.address}${port}`
      expect(host.fingerprint, `${host.name} has a certificate record`).toMatch(/^[0-9A-F:]{95}$/)
      expect((await probeCertificate(url, { timeoutMs: 10_000 })).fingerprint, host.name).toBe(
        host.fingerprint,
      )
    }
  })

  it('records: the scratch VM, its disks, SRs and VIFs as dpxen reads them', async () => {
    const view = await readPool(conn)
    const { vm, vdis } = scratch(view)
    expect(vdis.length).toBeGreaterThan(0)
    expect(String(vm.uuid)).toMatch(/^[0-9a-f-]{36}$/)
    expect(['Running', 'Halted', 'Suspended', 'Paused']).toContain(vm.power_state)
    const srs = [...view.srs.values()].filter((sr) => sr.uuid === target.sr || sr.name_label === target.sr)
    expect(srs.length, `exactly one SR named ${target.sr}`).toBe(1)
  })

  it('error codes dpxen branches on: UUID_INVALID and HANDLE_INVALID, with their parameters', async () => {
    const uuid = randomUUID()
    const byUuid = await conn.call('VM.get_by_uuid', uuid).catch((e: unknown) => e)
    expect(isXapiError(byUuid, 'UUID_INVALID')).toBe(true)
    expect((byUuid as { params: string[] }).params).toEqual(['VM', uuid])
    const byRef = await conn.call('VM.get_record', 'OpaqueRef:NULL').catch((e: unknown) => e)
    expect(isXapiError(byRef, 'HANDLE_INVALID')).toBe(true)
    expect((byRef as { params: string[] }).params).toEqual(['VM', 'OpaqueRef:NULL'])
  })

  for (const compression of ['none', 'gzip'] as const) {
    it(`online backup (snapshot, export with compression ${compression}, task, destroy): a valid XVA, no snapshot left`, async () => {
      const before = await readPool(conn)
      const cfg = config({ mode: 'online', compression }, `online-${compression}.json`)
      const pre = await run(runPreExec, [cfg])
      expect(pre.code, pre.text).toBe(0)
      const files = pre.lines.map((l) => /-> (\S+\.xva)$/.exec(l)?.[1]).filter(Boolean) as string[]
      expect(files).toHaveLength(1)
      const verified = await verifyFile(join(dir, 'staging', files[0]!), new AbortController().signal)
      expect(verified.compression).toBe(compression)
      expect(verified.summary.vm.uuid).not.toBe(scratch(before).vm.uuid) // the snapshot's
      const after = await readPool(conn)
      expect(dpxenLeftovers(after)).toEqual([])
      expect(after.vdis.size).toBe(before.vdis.size)
      expect((await run(runPostExec, [cfg])).code).toBe(0)
    })
  }

  it('online restore (import, VBD swap, destroy of the old disks): same VM, same MACs, new disks, nothing left', async () => {
    const before = scratch(await readPool(conn))
    const cfg = config({ mode: 'online' }, 'online-restore.json')
    expect((await run(runPreExec, [cfg])).code).toBe(0)
    const restore = await run(runRestorePostExec, [cfg])
    expect(restore.code, restore.text).toBe(0)
    const view = await readPool(conn)
    const after = scratch(view)
    expect(after.vm.uuid).toBe(before.vm.uuid)
    expect(after.vm.power_state).toBe(before.vm.power_state)
    expect(after.macs).toEqual(before.macs)
    expect(after.vdis).toHaveLength(before.vdis.length)
    for (const vdi of after.vdis) expect(before.vdis).not.toContain(vdi)
    // The old disks are gone, and no imported template stays.
    const uuids = new Set([...view.vdis.values()].map((v) => v.uuid))
    for (const vdi of before.vdis) expect(uuids.has(vdi)).toBe(false)
    expect(dpxenLeftovers(view)).toEqual([])
    expect((await run(runPostExec, [cfg])).code).toBe(0)
  })

  it('offline restore: over the VM it replaces it (MACs kept); with the VM gone, import restore=true brings back its uuid and MACs', async () => {
    const before = scratch(await readPool(conn))
    const cfg = config({ mode: 'offline', startAfterRestore: true }, 'offline.json')
    const pre = await run(runPreExec, [cfg])
    expect(pre.code, pre.text).toBe(0)
    expect(scratch(await readPool(conn)).vm.power_state).toBe(before.vm.power_state)

    // Over the existing VM: a verified copy replaces it; the name and MACs stay, the uuid is new.
    const over = await run(runRestorePostExec, [cfg])
    expect(over.code, over.text).toBe(0)
    const replaced = scratch(await readPool(conn))
    expect(replaced.macs).toEqual(before.macs)
    expect(replaced.vm.power_state).toBe(before.vm.power_state)
    expect(replaced.vdis).toHaveLength(before.vdis.length)

    // The VM lost: the restore imports with restore=true, and the VM is back as it was.
    if (replaced.vm.power_state !== 'Halted') await conn.call('VM.hard_shutdown', replaced.ref)
    await destroyVmAndDisks(conn, replaced.ref, createLogger({ out: () => undefined, name: 'contract' }))
    const back = await run(runRestorePostExec, [cfg])
    expect(back.code, back.text).toBe(0)
    const view = await readPool(conn)
    const after = scratch(view)
    expect(after.vm.uuid).toBe(before.vm.uuid)
    expect(after.macs).toEqual(before.macs)
    expect(after.vm.power_state).toBe(before.vm.power_state)
    expect(after.vdis).toHaveLength(before.vdis.length)
    expect(dpxenLeftovers(view)).toEqual([])
    expect((await run(runPostExec, [cfg])).code).toBe(0)
  })
})
