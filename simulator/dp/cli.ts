#!/usr/bin/env node
// dp-sim: a Data Protector session simulator that plays the Session Manager and Disk Agent.
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { runRestoreSession, type Conflict } from './restore.js'
import { runBackupSession } from './session.js'
import { readSpec } from './spec.js'
import { Store, defaultStore, type Message, type SessionRecord } from './store.js'

const USAGE = `usage: dp-sim backup SPEC [--mode full|incremental|incremental1..9] [--store DIR] [--preview]
       dp-sim restore --session ID [--tree PATH]... [--into DIR] [--overwrite | --no-overwrite | --keep-most-recent]
                      [--omit-deleted-files] [--pre-exec CMD] [--post-exec CMD] [--store DIR]
       dp-sim list [--store DIR]
       dp-sim show ID [--store DIR]`

const print = (m: Message): void => console.log(`[${m.source}] ${m.text}`)

function report(record: SessionRecord): void {
  const r = record.report
  console.log(`Session ${record.id}: ${record.status}`)
  console.log(
    `  objects ${r.objects}, files ${r.files}, bytes ${r.bytes}, duration ${r.seconds} s, ${r.mbPerSecond} MB/s`,
  )
}

const OPTIONS = {
  store: { type: 'string' },
  preview: { type: 'boolean', default: false },
  mode: { type: 'string', default: 'full' },
  'omit-deleted-files': { type: 'boolean', default: false },
  session: { type: 'string' },
  tree: { type: 'string', multiple: true, default: [] as string[] },
  into: { type: 'string' },
  overwrite: { type: 'boolean', default: false },
  'no-overwrite': { type: 'boolean', default: false },
  'keep-most-recent': { type: 'boolean', default: false },
  'pre-exec': { type: 'string' },
  'post-exec': { type: 'string' },
} satisfies ParseArgsConfig['options']

type Args = {
  values: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values']
  positionals: string[]
  store: Store
  signal: AbortSignal
}

/** dp-sim backup SPEC: one backup session of the specification, at the level --mode gives. */
async function backup({ values, positionals, store, signal }: Args): Promise<number> {
  if (positionals.length !== 1) throw new Error('backup needs one SPEC file')
  if (!/^(full|incremental[1-9]?)$/.test(values.mode))
    throw new Error(`--mode ${values.mode}: use full, incremental or incremental1 … incremental9`)
  const record = await runBackupSession(readSpec(positionals[0]!), {
    store,
    preview: values.preview,
    level: values.mode,
    signal,
    onMessage: print,
  })
  report(record)
  return record.exitCode
}

/** dp-sim restore --session ID: one restore session of a backup session (and its restore chain). */
async function restore({ values, store, signal }: Args): Promise<number> {
  if (!values.session) throw new Error('restore needs --session ID')
  const choices = (['overwrite', 'no-overwrite', 'keep-most-recent'] as const).filter((c) => values[c])
  if (choices.length > 1) throw new Error('choose one of --overwrite, --no-overwrite, --keep-most-recent')
  const record = await runRestoreSession({
    store,
    session: values.session,
    trees: values.tree,
    ...(values.into ? { into: values.into } : {}),
    conflict: (choices[0] ?? 'keep-most-recent') as Conflict,
    omitDeletedFiles: values['omit-deleted-files'],
    ...(values['pre-exec'] ? { preExec: values['pre-exec'] } : {}),
    ...(values['post-exec'] ? { postExec: values['post-exec'] } : {}),
    signal,
    onMessage: print,
  })
  report(record)
  return record.exitCode
}

/** dp-sim show ID: a session's report and every file it holds. */
function show({ positionals, store }: Args): number {
  const record = store.get(positionals[0] ?? '')
  report(record)
  for (const object of record.objects) {
    console.log(`${object.client}:${object.tree} ${object.status}`)
    for (const f of object.files)
      console.log(`  ${f.path}  ${f.size}  ${new Date(f.mtimeMs).toISOString()}  ${f.sha256}`)
  }
  return 0
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  const controller = new AbortController()
  process.once('SIGTERM', () => controller.abort())
  process.once('SIGINT', () => controller.abort())
  const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: OPTIONS })
  const args: Args = {
    values,
    positionals,
    store: new Store(values.store ?? defaultStore()),
    signal: controller.signal,
  }
  switch (command) {
    case 'backup':
      return backup(args)
    case 'restore':
      return restore(args)
    case 'list':
      for (const s of args.store.list())
        console.log(`${s.id.padEnd(14)} ${s.type.padEnd(8)} ${s.status.padEnd(24)} ${s.spec ?? ''}`)
      return 0
    case 'show':
      return show(args)
    case '--help':
    case '-h':
      console.log(USAGE)
      return 0
    default:
      console.error(command ? `dp-sim: unknown command "${command}"\n${USAGE}` : USAGE)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`dp-sim: ${error instanceof Error ? error.message : String(error)}`)
    process.exit(2)
  },
)
