// The session store: one folder per session, written under a temporary name and renamed when
// the session ends, so an interrupted session never leaves a half-written session behind.
import {
  mkdirSync,
  promises as fsp,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'

export type SessionStatus =
  'Completed' | 'Completed with errors' | 'Completed with failures' | 'Failed' | 'Aborted'

export interface Message {
  time: string
  source: string
  text: string
}

export interface CatalogFile {
  /** Path as it was on the client. */
  path: string
  /** Where the copy is, relative to the session folder. */
  stored: string
  size: number
  mtimeMs: number
  mode: number
  sha256: string
}

export interface CatalogObject {
  client: string
  tree: string
  status: 'Completed' | 'Completed/Errors' | 'Aborted'
  files: CatalogFile[]
  errors: string[]
  /** The level the object was backed up at: 0 a Full, N an Incremental (levels.ts). */
  level?: number
  /** The session whose backup of the object this one is based on (none for a Full). */
  reference?: string
  /** Every file in the object when it was backed up (what "Omit deleted files" keeps). */
  present?: string[]
}

export interface SessionRecord {
  id: string
  type: 'backup' | 'restore' | 'preview'
  spec?: string
  status: SessionStatus
  exitCode: number
  started: string
  finished: string
  messages: Message[]
  objects: CatalogObject[]
  report: { objects: number; files: number; bytes: number; seconds: number; mbPerSecond: number }
}

/** The session report: objects, files, bytes, duration since `t0` (performance.now()), throughput. */
export function sessionReport(objects: CatalogObject[], t0: number): SessionRecord['report'] {
  const files = objects.reduce((n, o) => n + o.files.length, 0)
  const bytes = objects.reduce((n, o) => n + o.files.reduce((m, f) => m + f.size, 0), 0)
  const seconds = (performance.now() - t0) / 1000
  return {
    objects: objects.length,
    files,
    bytes,
    seconds: Number(seconds.toFixed(3)),
    mbPerSecond: Number((bytes / 1e6 / Math.max(seconds, 0.001)).toFixed(1)),
  }
}

/** DP_SIM_STORE, else ~/.dp-sim. */
export function defaultStore(env = process.env): string {
  return env.DP_SIM_STORE ?? join(homedir(), '.dp-sim')
}

const folderOf = (id: string): string => id.replace(/\//g, '-')
const idOf = (folder: string): string => folder.replace(/^(\d{4})-(\d{2})-(\d{2})-/, '$1/$2/$3-')

export class Store {
  readonly root: string
  constructor(root: string) {
    this.root = root
    mkdirSync(join(root, 'sessions'), { recursive: true })
    // A session that was interrupted left only its temporary folder: it never happened.
    for (const name of readdirSync(join(root, 'sessions')))
      if (name.startsWith('.')) rmSync(join(root, 'sessions', name), { recursive: true, force: true })
  }

  /** Reserves the next session id of the day (YYYY/MM/DD-N) and its temporary folder. */
  begin(now = new Date()): { id: string; dir: string } {
    const day = now.toISOString().slice(0, 10)
    const used = readdirSync(join(this.root, 'sessions'))
      .map((n) => n.replace(/^\./, '').replace(/\.partial$/, ''))
      .filter((n) => n.startsWith(`${day}-`))
      .map((n) => Number(n.slice(day.length + 1)))
    for (let n = Math.max(0, ...used) + 1; ; n++) {
      const dir = join(this.root, 'sessions', `.${day}-${n}.partial`)
      try {
        mkdirSync(dir)
        return { id: idOf(`${day}-${n}`), dir }
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      }
    }
  }

  /** Writes the record and gives the session its final folder. */
  commit(dir: string, record: SessionRecord): void {
    writeFileSync(join(dir, 'session.json'), JSON.stringify(record, null, 2))
    renameSync(dir, join(this.root, 'sessions', folderOf(record.id)))
  }

  discard(dir: string): void {
    rmSync(dir, { recursive: true, force: true })
  }

  folder(id: string): string {
    return join(this.root, 'sessions', folderOf(id))
  }

  get(id: string): SessionRecord {
    try {
      return JSON.parse(readFileSync(join(this.folder(id), 'session.json'), 'utf8')) as SessionRecord
    } catch {
      throw new Error(`no session ${id} in ${this.root}`)
    }
  }

  list(): SessionRecord[] {
    return readdirSync(join(this.root, 'sessions'))
      .filter((n) => !n.startsWith('.'))
      .map((n) => this.get(idOf(n)))
      .sort((a, b) => a.started.localeCompare(b.started))
  }
}

export async function ensureDir(path: string): Promise<void> {
  await fsp.mkdir(path, { recursive: true })
}
