// Fault injection: `--fault KIND[:ARG]`, repeatable, also changeable while the simulator runs.

export const FAULT_KINDS = [
  'export-truncate', // cut the export after ARG bytes; the task fails
  'export-lose-tail', // send only the first ARG bytes of the export, yet the task succeeds (a proxy that drops the end)
  'export-stall', // stop sending mid-export for ARG seconds
  'export-keepalive', // emit xapi's empty keep-alive chunk entries
  'snapshot-fail', // VM.snapshot fails with SR_BACKEND_FAILURE_109 (chain too long)
  'vdi-in-use-once', // the first VDI.destroy fails with VDI_IN_USE
  'session-invalid-once', // the next call with a session ends that session (SESSION_INVALID)
  'import-fail', // the import task fails after reading the whole body
  'import-stall', // the import stops reading the body for ARG seconds after its first MiB
  'start-fail', // VM.start fails
  'rpc-hang', // every XML-RPC call but the login and logout gets no answer (a host that hangs)
  'shutdown-slow', // an asynchronous clean shutdown takes ARG seconds (cancelled at once if asked)
  'call-fail', // ARG = METHOD@N: the Nth call of METHOD and every later one fail with INTERNAL_ERROR
  'vhd-base-gone', // once: the base of an export_raw_vdi?base= is deleted under it (200, then UUID_INVALID inside the body)
  'vhd-truncate', // cut a format=vhd export after ARG bytes; the task fails with VDI_IO_ERROR
  'redirect-to', // the handlers' 302s name the address ARG (a proxy or a stale record sending the client elsewhere)
  'delta-refused', // every export_raw_vdi with base= fails after the 200 as on a non-VHD image (a storage whose records do not show its image format)
  'export-no-host', // no host can see the VM's SRs (the host of its local SR is down): /export fails the task with NO_HOSTS_AVAILABLE and closes without an answer
  'cbt-unlicensed', // the pool has no CBT licence: VDI.enable_cbt fails with LICENCE_RESTRICTION [CBT]
  'nbd-refused', // every NBD connection is closed at once (a firewall, xapi-nbd not running)
  'nbd-cut', // an NBD connection is dropped after ARG bytes of data (a network cut mid-read)
  'nbd-stall', // every NBD read stops for ARG seconds after its reply header (a host that hangs mid-read)
  'nbd-hang', // the storage under every NBD read hangs for ARG seconds after its reply header: the read outlives a client that goes, the disk attached to dom0 (VDI.destroy: VDI_IN_USE) until it ends
  'guest-no-boot', // a VM that starts never boots its guest: no guest agent report, no answer on its xenstore key
  'sr-full', // every new disk fails SR_FULL [size; 0] (snapshots, imports, VDI.create): the storage has no room, whatever the SR's records say
  'start-no-host', // VM.start fails NO_HOSTS_AVAILABLE, and VM.assert_can_boot_here says every host lacks the memory (HOST_NOT_ENOUGH_FREE_MEMORY)
  'cbt-base-gone', // once: the base (vdi_from) of the next VDI.list_changed_blocks is destroyed just before it answers (HANDLE_INVALID), as when someone deletes it during the run
  'cbt-reset', // once: the next snapshot of a disk with CBT finds its log gone, CBT turned off under it (SM's _disable_cbt_on_error, a storage migration)
] as const

export type FaultKind = (typeof FAULT_KINDS)[number]

export interface Fault {
  kind: FaultKind
  arg?: string
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  K: 1024,
  KIB: 1024,
  M: 1024 ** 2,
  MIB: 1024 ** 2,
  G: 1024 ** 3,
  GIB: 1024 ** 3,
  T: 1024 ** 4,
  TIB: 1024 ** 4,
}

/** Parses sizes like 4096, 8MiB, 4GiB, 1.5G. */
export function parseSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text)
  const unit = match ? SIZE_UNITS[match[2]!.toUpperCase()] : undefined
  if (!match || unit === undefined) throw new Error(`not a size: "${text}" (examples: 4096, 8MiB, 4GiB)`)
  return Math.round(Number(match[1]) * unit)
}

/** Parses one `KIND[:ARG]` spec; throws a one-line error naming what is wrong. */
export function parseFault(spec: string): Fault {
  const [kind, ...rest] = spec.split(':')
  const arg = rest.length ? rest.join(':') : undefined
  if (!FAULT_KINDS.includes(kind as FaultKind)) {
    throw new Error(`unknown fault "${kind}" (known: ${FAULT_KINDS.join(', ')})`)
  }
  if (kind === 'export-truncate' || kind === 'export-lose-tail' || kind === 'nbd-cut') parseSize(arg ?? '')
  if (kind === 'call-fail' && !/^[A-Za-z_]+\.[A-Za-z_]+@[1-9]\d*$/.test(arg ?? ''))
    throw new Error(
      'call-fail needs METHOD@N, e.g. call-fail:VBD.create@2 (the 2nd VBD.create and later fail)',
    )
  if (
    ['export-stall', 'import-stall', 'shutdown-slow', 'nbd-stall', 'nbd-hang'].includes(kind!) &&
    !(Number(arg) >= 0)
  ) {
    throw new Error(`${kind} needs seconds, e.g. ${kind}:30`)
  }
  return { kind: kind as FaultKind, ...(arg === undefined ? {} : { arg }) }
}

/** The active faults. Faults named *-once are used up by the first call they affect. */
export class Faults {
  #active: Fault[] = []
  /** Calls seen per method while a call-fail fault names it. */
  #calls = new Map<string, number>()

  constructor(specs: string[] = []) {
    for (const spec of specs) this.add(spec)
  }

  add(spec: string | Fault): void {
    this.#active.push(typeof spec === 'string' ? parseFault(spec) : spec)
  }

  clear(kind?: FaultKind): void {
    this.#active = kind ? this.#active.filter((f) => f.kind !== kind) : []
    if (!kind || kind === 'call-fail') this.#calls.clear()
  }

  list(): Fault[] {
    return [...this.#active]
  }

  get(kind: FaultKind): Fault | undefined {
    return this.#active.find((f) => f.kind === kind)
  }

  /** Counts a call of `method`; whether a call-fail fault makes it fail. */
  callFails(method: string): boolean {
    const fault = this.#active.find((f) => f.kind === 'call-fail' && f.arg?.startsWith(`${method}@`))
    if (!fault) return false
    const seen = (this.#calls.get(method) ?? 0) + 1
    this.#calls.set(method, seen)
    return seen >= Number(fault.arg!.slice(method.length + 1))
  }

  /** Returns the fault and removes it (for one-shot faults). */
  take(kind: FaultKind): Fault | undefined {
    const index = this.#active.findIndex((f) => f.kind === kind)
    if (index < 0) return undefined
    return this.#active.splice(index, 1)[0]
  }
}
