// The simulator's object database: one table per class, records keyed by OpaqueRef, an event
// log for event.from, and persistence of the non-volatile classes to <stateDir>/state.json.
import { randomUUID } from 'node:crypto'
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { XapiFailure } from './errors.js'
import { NULL_REF, SCHEMA, type FieldType } from './schema.js'
import { Double, type Wire } from './xmlrpc.js'

export type Rec = Record<string, unknown>

/** Fields whose empty value is the null reference rather than "". */
const REF_VALUED = new Set([
  'SR',
  'VM',
  'VDI',
  'network',
  'master',
  'default_SR',
  'suspend_image_SR',
  'crash_dump_SR',
  'snapshot_of',
  'parent',
  'resident_on',
  'affinity',
  'metrics',
  'guest_metrics',
  'suspend_VDI',
  'suspend_SR',
  'appliance',
  'this_host',
  'this_user',
  'subtask_of',
  'metadata_of_pool',
  'backend',
])

/** Classes xapi keeps only in memory: gone after a restart. */
const VOLATILE = new Set(['session', 'task'])

const EPOCH = new Date(0)
const MAX_EVENTS = 20_000

export interface DbEvent {
  id: number
  cls: string
  operation: 'add' | 'mod' | 'del'
  ref: string
  snapshot?: Rec
}

function emptyValue(field: string, type: FieldType): unknown {
  switch (type) {
    case 's':
      return REF_VALUED.has(field) ? NULL_REF : ''
    case 'i':
    case 'f':
      return 0
    case 'b':
      return false
    case 'd':
      return EPOCH
    case 'S':
      return []
    case 'M':
      return {}
  }
}

export function newRef(): string {
  return `OpaqueRef:${randomUUID()}`
}

/** Converts a stored record to its wire form, using the class schema for ints, floats and dates. */
export function recordToWire(cls: string, rec: Rec): Wire {
  const fields = SCHEMA[cls]!.fields
  const out: Record<string, Wire> = {}
  for (const [name, type] of Object.entries(fields)) out[name] = fieldToWire(type, rec[name])
  return out
}

export function fieldToWire(type: FieldType, value: unknown): Wire {
  switch (type) {
    case 'i':
      return String(value ?? 0)
    case 'f':
      return new Double(Number(value ?? 0))
    case 'b':
      return Boolean(value)
    case 'd':
      return value instanceof Date ? value : new Date(String(value ?? 0))
    case 'S':
      return Array.isArray(value) ? value.map(String) : []
    case 'M':
      return Object.fromEntries(Object.entries((value ?? {}) as Rec).map(([k, v]) => [k, String(v)]))
    case 's':
      return String(value ?? '')
  }
}

export class Db {
  readonly #tables = new Map<string, Map<string, Rec>>()
  readonly #refByUuid = new Map<string, string>()
  readonly #events: DbEvent[] = []
  #lastEventId = 0
  #waiters = new Set<() => void>()
  #saveTimer: NodeJS.Timeout | undefined
  readonly stateDir: string

  constructor(stateDir: string) {
    this.stateDir = stateDir
    for (const cls of Object.keys(SCHEMA)) this.#tables.set(cls, new Map())
  }

  /** Loads `<stateDir>/state.json` if present; returns whether there was one. */
  load(): boolean {
    let text: string
    try {
      text = readFileSync(join(this.stateDir, 'state.json'), 'utf8')
    } catch {
      return false
    }
    const saved = JSON.parse(text) as { tables: Record<string, Record<string, Rec>> }
    for (const [cls, rows] of Object.entries(saved.tables)) {
      const schema = SCHEMA[cls]
      if (!schema) continue
      for (const [ref, rec] of Object.entries(rows)) {
        for (const [name, type] of Object.entries(schema.fields)) {
          if (type === 'd') rec[name] = new Date(String(rec[name] ?? 0))
        }
        // Tasks do not survive a restart, so neither do the operations they were running (xapi
        // cancels them at start-up).
        if ('current_operations' in schema.fields) rec.current_operations = {}
        this.#tables.get(cls)!.set(ref, rec)
        this.#refByUuid.set(String(rec.uuid), ref)
      }
    }
    return true
  }

