// The field accessors xapi generates for every class: get_record, get_all(_records),
// get_by_uuid, get_by_name_label, get_<field>, set_<field>, add_to_/remove_from_<map>, tags.
import { fieldToWire, recordToWire } from '../../model/db.js'
import { XapiFailure } from '../../model/errors.js'
import type { MethodTable } from '../dispatch.js'
import { SCHEMA, type FieldType } from '../../model/schema.js'
import type { Wire } from '../../model/xmlrpc.js'

const PARAM_FOR: Record<FieldType, 'string' | 'int' | 'float' | 'bool' | 'strings' | 'map' | 'any'> = {
  s: 'string',
  i: 'int',
  f: 'float',
  b: 'bool',
  d: 'any',
  S: 'strings',
  M: 'map',
}

/** Classes without get_all / get_all_records on the wire. */
const NO_GET_ALL = new Set(['session'])
const WITH_NAME_LOOKUP = new Set(['host', 'SR', 'VDI', 'network', 'VM', 'task'])

type Put = (name: string, def: Parameters<MethodTable['set']>[1]) => void
type Self = { readonly name: 'self'; readonly type: `ref:${string}` }

export function registerGeneric(table: MethodTable): void {
  for (const [cls, schema] of Object.entries(SCHEMA)) {
    const self = { name: 'self', type: `ref:${cls}` } as const
    const put: Put = (name, def) => {
      table.set(`${cls}.${name}`, { noAsync: true, ...def })
    }
    registerLookups(put, cls, self)
    for (const [field, type] of Object.entries(schema.fields)) {
      put(`get_${field}`, {
        params: [self],
        run: ({ sim }, [ref]) => fieldToWire(type, sim.db.require(cls, ref)[field]),
      })
    }
    for (const field of schema.writable) registerSetters(put, cls, self, field, schema.fields[field]!)
    if ('tags' in schema.fields) {
      for (const [name, present] of [
        ['add_tags', true],
        ['remove_tags', false],
      ] as const) {
        put(name, {
          params: [self, { name: 'value', type: 'string' }],
          run: ({ sim }, [ref, tag]) => sim.db.link(cls, String(ref), 'tags', String(tag), present),
        })
      }
    }
  }
}

/** A class's records found: by ref, by uuid, all of them, by name. */
function registerLookups(put: Put, cls: string, self: Self): void {
  put('get_record', {
    params: [self],
    run: ({ sim }, [ref]) => recordToWire(cls, sim.db.require(cls, ref)),
  })
  put('get_by_uuid', {
    params: [{ name: 'uuid', type: 'string' }],
    run: ({ sim }, [uuid]) => {
      const ref = sim.db.refByUuid(cls, String(uuid))
      if (!ref) throw new XapiFailure('UUID_INVALID', cls, String(uuid))
      return ref
    },
  })
  if (!NO_GET_ALL.has(cls)) {
    put('get_all', { params: [], run: ({ sim }) => sim.db.all(cls).map(([ref]) => ref) })
    put('get_all_records', {
      params: [],
      run: ({ sim }) => {
        const out: Record<string, Wire> = {}
        for (const [ref, rec] of sim.db.all(cls)) out[ref] = recordToWire(cls, rec)
        return out
      },
    })
  }
  if (WITH_NAME_LOOKUP.has(cls)) {
    put('get_by_name_label', {
      params: [{ name: 'label', type: 'string' }],
      run: ({ sim }, [label]) =>
        sim.db
          .all(cls)
          .filter(([, rec]) => rec.name_label === label)
          .map(([ref]) => ref),
    })
  }
}

/** A writable field's set_, and for a map its add_to_ and remove_from_. */
function registerSetters(put: Put, cls: string, self: Self, field: string, type: FieldType): void {
  put(`set_${field}`, {
    params: [self, { name: 'value', type: PARAM_FOR[type] }],
    run: ({ sim }, [ref, value]) => {
      sim.db.update(cls, String(ref), { [field]: type === 'M' ? stringMap(value) : value })
    },
  })
  if (type !== 'M') return
  put(`add_to_${field}`, {
    params: [self, { name: 'key', type: 'string' }, { name: 'value', type: 'string' }],
    run: ({ sim }, [ref, key, value]) => {
      const map = { ...(sim.db.require(cls, ref)[field] as Record<string, string>) }
      // xapi refuses to overwrite a key with add_to_*: the caller must remove it first.
      if (String(key) in map) throw new XapiFailure('MAP_DUPLICATE_KEY', cls, field, String(ref), String(key))
      map[String(key)] = String(value)
      sim.db.update(cls, String(ref), { [field]: map })
    },
  })
  put(`remove_from_${field}`, {
    params: [self, { name: 'key', type: 'string' }],
    run: ({ sim }, [ref, key]) => {
      const map = { ...(sim.db.require(cls, ref)[field] as Record<string, string>) }
      delete map[String(key)]
      sim.db.update(cls, String(ref), { [field]: map })
    },
  })
}

function stringMap(value: unknown): Record<string, string> {
  return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, String(v)]))
}
