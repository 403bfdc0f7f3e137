// The two uploads a restore makes, as verbs of the host: an XVA into an SR (PUT /import), and
// a VHD (a full or a delta) onto an existing VDI (PUT /import_raw_vdi?format=vhd).
import { basename } from 'node:path'
import { DpxenError } from '../core/errors.js'
import type { Host } from './host.js'
import { refsInResult } from './xmlrpc.js'

interface ImportOptions {
  file: string
  signal: AbortSignal
  /** Told the import's task before anything is sent (the restore journal records it). */
  onTask?: (task: string) => Promise<void>
  /** Told what was imported before the task goes (after that, only this record names it). */
  onImported?: (refs: string[]) => Promise<void>
}

/** Imports the XVA into the SR (restore: keep the VM's uuid and MACs); the refs xapi made. */
export async function importFile(
  host: Host,
  request: ImportOptions & { srRef: string; restore: boolean },
): Promise<string[]> {
  let refs: string[] = []
  await host.upload(
    '/import',
    { sr_id: request.srRef, restore: String(request.restore) },
    {
      label: basename(request.file),
      file: request.file,
      signal: request.signal,
      ...(request.onTask ? { onTask: request.onTask } : {}),
      onResult: async (result) => {
        refs = refsInResult(result)
        if (refs.length === 0) throw new DpxenError('VM_FAILED', 'the import reported no VM')
        await request.onImported?.(refs)
      },
    },
  )
  return refs
}

/** Writes the sectors the VHD holds onto the VDI and leaves the others as they are. */
export async function importVhd(host: Host, request: ImportOptions & { vdi: string }): Promise<void> {
  await host.upload(
    '/import_raw_vdi',
    { vdi: request.vdi, format: 'vhd' },
    {
      label: basename(request.file),
      file: request.file,
      signal: request.signal,
      ...(request.onTask ? { onTask: request.onTask } : {}),
    },
  )
}
