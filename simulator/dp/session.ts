// A backup session as Data Protector runs one: session pre-exec (must succeed), each tree
// backed up as a filesystem object (with object pre/post-exec), session post-exec with SMEXIT;
// the final status and an exit code like omnib's.
import { createHash, randomUUID } from 'node:crypto'
import { createReadStream, createWriteStream, promises as fsp, type Stats } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { performance } from 'node:perf_hooks'
import { pipeline } from 'node:stream/promises'
import { Transform } from 'node:stream'
import { runScript } from './exec.js'
import { reference, type Referenced } from './levels.js'
import type { BackupSpec } from './spec.js'
import {
  ensureDir,
  type CatalogFile,
  type CatalogObject,
  type Message,
  type SessionRecord,
  type SessionStatus,
  type Store,
  sessionReport,
} from './store.js'

/** omnib's exit codes, which are also SMEXIT's values. */
export const EXIT_CODES: Record<SessionStatus, number> = {
  Completed: 0,
  'Completed with errors': 10,
  'Completed with failures': 11,
  Failed: 12,
  Aborted: 13,
}

export interface SessionOptions {
  store: Store
  preview?: boolean
  signal?: AbortSignal
  /** Every session message as it happens. */
  onMessage?: (message: Message) => void
  env?: NodeJS.ProcessEnv
  /**
   * The session's backup level, as Data Protector's scheduler or `omnib -mode` gives it and
   * tells the session scripts in MODE: full, incremental, incremental1 … incremental9.
   */
  level?: string
}

export class Messages {
  readonly list: Message[] = []
  constructor(private readonly sink?: (m: Message) => void) {}
  add(source: string, text: string): void {
    const message = { time: new Date().toISOString(), source, text }
    this.list.push(message)
    this.sink?.(message)
  }
}

/** Copies one file into the session, hashing it on the way. */
async function storeFile(path: string, target: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256')
  let size = 0
  await pipeline(
    createReadStream(path),
    new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk)
        size += chunk.length
        done(null, chunk)
      },
    }),
    createWriteStream(target, { mode: 0o600 }),
  )
  return { sha256: hash.digest('hex'), size }
}

async function* walk(dir: string): AsyncGenerator<string> {
  const entries = await fsp.readdir(dir, { withFileTypes: true })
  for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) yield* walk(path)
    else if (entry.isFile()) yield path
  }
}

/** One file as the Disk Agent backs it up: copied under the session's data folder, hashed. */
async function backupFile(path: string, stat: Stats, stored: string, dataDir: string): Promise<CatalogFile> {
  const target = join(dataDir, '..', stored)
  await ensureDir(dirname(target))
  const { sha256, size } = await storeFile(path, target)
  return { path, stored, size, mtimeMs: stat.mtimeMs, mode: stat.mode & 0o777, sha256 }
}