  /** Writes the persistent classes now (atomically: temporary file, then rename). */
  saveNow(): void {
    clearTimeout(this.#saveTimer)
    this.#saveTimer = undefined
    const tables: Record<string, Record<string, Rec>> = {}
    for (const [cls, rows] of this.#tables) {
      if (!VOLATILE.has(cls)) tables[cls] = Object.fromEntries(rows)
    }
    mkdirSync(this.stateDir, { recursive: true })
    const file = join(this.stateDir, 'state.json')
    writeFileSync(`${file}.tmp`, JSON.stringify({ version: 1, tables }))
    renameSync(`${file}.tmp`, file)
  }

  #scheduleSave(cls: string): void {
    if (VOLATILE.has(cls) || this.#saveTimer) return
    this.#saveTimer = setTimeout(() => this.saveNow(), 20)
  }

  /** Creates a record; fields not given get xapi's empty value. Returns the new ref. */
  create(cls: string, fields: Rec, ref = newRef()): string {
    const schema = SCHEMA[cls]!
    const rec: Rec = {}
    for (const [name, type] of Object.entries({ ...schema.fields, ...schema.internal }))
      rec[name] = fields[name] ?? emptyValue(name, type)
    if (!rec.uuid) rec.uuid = randomUUID()
    this.#tables.get(cls)!.set(ref, rec)
    this.#refByUuid.set(String(rec.uuid), ref)
    this.#emit(cls, 'add', ref, rec)
    return ref
  }

  get(cls: string, ref: unknown): Rec | undefined {
    return typeof ref === 'string' ? this.#tables.get(cls)?.get(ref) : undefined
  }

  /** The record, or HANDLE_INVALID [class; ref] as xapi raises it. */
  require(cls: string, ref: unknown): Rec {
    const rec = this.get(cls, ref)
    if (!rec) throw new XapiFailure('HANDLE_INVALID', cls, String(ref))
    return rec
  }

  has(cls: string, ref: unknown): boolean {
    return this.get(cls, ref) !== undefined
  }

  refByUuid(cls: string, uuid: string): string | undefined {
    const ref = this.#refByUuid.get(uuid)
    return ref && this.has(cls, ref) ? ref : undefined
  }

  update(cls: string, ref: string, patch: Rec): Rec {
    const rec = this.require(cls, ref)
    if (patch.uuid !== undefined && patch.uuid !== rec.uuid) {
      this.#refByUuid.delete(String(rec.uuid))
      this.#refByUuid.set(String(patch.uuid), ref)
    }
    Object.assign(rec, patch)
    this.#emit(cls, 'mod', ref, rec)
    return rec
  }

  destroy(cls: string, ref: string): void {
    const rec = this.#tables.get(cls)?.get(ref)
    if (!rec) return
    this.#tables.get(cls)!.delete(ref)
    if (this.#refByUuid.get(String(rec.uuid)) === ref) this.#refByUuid.delete(String(rec.uuid))
    this.#emit(cls, 'del', ref)
  }

  all(cls: string): [string, Rec][] {
    return [...(this.#tables.get(cls) ?? new Map<string, Rec>()).entries()]
  }

  count(cls: string): number {
    return this.#tables.get(cls)?.size ?? 0
  }

  /** Adds `value` to the set field, or removes it. */
  link(cls: string, ref: string, field: string, value: string, present: boolean): void {
    const rec = this.get(cls, ref)
    if (!rec) return
    const set = (rec[field] as string[]).filter((v) => v !== value)
    if (present) set.push(value)
    this.update(cls, ref, { [field]: set })
  }

  #emit(cls: string, operation: DbEvent['operation'], ref: string, rec?: Rec): void {
    this.#lastEventId += 1
    const event: DbEvent = { id: this.#lastEventId, cls, operation, ref }
    if (rec) event.snapshot = { ...rec }
    this.#events.push(event)
    if (this.#events.length > MAX_EVENTS) this.#events.splice(0, this.#events.length - MAX_EVENTS)
    this.#scheduleSave(cls)
    for (const wake of this.#waiters) wake()
  }

  get lastEventId(): number {
    return this.#lastEventId
  }

  /** Events after `id`; `lost` when the log no longer reaches back that far. */
  eventsSince(id: number): { events: DbEvent[]; lost: boolean } {
    const first = this.#events[0]
    const lost = first !== undefined && id < first.id - 1
    return { events: this.#events.filter((e) => e.id > id), lost }
  }

  /** Resolves on the next change or after `ms`, whichever comes first. */
  waitForChange(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.#waiters.delete(done)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#waiters.add(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }
}
