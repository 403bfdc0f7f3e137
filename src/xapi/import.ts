// The uploads a restore makes, as verbs of the host: an XVA into an SR (PUT /import), a VHD (a
// full or a delta) onto an existing VDI (PUT /import_raw_vdi?format=vhd), and a VM's metadata
// over disks that exist (PUT /import_metadata).
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
export function importFile(
  host: Host,
  request: ImportOptions & { srRef: string; restore: boolean },
): Promise<string[]> {
  return importVms(host, '/import', { sr_id: request.srRef, restore: String(request.restore) }, request)
}

/**
 * Makes the VM the metadata file describes (restore: with its uuid, MACs and vTPM uuid), each of
 * its disks the VDI `disks` maps the original's uuid to (xapi's vdi:<uuid>=<uuid> parameters).
 */
export function importMetadata(
  host: Host,
  request: ImportOptions & { restore: boolean; disks: Map<string, string> },
): Promise<string[]> {
  const query: Record<string, string> = { restore: String(request.restore) }
  for (const [from, to] of request.disks) query[`vdi:${from}`] = to
  return importVms(host, '/import_metadata', query, request)
}

async function importVms(
  host: Host,
  path: string,
  query: Record<string, string>,
  request: ImportOptions,
): Promise<string[]> {
  let refs: string[] = []
  await host.upload(path, query, {
    label: basename(request.file),
    file: request.file,
    signal: request.signal,
    ...(request.onTask ? { onTask: request.onTask } : {}),
    onResult: async (result) => {
      refs = refsInResult(result)
      if (refs.length === 0) throw new DpxenError('VM_FAILED', 'the import reported no VM')
      await request.onImported?.(refs)
    },
  })
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
