// The state file in backupDir: what the pre-exec wrote and how each VM went. The post-exec
// deletes exactly the files listed here and reports the recorded outcome.
import { randomUUID } from 'node:crypto'
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { STATE_FILE } from './tags.js'

export interface VmOutcome {
  name: string
  uuid: string
  ok: boolean
  /** One line: why it failed. */
  reason?: string
  file?: string
}

export interface RunState {
  version: 1
  runId: string
  mode: string
  startedAt: string
  finishedAt?: string
  /** Names (not paths) of the files dpxen wrote in backupDir. */
  files: string[]
  vms: VmOutcome[]
  /** Problems that are not about one VM (e.g. the pool database dump). */
  errors: string[]
  /** Running VMs this run stopped and has not started again yet (uuid and name). */
  stopped?: { uuid: string; name: string }[]
}

export function newState(mode: string): RunState {
  return {
    version: 1,
    runId: randomUUID(),
    mode,
    startedAt: new Date().toISOString(),
    files: [],
    vms: [],
    errors: [],
  }
}

/** Writes the state atomically (temporary file, fsync, rename), readable by the owner only. */
export async function writeState(dir: string, state: RunState): Promise<void> {
  const file = join(dir, STATE_FILE)
  const tmp = `${file}.tmp`
  const handle = await fsp.open(tmp, 'w', 0o600)
  try {
    await handle.writeFile(JSON.stringify(state, null, 2))
    await handle.sync()
  } finally {
    await handle.close()
  }
  await fsp.rename(tmp, file)
}

/** The state file, or undefined when there is none or it is not ours. */
export async function readState(dir: string): Promise<RunState | undefined> {
  let text: string
  try {
    text = await fsp.readFile(join(dir, STATE_FILE), 'utf8')
  } catch {
    return undefined
  }
  try {
    const state = JSON.parse(text) as RunState
    if (state.version !== 1 || !Array.isArray(state.files) || !Array.isArray(state.vms)) return undefined
    return { ...state, errors: Array.isArray(state.errors) ? state.errors : [] }
  } catch {
    return undefined
  }
}
