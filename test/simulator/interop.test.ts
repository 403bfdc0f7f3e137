// Clients and readers that are not ours: the stock Python XenAPI client, Vates' npm xen-api
// client, xva-img, and a Python tarfile + xxhash reader. On CI they must all be present.
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { describe, expect, it, vi } from 'vitest'
import { createClient } from 'xen-api'
import type { TestClient } from '../helpers/rpc.js'
import { demoSim } from '../helpers/sim.js'
import { caBundle } from '../helpers/tls.js'
import { download, rawDisk, sha256 } from '../helpers/xva.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

const fixtures = fileURLToPath(new URL('../fixtures/', import.meta.url))
const PYTHON = '/usr/bin/python3'

async function hasPython(module: string): Promise<boolean> {
  if (!existsSync(PYTHON)) return false
  return (await execa(PYTHON, ['-c', `import ${module}`], { reject: false })).exitCode === 0
}

/** Outside CI a missing tool skips the test; on CI it is an error, so nothing is skipped silently. */
async function requireTool(available: boolean, what: string): Promise<boolean> {
  if (available) return true
  if (process.env.CI) throw new Error(`${what} is not installed (.ci/run installs it)`)
  return false
}

async function diskHashes(url: string, xapi: TestClient, vm: string): Promise<string[]> {
  const out: string[] = []
  for (const vbd of await xapi.call<string[]>('VM.get_VBDs', vm)) {
    const rec = await xapi.call<Record<string, unknown>>('VBD.get_record', vbd)
    if (rec.type === 'Disk') out.push(sha256(await rawDisk(url, xapi.session, String(rec.VDI))))
  }
  return out.sort()
}

describe('interoperability', () => {
  it('works with the stock Python XenAPI client: login, list, snapshot, export, import, destroy', async (ctx) => {
    if (!(await requireTool(await hasPython('os_xenapi.client.XenAPI'), 'python3-os-xenapi')))
      return ctx.skip()
    const { sim, xapi } = await demoSim()
    const debian = await xapi.vmByName('Debian')
    await xapi.call('session.logout')
    // The export of Debian is redirected to the member that holds its disk, over https.
    const env = { SSL_CERT_FILE: await caBundle() }
    const { stdout } = await execa(
      PYTHON,
      [join(fixtures, 'xenapi_client.py'), sim.url, 'root', SIM_PASSWORD],
      {
        env,
      },
    )
    const seen = JSON.parse(stdout) as Record<string, unknown>
    expect(seen.vms).toEqual(['Debian', 'legacy-win', 'vm2'])
    expect(seen.snapshot_is_template).toBe(true)
    expect(seen.start_running).toEqual(['VM_BAD_POWER_STATE', debian, 'halted', 'running'])
    expect(seen.export_bytes as number).toBeGreaterThan(4 * 1024 * 1024)
    expect(seen.import_status).toBe('success')
    expect(seen.import_result).toMatch(/^<value><array><data><value>OpaqueRef:/)
    expect(seen.snapshots_after).toEqual([])
    expect(sim.openSessions()).toBe(0)
  })

  it("works with Vates' npm xen-api client: events, callAsync, getResource and putResource", async () => {
    const { sim, xapi: mine } = await demoSim()
    const xapi = createClient({
      url: sim.url,
      auth: { user: 'root', password: SIM_PASSWORD },
      allowUnauthorized: true,
    })
    try {
      await xapi.connect()
      await xapi.objectsFetched
      const vms = Object.values(
        xapi.objects.all as Record<string, { $type: string; name_label: string; $ref: string }>,
      ).filter((o) => o.$type === 'VM')
      expect(vms.map((vm) => vm.name_label)).toEqual(expect.arrayContaining(['Debian', 'vm2', 'legacy-win']))
      const debian = vms.find((vm) => vm.name_label === 'Debian')!.$ref
      const snap = (await xapi.callAsync('VM.snapshot', debian, 'xo-snapshot')) as string
      expect(snap).toMatch(/^OpaqueRef:/)
      await xapi.call('VM.set_is_a_template', snap, false)
      const response = await xapi.getResource('/export/', { query: { ref: snap, use_compression: 'zstd' } })
      const parts: Buffer[] = []
      for await (const part of response.body) parts.push(part as Buffer)
      const xva = Buffer.concat(parts)
      expect([...xva.subarray(0, 4)]).toEqual([0x28, 0xb5, 0x2f, 0xfd])
      const shared = (await xapi.call('SR.get_by_name_label', 'Shared Storage')) as string[]
      const result = (await xapi.putResource(xva, '/import/', { query: { sr_id: shared[0] } })) as unknown
      const imported = JSON.stringify(result).match(/OpaqueRef:[0-9a-f-]+/)![0]
      expect(await xapi.call('VM.get_name_label', imported)).toBe('xo-snapshot')
      expect(await diskHashes(sim.url, mine, imported)).toEqual(await diskHashes(sim.url, mine, snap))
      await xapi.callAsync('VM.destroy', imported)
    } finally {
      await xapi.disconnect()
    }
    // The client logs out without waiting for the answer; only our own session remains.
    await vi.waitFor(() => expect(sim.openSessions()).toBe(1))
  })

  it('writes XVAs that xva-img (SHA-1 checksums) turns back into the same disks', async (ctx) => {
    const available = (await execa('xva-img', ['--version'], { reject: false })).exitCode === 0
    if (!(await requireTool(available, 'xva-img'))) return ctx.skip()
    const { sim, xapi } = await demoSim({ checksum: 'sha1' })
    const snap = await xapi.call<string>('VM.snapshot', await xapi.vmByName('Debian'), 'for-xva-img')
    const dir = mkdtempSync(join(tmpdir(), 'xva-img-'))
    try {
      const { body } = await download(`${sim.url}/export?session_id=${xapi.session}&ref=${snap}`)
      writeFileSync(join(dir, 'vm.xva'), body)
      await execa('tar', ['-xf', 'vm.xva'], { cwd: dir })
      const hashes: string[] = []
      for (const disk of readdirSync(dir).filter((name) => name.startsWith('Ref:'))) {
        await execa('xva-img', ['disk-export', `${disk}/`, `${disk}.raw`], { cwd: dir })
        const { stdout } = await execa('sha256sum', [`${disk}.raw`], { cwd: dir })
        hashes.push(stdout.split(' ')[0]!)
      }
      expect(hashes.sort()).toEqual(await diskHashes(sim.url, xapi, snap))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it.for([{ faults: [] as string[] }, { faults: ['export-keepalive'] }])(
    'writes XVAs that a Python tarfile + xxhash reader verifies and rebuilds (faults: $faults)',
    async ({ faults }, ctx) => {
      if (!(await requireTool(await hasPython('xxhash'), 'python3-xxhash'))) return ctx.skip()
      const { sim, xapi } = await demoSim({ faults })
      const snap = await xapi.call<string>('VM.snapshot', await xapi.vmByName('Debian'), 'for-python')
      const dir = mkdtempSync(join(tmpdir(), 'xva-py-'))
      try {
        const { body } = await download(
          `${sim.url}/export?session_id=${xapi.session}&ref=${snap}&use_compression=gzip`,
        )
        writeFileSync(join(dir, 'vm.xva'), body)
        const { stdout } = await execa(PYTHON, [join(fixtures, 'xva_check.py'), join(dir, 'vm.xva')])
        expect(Object.values(JSON.parse(stdout) as Record<string, string>).sort()).toEqual(
          await diskHashes(sim.url, xapi, snap),
        )
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    },
  )
})
