// A backup specification for dp-sim: our own small JSON/YAML form of Data Protector's
// vocabulary (real datalists are not parsed; their grammar is not documented publicly).
import { readFileSync } from 'node:fs'
import { isAbsolute, resolve, dirname } from 'node:path'
import { parse as parseYaml } from 'yaml'

export interface BackupSpec {
  /** The backup specification's name (DATALIST). */
  name: string
  /** The Disk Agent client the trees are on. */
  client: string
  /** Folders backed up as filesystem objects. */
  trees: string[]
  /**
   * Pre-/post-exec set for individual objects (Backup Object Summary > Properties), by tree;
   * they take the place of objectPreExec / objectPostExec for that object.
   */
  objectScripts?: Record<string, { preExec?: string; postExec?: string }>
  preExec?: string
  postExec?: string
  objectPreExec?: string
  objectPostExec?: string
  /** Session owner as Data Protector writes it (OWNER). */
  owner: string
  /** Seconds a script may stay silent before the session is aborted (ScriptOutputTimeout). */
  inactivityTimeout: number
  /** Run the session pre/post-exec in a preview too (ExecScriptOnPreview). */
  execScriptOnPreview: boolean
}

const KNOWN = [
  'name',
  'client',
  'trees',
  'preExec',
  'postExec',
  'objectPreExec',
  'objectPostExec',
  'owner',
  'inactivityTimeout',
  'execScriptOnPreview',
]

/** Reads a spec file (JSON or YAML); relative tree paths are taken from the spec's folder. */
export function readSpec(file: string): BackupSpec {
  let raw: unknown
  try {
    const text = readFileSync(file, 'utf8')
    raw = /\.ya?ml$/i.test(file) ? parseYaml(text) : JSON.parse(text)
  } catch (error) {
    throw new Error(
      `spec ${file}: cannot be read: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`,
    )
  }
  const spec = (raw ?? {}) as Record<string, unknown>
  const problems: string[] = []
  for (const key of Object.keys(spec)) if (!KNOWN.includes(key)) problems.push(`unknown key ${key}`)
  if (typeof spec.name !== 'string' || spec.name === '') problems.push('name: needed')
  const isObject = (t: unknown): t is Record<string, unknown> =>
    typeof t === 'object' && t !== null && typeof (t as Record<string, unknown>).tree === 'string'
  if (
    !Array.isArray(spec.trees) ||
    spec.trees.length === 0 ||
    spec.trees.some((t) => typeof t !== 'string' && !isObject(t))
  )
    problems.push('trees: needs a list of folders (or of {tree, preExec, postExec})')
  for (const key of ['preExec', 'postExec', 'objectPreExec', 'objectPostExec', 'client', 'owner']) {
    if (spec[key] !== undefined && typeof spec[key] !== 'string') problems.push(`${key}: must be a text`)
  }
  if (
    spec.inactivityTimeout !== undefined &&
    !(typeof spec.inactivityTimeout === 'number' && spec.inactivityTimeout > 0)
  ) {
    problems.push('inactivityTimeout: must be a number of seconds')
  }
  if (problems.length) throw new Error(`spec ${file}: ${problems.join('; ')}`)
  const base = dirname(file)
  const where = (t: string): string => (isAbsolute(t) ? t : resolve(base, t))
  const entries = (spec.trees as (string | Record<string, unknown>)[]).map((t) =>
    typeof t === 'string' ? { tree: where(t) } : { ...t, tree: where(t.tree as string) },
  )
  const objectScripts: BackupSpec['objectScripts'] = {}
  for (const e of entries as { tree: string; preExec?: unknown; postExec?: unknown }[]) {
    if (e.preExec === undefined && e.postExec === undefined) continue
    objectScripts[e.tree] = {
      ...(typeof e.preExec === 'string' ? { preExec: e.preExec } : {}),
      ...(typeof e.postExec === 'string' ? { postExec: e.postExec } : {}),
    }
  }
  return {
    objectScripts,
    name: spec.name as string,
    client: (spec.client as string | undefined) ?? 'localhost',
    trees: entries.map((e) => e.tree),
    ...(spec.preExec ? { preExec: spec.preExec as string } : {}),
    ...(spec.postExec ? { postExec: spec.postExec as string } : {}),
    ...(spec.objectPreExec ? { objectPreExec: spec.objectPreExec as string } : {}),
    ...(spec.objectPostExec ? { objectPostExec: spec.objectPostExec as string } : {}),
    owner: (spec.owner as string | undefined) ?? 'root.sys@localhost',
    inactivityTimeout: (spec.inactivityTimeout as number | undefined) ?? 900,
    execScriptOnPreview: spec.execScriptOnPreview === true,
  }
}
