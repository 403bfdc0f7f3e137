// The contracts of Host (src/xapi/host.ts), against the three-host simulator over real sockets:
// every task a verb makes is gone once the verb returns or throws, whatever happened; a
// download resolves only after the host's task succeeded; an intake's own error is the one
// the caller sees; uploads and downloads reach the member that holds the storage.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { loadConfig } from '../../src/config/load.js'
import { DpxenError, XapiError } from '../../src/core/errors.js'
import type { Intake } from '../../src/core/intake.js'
import { createLogger } from '../../src/core/log.js'
import { connect } from '../../src/xapi/connect.js'
import type { Host } from '../../src/xapi/host.js'
import { world } from '../helpers/world.js'

let open: Host[] = []
afterEach(async () => {
  for (const host of open) await host.close()
  open = []
})

async function hostWorld() {
  const w = await world({ mode: 'offline', vmName: ['Debian'] })
  const loaded = await loadConfig({ path: w.config, env: {}, cwd: w.dir })
  const host = await connect(loaded.config, createLogger({ out: () => undefined, name: 'host-test' }))
  open.push(host)
  const tasks = (): unknown[] => w.sim.context.db.all('task').map(([, t]) => t.name_label)
  return { ...w, host, tasks }
}

/** An intake that keeps every byte in memory (the exports here are a few MiB). */
function memoryIntake(refuseAfter = Infinity): Intake<Buffer> & { pieces: Buffer[] } {
  const pieces: Buffer[] = []
  let bytes = 0
  return {
    pieces,
    get bytes() {
      return bytes
    },
    push(piece) {
      if (bytes + piece.length > refuseAfter) throw new DpxenError('LOCAL_IO', 'the disk is full (test)')
      bytes += piece.length
      pieces.push(Buffer.from(piece))
      return true
    },
    finish: async () => Buffer.concat(pieces),
    abort: async () => undefined,
  }
}

describe('Host', () => {
  it('download: the whole body once the task succeeded, from the member that holds the disk; no task left', async () => {
    const w = await hostWorld()
    const vm = await w.xapi.vmByName('Debian')
    await w.xapi.call('VM.hard_shutdown', vm)
    const before = w.tasks()
    const xva = await w.host.download(
      '/export',
      { ref: vm },
      {
        label: 'Debian',
        signal: new AbortController().signal,
        open: async () => memoryIntake(),
      },
    )
    expect(xva.subarray(0, 7).toString()).toBe('ova.xml')
    expect(w.sim.httpLog(3).some((e) => e.path === '/export' && e.status === 200)).toBe(true)
    expect(w.tasks()).toEqual(before)
  })

  it("download: an intake that refuses the stream: its error is the caller's, the task cancelled and destroyed", async () => {
    const w = await hostWorld()
    const vm = await w.xapi.vmByName('Debian')
    await w.xapi.call('VM.hard_shutdown', vm)
    const before = w.tasks()
    const failed = await w.host
      .download(
        '/export',
        { ref: vm },
        {
          label: 'Debian',
          signal: new AbortController().signal,
          open: async () => memoryIntake(64 * 1024),
        },
      )
      .catch((e: unknown) => e)
    expect(failed).toBeInstanceOf(DpxenError)
    expect((failed as DpxenError).code).toBe('LOCAL_IO')
    expect((failed as DpxenError).message).toMatch(/the disk is full \(test\)/)
    // Cancelled and destroyed without waiting: xapi removes a destroyed task once its handler
    // has stopped (its GC, xapi-sim at once), which on a loaded machine is a moment after the
    // call returns.
    await vi.waitFor(() => expect(w.tasks()).toEqual(before), { timeout: 5000 })
    expect(w.sim.context.db.all('task').filter(([, t]) => t.status === 'pending')).toEqual([])
  })

  it('upload: aborted once its task exists: ABORTED, nothing imported, the task cancelled and destroyed', async () => {
    const w = await hostWorld()
    const file = join(w.dir, 'junk.xva')
    writeFileSync(file, Buffer.alloc(1024 * 1024, 7))
    const vms = w.sim.context.db.count('VM')
    const before = w.tasks()
    const abort = new AbortController()
    let task = ''
    const failed = await w.host
      .upload(
        '/import',
        { sr_id: (await w.xapi.call<string[]>('SR.get_by_name_label', 'Local storage'))[0]! },
        {
          label: 'junk.xva',
          file,
          signal: abort.signal,
          onTask: async (t) => {
            task = t
            abort.abort()
          },
        },
      )
      .catch((e: unknown) => e)
    expect((failed as DpxenError).code).toBe('ABORTED')
    expect(task).toMatch(/^OpaqueRef:/)
    expect(w.sim.context.db.has('task', task)).toBe(false)
    expect(w.sim.context.db.count('VM')).toBe(vms)
    expect(w.tasks()).toEqual(before)
  })

  it("callAsync: a failed task gives xapi's error with its parameters, and the task is destroyed", async () => {
    const w = await hostWorld()
    const vm = await w.xapi.vmByName('Debian')
    const before = w.tasks()
    const failed = await w.host.callAsync('VM.start', [vm, false, false]).catch((e: unknown) => e)
    expect(failed).toBeInstanceOf(XapiError)
    expect((failed as XapiError).xapiCode).toBe('VM_BAD_POWER_STATE')
    expect((failed as XapiError).params).toContain('running')
    expect(w.tasks()).toEqual(before)
  })
})
