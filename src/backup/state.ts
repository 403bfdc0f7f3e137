// The state file in backupDir: what the pre-exec wrote and how each VM went. The post-exec
// deletes exactly the files listed here and reports the recorded outcome.
import { randomUUID } from 'node:crypto'
import { readTrustedFile, writeStagingFile } from '../staging/folder.js'
import { STATE_FILE } from '../staging/names.js'

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

/** Writes the state atomically (created exclusively, fsync, rename), readable by the owner only. */
export async function writeState(dir: string, state: RunState): Promise<void> {
  await writeStagingFile(dir, STATE_FILE, JSON.stringify(state, null, 2))
}

/**
 * The state file, or undefined when there is none or it is not ours: not a regular file of this
 * user's (a link, a file another user planted) is never trusted, since the post-exec acts on it.
 */
export async function readState(dir: string): Promise<RunState | undefined> {
  const text = await readTrustedFile(dir, STATE_FILE)
  if (text === undefined) return undefined
  try {
    const state = JSON.parse(text) as RunState
    if (state.version !== 1 || !Array.isArray(state.files) || !Array.isArray(state.vms)) return undefined
    return { ...state, errors: Array.isArray(state.errors) ? state.errors : [] }
  } catch {
    return undefined
  }
}
