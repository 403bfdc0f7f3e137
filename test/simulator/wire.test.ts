// The XML-RPC wire as xapi speaks it: envelope bytes, value encodings, paths, listMethods, Async.
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { rawCall } from '../helpers/rpc.js'
import { demoSim } from '../helpers/sim.js'
import { DEFAULT_PASSWORD as SIM_PASSWORD } from '../../simulator/xapi/server.js'

describe('XML-RPC wire format', () => {
  it('answers with a Status/Value struct, no whitespace, content-type exactly text/xml', async () => {
    const { sim } = await demoSim()
    const answer = await rawCall(sim.url, 'session.login_with_password', ['root', SIM_PASSWORD])
    expect(answer.status).toBe(200)
    expect(answer.headers['content-type']).toBe('text/xml')
    expect(answer.headers['access-control-allow-origin']).toBe('*')
    expect(answer.body).toMatch(
      /^<\?xml version="1.0"\?><methodResponse><params><param><value><struct><member><name>Status<\/name><value>Success<\/value><\/member><member><name>Value<\/name><value>OpaqueRef:[0-9a-f-]{36}<\/value><\/member><\/struct><\/value><\/param><\/params><\/methodResponse>$/,
    )
  })

  it('sends failures as ErrorDescription arrays, never as <fault>', async () => {
    const { sim } = await demoSim()
    const answer = await rawCall(sim.url, 'VM.get_all', ['OpaqueRef:00000000-0000-0000-0000-000000000000'])
    expect(answer.body).not.toContain('<fault>')
    expect(answer.body).toContain(
      '<member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data><value>SESSION_INVALID</value>',
    )
  })

  it('encodes ints as untyped strings, bools as <boolean>, floats as <double>, dates in basic ISO form', async () => {
    const { sim, xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    const raw = await rawCall(sim.url, 'VM.get_record', [xapi.session, vm])
    expect(raw.body).toMatch(/<name>memory_static_max<\/name><value>2147483648<\/value>/)
    expect(raw.body).toMatch(/<name>is_a_template<\/name><value><boolean>0<\/boolean><\/value>/)
    expect(raw.body).toMatch(/<name>HVM_shadow_multiplier<\/name><value><double>1<\/double><\/value>/)
    expect(raw.body).toMatch(
      /<name>snapshot_time<\/name><value><dateTime.iso8601>19700101T00:00:00Z<\/dateTime.iso8601><\/value>/,
    )
    expect(raw.body).toMatch(/<name>snapshot_of<\/name><value>OpaqueRef:NULL<\/value>/)
    expect(raw.body).toMatch(/<name>name_description<\/name><value><\/value>/)
    expect(raw.body).not.toMatch(/<i8>|<int>|<string>/)
  })

  it.each(['/', '/RPC2', '/xmlrpc', '/some/other/path'])('serves XML-RPC on POST %s', async (path) => {
    const { sim } = await demoSim()
    const answer = await rawCall(sim.url, 'session.login_with_password', ['root', SIM_PASSWORD], path)
    expect((answer.value as { Status: string }).Status).toBe('Success')
  })

  it('answers /jsonrpc as an older host does (text/xml), so clients fall back to XML-RPC', async () => {
    const { sim } = await demoSim()
    const res = await request(`${sim.url}/jsonrpc`, {
      method: 'POST',
      body: JSON.stringify({
        jsonrpc: '2.0',
        method: 'session.login_with_password',
        params: ['root', SIM_PASSWORD],
        id: 0,
      }),
      headers: { 'content-type': 'application/json' },
    })
    await res.body.dump()
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toBe('text/xml')
  })

  it('returns HTTP 500 with an HTML page for a malformed request', async () => {
    const { sim } = await demoSim()
    const res = await request(sim.url, {
      method: 'POST',
      body: '<methodCall><methodName>x',
      headers: { 'content-type': 'text/xml' },
    })
    expect(res.statusCode).toBe(500)
    expect(res.headers['content-type']).toBe('text/html')
    expect(await res.body.text()).toContain('Xmlrpc.Parse_error')
  })

  it('returns system.listMethods without the Status/Value envelope', async () => {
    const { sim } = await demoSim()
    const answer = await rawCall(sim.url, 'system.listMethods', [])
    expect(answer.body).toMatch(/^<\?xml version="1.0"\?><methodResponse><params><param><value><array><data>/)
    const methods = answer.value as string[]
    expect(methods).toEqual(
      expect.arrayContaining(['VM.snapshot', 'VM.get_all_records', 'task.get_record', 'event.from']),
    )
  })

  it('accepts Class_method as well as Class.method, and trailing defaulted params may be left out', async () => {
    const { xapi } = await demoSim()
    expect(await xapi.call<string[]>('VM_get_all')).toEqual(await xapi.call<string[]>('VM.get_all'))
    const vm = await xapi.vmByName('vm2')
    const snap = await xapi.call<string>('VM.snapshot', vm, 'two-params')
    expect(snap).toMatch(/^OpaqueRef:/)
  })

  it('runs Async calls as tasks whose result is an XML-RPC fragment string', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('Debian')
    const task = await xapi.call<string>('Async.VM.snapshot', vm, 'async-snap')
    const done = await xapi.waitTask(task)
    expect(done.status).toBe('success')
    expect(done.progress).toBe(1)
    expect(done.result).toMatch(/^<value>OpaqueRef:[0-9a-f-]{36}<\/value>$/)
    const failing = await xapi.call<string>('Async.VM.start', vm, false, false)
    const failed = await xapi.waitTask(failing)
    expect(failed.status).toBe('failure')
    expect(failed.error_info).toEqual(['VM_BAD_POWER_STATE', vm, 'halted', 'running'])
  })

  it('has no Async twin for field accessors', async () => {
    const { xapi } = await demoSim()
    expect(await xapi.failure('Async.VM.get_all')).toEqual(['MESSAGE_METHOD_UNKNOWN', 'Async.VM.get_all'])
  })

  it('reports changes through event.inject and event.from, with lower-case classes', async () => {
    const { xapi } = await demoSim()
    const pool = (await xapi.call<string[]>('pool.get_all'))[0]!
    const token = await xapi.call<string>('event.inject', 'pool', pool)
    expect(token).toMatch(/^\d{20},\d{20}$/)
    const vm = await xapi.vmByName('vm2')
    await xapi.call('VM.set_name_description', vm, 'changed')
    const batch = await xapi.call<{ events: Record<string, unknown>[]; token: string }>(
      'event.from',
      ['vm'],
      token,
      1.0,
    )
    const mine = batch.events.find((e) => e.ref === vm)
    expect(mine).toMatchObject({ class: 'vm', operation: 'mod' })
    expect((mine!.snapshot as Record<string, unknown>).name_description).toBe('changed')
    const started = Date.now()
    const empty = await xapi.call<{ events: unknown[] }>('event.from', ['vm'], batch.token, 0.3)
    expect(empty.events).toEqual([])
    expect(Date.now() - started).toBeGreaterThanOrEqual(250)
    expect(await xapi.failure('event.from', ['vm'], 'garbage', 0.1)).toEqual([
      'EVENT_FROM_TOKEN_PARSE_FAILURE',
      'garbage',
    ])
  })

  it('keeps field accessors generic: get_<field>, set_<field>, add_to_/remove_from_ maps, tags', async () => {
    const { xapi } = await demoSim()
    const vm = await xapi.vmByName('vm2')
    await xapi.call('VM.add_to_other_config', vm, 'dpxen:test', 'yes')
    expect(await xapi.failure('VM.add_to_other_config', vm, 'dpxen:test', 'again')).toEqual([
      'MAP_DUPLICATE_KEY',
      'VM',
      'other_config',
      vm,
      'dpxen:test',
    ])
    expect((await xapi.call<Record<string, string>>('VM.get_other_config', vm))['dpxen:test']).toBe('yes')
    await xapi.call('VM.remove_from_other_config', vm, 'dpxen:test')
    expect((await xapi.call<Record<string, string>>('VM.get_other_config', vm))['dpxen:test']).toBeUndefined()
    await xapi.call('VM.add_tags', vm, 'backup')
    expect(await xapi.call('VM.get_tags', vm)).toEqual(['backup'])
    expect(await xapi.failure('VM.set_power_state', vm, 'Running')).toEqual([
      'MESSAGE_METHOD_UNKNOWN',
      'VM.set_power_state',
    ])
    const uuid = await xapi.call<string>('VM.get_uuid', vm)
    expect(await xapi.call('VM.get_by_uuid', uuid)).toBe(vm)
  })
})
