// Each XenAPI error the simulator raises, with xapi's exact code and parameter list.
import { describe, expect, it } from 'vitest'
import { TestClient, rawCall, type Envelope } from '../helpers/rpc.js'
import { demoSim } from '../helpers/sim.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

const NOWHERE = 'OpaqueRef:11111111-2222-3333-4444-555555555555'

describe('XenAPI errors', () => {
  it('SESSION_AUTHENTICATION_FAILED [user; message] after a delay', async () => {
    const { sim } = await demoSim({ authFailureDelayMs: 300 })
    const started = Date.now()
    const answer = (await rawCall(sim.url, 'session.login_with_password', ['root', 'wrong']))
      .value as Envelope
    expect(answer).toEqual({
      Status: 'Failure',
      ErrorDescription: ['SESSION_AUTHENTICATION_FAILED', 'root', 'Authentication failure'],
    })
    expect(Date.now() - started).toBeGreaterThanOrEqual(280)
  })

  it('SESSION_INVALID [ref] for an unknown session and after logout', async () => {
    const { sim, xapi } = await demoSim()
    const bogus = new TestClient(sim.url, NOWHERE)
    expect(await bogus.failure('VM.get_all')).toEqual(['SESSION_INVALID', NOWHERE])
    await xapi.call('session.logout')
    expect(await xapi.failure('VM.get_all')).toEqual(['SESSION_INVALID', xapi.session])
  })

  it('HANDLE_INVALID [class; ref] for a ref of no object', async () => {
    const { xapi } = await demoSim()
    expect(await xapi.failure('VM.get_record', NOWHERE)).toEqual(['HANDLE_INVALID', 'VM', NOWHERE])
    expect(await xapi.failure('VDI.destroy', NOWHERE)).toEqual(['HANDLE_INVALID', 'VDI', NOWHERE])
    expect(await xapi.failure('task.get_status', 'OpaqueRef:NULL')).toEqual([
      'HANDLE_INVALID',
      'task',
      'OpaqueRef:NULL',
    ])
  })

  it('UUID_INVALID [class; uuid] for get_by_uuid of no object', async () => {
    const { xapi } = await demoSim()
    expect(await xapi.failure('VM.get_by_uuid', 'nope')).toEqual(['UUID_INVALID', 'VM', 'nope'])
  })

  it('MESSAGE_PARAMETER_COUNT_MISMATCH [method; expected; received]', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    expect(await xapi.failure('VM.start', vm)).toEqual([
      'MESSAGE_PARAMETER_COUNT_MISMATCH',
      'VM.start',
      '3',
      '1',
    ])
    expect(await xapi.failure('VM.get_record')).toEqual([
      'MESSAGE_PARAMETER_COUNT_MISMATCH',
      'VM.get_record',
      '1',
      '0',
    ])
    expect(await xapi.failure('VM.snapshot', vm, 'a', [], 'extra')).toEqual([
      'MESSAGE_PARAMETER_COUNT_MISMATCH',
      'VM.snapshot',
      '2',
      '4',
    ])
  })

  it('MESSAGE_METHOD_UNKNOWN [method]', async () => {
    const { xapi } = await demoSim()
    expect(await xapi.failure('VM.teleport')).toEqual(['MESSAGE_METHOD_UNKNOWN', 'VM.teleport'])
  })

  it('VM_BAD_POWER_STATE [vm; expected; actual] with lower-case states', async () => {
    const { xapi } = await demoSim()
    const running = await xapi.vmByName('Debian')
    const halted = await xapi.vmByName('vm2')
    expect(await xapi.failure('VM.start', running, false, false)).toEqual([
      'VM_BAD_POWER_STATE',
      running,
      'halted',
      'running',
    ])
    expect(await xapi.failure('VM.clean_shutdown', halted)).toEqual([
      'VM_BAD_POWER_STATE',
      halted,
      'running',
      'halted',
    ])
    expect(await xapi.failure('VM.destroy', running)).toEqual([
      'VM_BAD_POWER_STATE',
      running,
      'halted, suspended',
      'running',
    ])
  })

  it('OPERATION_NOT_ALLOWED on the control domain', async () => {
    const { xapi } = await demoSim()
    const records = await xapi.call<Record<string, Record<string, unknown>>>('VM.get_all_records')
    const dom0 = Object.keys(records).find((ref) => records[ref]!.is_control_domain)!
    expect(await xapi.failure('VM.clean_shutdown', dom0)).toEqual([
      'OPERATION_NOT_ALLOWED',
      'This operation is not allowed on a control domain',
    ])
    expect((await xapi.failure('VM.snapshot', dom0, 'x'))[0]).toBe('OPERATION_NOT_ALLOWED')
  })

  it('VM_IS_TEMPLATE and VM_IS_SNAPSHOT [vm; operation]', async () => {
    const { xapi } = await demoSim()
    const template = await xapi.vmByName('Other install media')
    expect(await xapi.failure('VM.start', template, false, false)).toEqual([
      'VM_IS_TEMPLATE',
      template,
      'start',
    ])
    const snap = await xapi.call<string>('VM.snapshot', await xapi.vmByName('vm2'), 's')
    expect(await xapi.failure('VM.start', snap, false, false)).toEqual(['VM_IS_SNAPSHOT', snap, 'start'])
  })

  it('SR_OPERATION_NOT_SUPPORTED [sr] when a disk is on an SR without snapshots', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('legacy-win')
    const sr = (await xapi.call<string[]>('SR.get_by_name_label', 'Removable storage'))[0]
    expect(await xapi.failure('VM.snapshot', vm, 'x')).toEqual(['SR_OPERATION_NOT_SUPPORTED', sr])
    expect(await xapi.call('VM.get_snapshots', vm)).toEqual([])
  })

  it('VDI_IN_USE [vdi; destroy] for a disk attached to a running VM', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('Debian')
    const vbd = (await xapi.call<string[]>('VM.get_VBDs', vm))[0]!
    const vdi = await xapi.call<string>('VBD.get_VDI', vbd)
    expect(await xapi.failure('VDI.destroy', vdi)).toEqual(['VDI_IN_USE', vdi, 'destroy'])
  })

  it('OTHER_OPERATION_IN_PROGRESS [class; ref; operation; task] while a VM is exported', async () => {
    const { sim, xapi } = await demoSim({ faults: ['export-stall:2'] })
    const vm = await xapi.vmByName('vm2')
    const task = await xapi.call<string>('task.create', 'export', '')
    const controller = new AbortController()
    const exporting = fetch(`${sim.url}/export?session_id=${xapi.session}&ref=${vm}&task_id=${task}`, {
      signal: controller.signal,
    })
      .then((res) => res.body?.getReader().read())
      .catch(() => undefined)
    await exporting
    expect(await xapi.failure('VM.start', vm, false, false)).toEqual([
      'OTHER_OPERATION_IN_PROGRESS',
      'VM',
      vm,
      'export',
      task,
    ])
    controller.abort()
  })

  it('FIELD_TYPE_ERROR for a parameter of the wrong type', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    expect(await xapi.failure('VM.start', vm, 'maybe', false)).toEqual(['FIELD_TYPE_ERROR', 'start_paused'])
  })

  it('HOST_IS_SLAVE [master address] when logging in on a pool member', async () => {
    const { sim } = await demoSim({ hosts: 2 })
    expect(sim.memberUrl).toBeDefined()
    const answer = (await rawCall(sim.memberUrl!, 'session.login_with_password', ['root', SIM_PASSWORD]))
      .value as Envelope
    expect(answer).toEqual({ Status: 'Failure', ErrorDescription: ['HOST_IS_SLAVE', '127.0.0.1'] })
    // The hosts share one port: the address names none.
    expect(new URL(sim.memberUrl!).port).toBe(new URL(sim.url).port)
  })
})
