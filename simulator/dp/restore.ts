// A restore session: the selected files of a backup session put back where they were (or into
// another folder), with Data Protector's conflict choices, then the restore post-exec. The files
// are those of the session's whole restore chain, down to its Full (levels.ts), less the files
// deleted before the session when omitDeletedFiles is chosen.
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs'
import { dirname, join, relative, sep } from 'node:path'
import { performance } from 'node:perf_hooks'
import { pipeline } from 'node:stream/promises'
import { runScript } from './exec.js'
import { restoreChain } from './levels.js'
import { EXIT_CODES, Messages } from './session.js'
import {
  sessionReport,
  type CatalogFile,
  type CatalogObject,
  type Message,
  type SessionRecord,
  type SessionStatus,
  type Store,
} from './store.js'

export type Conflict = 'overwrite' | 'no-overwrite' | 'keep-most-recent'

export interface RestoreOptions {
  store: Store
  session: string
  /** Restore only these paths (and what is below them); all when empty. */
  trees: string[]
  /** Put files here (below their object's folder), not where they were. */
  into?: string
  conflict: Conflict
  /** Data Protector's restore option "Omit deleted files". */
  omitDeletedFiles?: boolean
  preExec?: string
  postExec?: string
  /** Seconds a script may stay silent. */
  inactivityTimeout?: number
  signal?: AbortSignal
  onMessage?: (message: Message) => void
  env?: NodeJS.ProcessEnv
}

function selected(path: string, trees: string[]): boolean {
  return trees.length === 0 || trees.some((t) => path === t || path.startsWith(t.endsWith(sep) ? t : t + sep))
}

/**
 * The files a restore of the object in session `id` brings back: the newest copy of each file of
 * its restore chain; with omitDeletedFiles, only those in the object when the session ran.
 */
function chainFiles(
  options: RestoreOptions,
  id: string,
  object: CatalogObject,
  messages: Messages,
): { files: { file: CatalogFile; sessionDir: string }[]; broken?: string } {
  const { chain, broken } = restoreChain(options.store, id, object)
  const label = `${object.client}:${object.tree}`
  if (broken) messages.add('RSM', `[Major] The restore chain of ${label} is broken: ${broken}`)
  else if (chain.length > 1)
    messages.add(
      'RSM',
      `[Normal] Restore chain of ${label}: sessions ${chain.map((c) => c.session).join(', ')}`,
    )
  const newest = new Map<string, { file: CatalogFile; sessionDir: string }>()
  for (const link of chain)
    for (const file of link.object.files)
      newest.set(file.path, { file, sessionDir: options.store.folder(link.session) })
  const keep = options.omitDeletedFiles && object.present ? new Set(object.present) : undefined
  const files = [...newest.values()].filter(({ file }) => !keep || keep.has(file.path))
  return { files, ...(broken ? { broken } : {}) }
}

/** One object of the backup session: its files (its restore chain's newest copies) put back. */
async function restoreObject(
  options: RestoreOptions,
  sourceId: string,
  object: CatalogObject,
  messages: Messages,
): Promise<CatalogObject> {
  const out: CatalogObject = {
    client: object.client,
    tree: object.tree,
    status: 'Completed',
    files: [],
    errors: [],
  }
  const { files, broken } = chainFiles(options, sourceId, object, messages)
  if (broken) out.errors.push(broken)
  for (const { file, sessionDir } of files) {
    if (options.signal?.aborted || !selected(file.path, options.trees)) continue
    const target = options.into ? join(options.into, relative(object.tree, file.path)) : file.path
    try {
      if (await restoreFile(options, file, join(sessionDir, file.stored), target))
        out.files.push({ ...file, path: target })
    } catch (error) {
      const reason = (error as NodeJS.ErrnoException).code ?? String(error)
      out.errors.push(`${target}: ${reason}`)
      messages.add('VRDA', `[Major] Cannot restore ${target}: ${reason}`)
    }
  }
  if (out.errors.length) out.status = 'Completed/Errors'
  messages.add('VRDA', `[Normal] Restored ${out.files.length} file(s) of ${object.client}:${object.tree}`)
  return out
}

/**
 * One file written as the Disk Agent writes it: under a temporary name, its mode and time set,
 * then renamed; false when the conflict rule keeps the file there.
 */
async function restoreFile(
  options: RestoreOptions,
  file: CatalogFile,
  stored: string,
  target: string,
): Promise<boolean> {
  const existing = await fsp.stat(target).catch(() => undefined)
  if (existing && options.conflict === 'no-overwrite') return false
  if (existing && options.conflict === 'keep-most-recent' && existing.mtimeMs > file.mtimeMs) return false
  await fsp.mkdir(dirname(target), { recursive: true })
  const temp = `${target}.dp-restore`
  await pipeline(createReadStream(stored), createWriteStream(temp, { mode: file.mode }))
  await fsp.utimes(temp, new Date(), new Date(file.mtimeMs))
  await fsp.rename(temp, target)
  return true
}

/** A restore session's pre- or post-exec, its lines in the session; whether it succeeded. */
async function runSessionScript(
  options: RestoreOptions,
  env: NodeJS.ProcessEnv,
  messages: Messages,
  what: string,
  command: string,
): Promise<boolean> {
  messages.add('RSM', `[Normal] Starting ${what} command "${command}"`)
  const result = await runScript(command, {
    env,
    inactivityTimeout: options.inactivityTimeout ?? 900,
    onLine: (l) => messages.add(what, l),
    ...(options.signal ? { signal: options.signal } : {}),
  })
  if (result.code !== 0 || result.problem)
    messages.add(
      'RSM',
      `[Critical] The ${what} command failed${result.problem ? ` (${result.problem})` : ` with exit code ${result.code}`}`,
    )
  return result.code === 0 && !result.problem
}

export async function runRestoreSession(options: RestoreOptions): Promise<SessionRecord> {
  const source = options.store.get(options.session)
  if (source.type !== 'backup')
    throw new Error(`session ${options.session} is a ${source.type} session, not a backup`)
  const { id, dir } = options.store.begin()
  const started = new Date()
  const t0 = performance.now()
  const messages = new Messages(options.onMessage)
  let status: SessionStatus = 'Completed'
  const restored: CatalogObject[] = []
  const script = (what: string, command: string): Promise<boolean> =>
    runSessionScript(options, { ...(options.env ?? process.env), SESSIONID: id }, messages, what, command)
  messages.add('RSM', `[Normal] Restore session ${id} started from backup session ${source.id}`)
  const finish = (): SessionRecord => {
    const report = sessionReport(restored, t0)
    const { files, bytes } = report
    messages.add('RSM', `[Normal] Session ${id} finished: ${status} (${files} file(s), ${bytes} bytes)`)
    const record: SessionRecord = {
      id,
      type: 'restore',
      status,
      exitCode: EXIT_CODES[status],
      started: started.toISOString(),
      finished: new Date().toISOString(),
      messages: messages.list,
      objects: restored,
      report,
    }
    options.store.commit(dir, record)
    return record
  }
  if (options.preExec && !(await script('pre-exec', options.preExec))) {
    status = 'Failed'
    return finish()
  }
  for (const object of source.objects)
    restored.push(await restoreObject(options, source.id, object, messages))
  if (options.signal?.aborted) status = 'Aborted'
  else if (restored.some((o) => o.errors.length)) status = 'Completed with errors'
  if (
    options.postExec &&
    !options.signal?.aborted &&
    !(await script('post-exec', options.postExec)) &&
    status === 'Completed'
  ) {
    status = 'Completed with errors'
  }
  return finish()
}