async function backupTree(
  tree: string,
  client: string,
  dataDir: string,
  index: number,
  messages: Messages,
  at: Referenced,
  signal?: AbortSignal,
): Promise<CatalogObject> {
  const object: CatalogObject = {
    client,
    tree,
    status: 'Completed',
    files: [],
    errors: [],
    level: at.level,
    ...(at.reference ? { reference: at.reference.session } : {}),
    present: [],
  }
  // A conventional incremental: the files modified since the backup it is based on started.
  const since = at.reference ? Date.parse(at.reference.started) : -Infinity
  const objectDir = join(dataDir, String(index))
  await ensureDir(objectDir)
  try {
    for await (const path of walk(tree)) {
      if (signal?.aborted) break
      const rel = relative(tree, path)
      const stored = join('data', String(index), rel)
      try {
        const stat = await fsp.stat(path)
        object.present!.push(path)
        if (stat.mtimeMs > since) object.files.push(await backupFile(path, stat, stored, dataDir))
      } catch (error) {
        const reason = (error as NodeJS.ErrnoException).code ?? String(error)
        object.errors.push(`${path}: ${reason}`)
        messages.add('VBDA', `[Minor] Cannot read ${path}: ${reason}`)
      }
    }
  } catch (error) {
    object.status = 'Aborted'
    messages.add(
      'VBDA',
      `[Major] Cannot open ${tree}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
    )
    return object
  }
  if (object.errors.length) object.status = 'Completed/Errors'
  return object
}

/** What a script run said: whether it succeeded, or why not. */
interface ScriptOutcome {
  ok: boolean
  timedOut: boolean
  aborted: boolean
}

/**
 * One backup session under way: its id and folder, its environment (what Data Protector gives
 * every script), its messages and the objects backed up so far. runBackupSession drives it:
 * the session pre-exec, each object (its own scripts around it), the session post-exec, finish.
 */
class BackupSession {
  readonly id: string
  readonly dir: string
  readonly started = new Date()
  readonly t0 = performance.now()
  readonly messages: Messages
  readonly env: NodeJS.ProcessEnv
  readonly preview: boolean
  readonly objects: CatalogObject[] = []
  status: SessionStatus = 'Completed'
  /** Objects that failed, and that completed with errors, as their backup ended (before their post-exec). */
  failed = 0
  incomplete = 0

  constructor(
    readonly spec: BackupSpec,
    readonly options: SessionOptions,
  ) {
    const { id, dir } = options.store.begin()
    this.id = id
    this.dir = dir
    this.preview = options.preview === true
    this.messages = new Messages(options.onMessage)
    this.env = {
      ...(options.env ?? process.env),
      DATALIST: spec.name,
      MODE: options.level ?? 'full',
      OWNER: spec.owner,
      PREVIEW: this.preview ? '1' : '0',
      RESTARTED: '0',
      SESSIONID: id,
      SESSIONKEY: randomUUID(),
    }
  }

  get aborted(): boolean {
    return this.options.signal?.aborted === true
  }

  /** Runs one of the specification's scripts with the session's environment, its lines logged. */
  async script(what: string, command: string, extra: NodeJS.ProcessEnv = {}): Promise<ScriptOutcome> {
    const { messages, spec } = this
    messages.add('BSM', `[Normal] Starting ${what} command "${command}"`)
    const result = await runScript(command, {
      env: { ...this.env, ...extra },
      inactivityTimeout: spec.inactivityTimeout,
      onLine: (line) => messages.add(what, line),
      ...(this.options.signal ? { signal: this.options.signal } : {}),
    })
    if (result.problem === 'timeout')
      messages.add(
        'BSM',
        `[Critical] The ${what} command was silent for ${spec.inactivityTimeout} s: aborted`,
      )
    else if (result.code !== 0)
      messages.add('BSM', `[Critical] The ${what} command failed with exit code ${result.code}`)
    return {
      ok: result.code === 0 && !result.problem,
      timedOut: result.problem === 'timeout',
      aborted: result.problem === 'aborted',
    }
  }

  /** One object (a tree): its pre-exec, its backup (or preview), its post-exec. */
  async object(index: number, tree: string): Promise<CatalogObject> {
    const { spec, messages } = this
    const own = spec.objectScripts?.[tree] ?? {}
    const objectPreExec = own.preExec ?? spec.objectPreExec
    const objectPostExec = own.postExec ?? spec.objectPostExec
    if (objectPreExec && !(await this.script('object pre-exec', objectPreExec)).ok) {
      this.failed++
      return { client: spec.client, tree, status: 'Aborted', files: [], errors: ['object pre-exec failed'] }
    }
    const label = `${spec.client}:${tree} '${tree}'`
    let object: CatalogObject
    if (this.preview) {
      object = { client: spec.client, tree, status: 'Completed', files: [], errors: [] }
      let count = 0
      try {
        for await (const _path of walk(tree)) count++
      } catch {
        object.status = 'Aborted'
      }
      messages.add('VBDA', `[Normal] Preview of ${label}: ${count} file(s) would be backed up`)
    } else {
      const at = reference(this.options.store, spec.client, tree, this.env.MODE!, this.started.toISOString())
      const kind =
        at.level === 0 ? 'Full' : `Incremental ${at.level} based on session ${at.reference!.session}`
      messages.add('VBDA', `[Normal] Starting backup of ${label} (${kind})`)
      if (at.note) messages.add('VBDA', `[Normal] ${label}: ${at.note}`)
      object = await backupTree(
        tree,
        spec.client,
        join(this.dir, 'data'),
        index,
        messages,
        at,
        this.options.signal,
      )
      messages.add('VBDA', `[Normal] Completed backup of ${label}: ${object.files.length} file(s)`)
    }
    if (object.status === 'Aborted') this.failed++
    if (object.status === 'Completed/Errors') this.incomplete++
    if (objectPostExec) {
      const post = await this.script('object post-exec', objectPostExec, {
        BDACC: object.status === 'Aborted' ? '1' : '0',
      })
      if (!post.ok) object.status = 'Aborted'
    }
    return object
  }

  /** The session's outcome from its objects, as Data Protector rates it. */
  rate(): void {
    if (this.aborted) this.status = 'Aborted'
    else if (this.failed === this.spec.trees.length) this.status = 'Failed'
    else if (this.failed > 0) this.status = 'Completed with failures'
    else if (this.incomplete > 0) this.status = 'Completed with errors'
  }

  /** The record, its closing message, stored. */
  finish(): SessionRecord {
    const { id, objects, status, messages } = this
    const report = sessionReport(objects, this.t0)
    const { files, bytes, seconds } = report
    messages.add(
      'BSM',
      `[Normal] Session ${id} finished: ${status} (${objects.length} object(s), ${files} file(s), ${bytes} bytes, ${seconds.toFixed(1)} s)`,
    )
    const record: SessionRecord = {
      id,
      type: this.preview ? 'preview' : 'backup',
      spec: this.spec.name,
      status,
      exitCode: EXIT_CODES[status],
      started: this.started.toISOString(),
      finished: new Date().toISOString(),
      messages: messages.list,
      objects,
      report,
    }
    this.options.store.commit(this.dir, record)
    return record
  }
}

/** Runs the backup session and stores it; returns the record. */
export async function runBackupSession(spec: BackupSpec, options: SessionOptions): Promise<SessionRecord> {
  const session = new BackupSession(spec, options)
  const { messages } = session
  messages.add(
    'BSM',
    `[Normal] Backup session ${session.id} started for specification "${spec.name}"${session.preview ? ' (preview)' : ''}`,
  )
  const runSessionScripts = !session.preview || spec.execScriptOnPreview
  if (runSessionScripts && spec.preExec) {
    const pre = await session.script('pre-exec', spec.preExec)
    if (!pre.ok) {
      session.status = pre.aborted || session.aborted || pre.timedOut ? 'Aborted' : 'Failed'
      messages.add(
        'BSM',
        '[Critical] The pre-exec command failed: the session is aborted, nothing is backed up',
      )
      return session.finish()
    }
  }
  for (const [index, tree] of spec.trees.entries()) {
    if (session.aborted) break
    session.objects.push(await session.object(index, tree))
  }
  session.rate()
  if (runSessionScripts && spec.postExec && !session.aborted) {
    const post = await session.script('post-exec', spec.postExec, {
      SMEXIT: String(EXIT_CODES[session.status]),
    })
    if (!post.ok && session.status === 'Completed') session.status = 'Completed with errors'
  }
  return session.finish()
}
