// GET /export_metadata and PUT /import_metadata (export.ml and import.ml metadata_handler): a VM's
// records without its disks, as a tar holding ova.xml alone, and back. The export keeps the power
// state and carries the vTPM's contents; snapshots' records (export_snapshots, true unless false)
// are not modelled. The import makes the VM over VDIs that exist (vdi:<uuid>=<uuid> maps them),
// keeps uuid and MACs with restore=true, and answers its 200 before it reads the body.
import { Readable } from 'node:stream'
import { XapiFailure } from '../model/errors.js'
import { lockVm } from '../model/vmops.js'
import { NULL_REF } from '../model/schema.js'
import { printValue } from '../model/xmlrpc.js'
import { TAR_END, padding, tarHeader } from '../xva/tar.js'
import { planExport } from '../xva/write.js'
import { importXva } from '../xva/read.js'
import {
  asFailure,
  authenticate,
  failBeforeBody,
  finish,
  lookup,
  param,
  serverHeader,
  writeRawHead,
  type HttpCall,
} from './common.js'

export function handleExportMetadata(call: HttpCall): void {
  const { sim, req } = call
  const auth = authenticate(call, 'Export of metadata')
  if (!auth) return
  let tar: Buffer
  try {
    const vmRef = lookup(sim, 'VM', param(call, 'ref') ?? param(call, 'uuid'))
    const unlock = lockVm(sim, vmRef, 'metadata_export', auth.task)
    try {
      const ova = Buffer.from(planExport(sim, vmRef, true).ovaXml)
      tar = Buffer.concat([tarHeader('ova.xml', ova.length), ova, padding(ova.length), TAR_END])
    } finally {
      unlock()
    }
  } catch (error) {
    failBeforeBody(call, auth, 500, asFailure(error))
    return
  }
  writeRawHead(req.socket, 'HTTP/1.0 200 OK', {
    Connection: 'close',
    'task-id': auth.task,
    Server: serverHeader(sim),
    'content-type': 'application/octet-stream',
    'Content-Length': String(tar.length),
    'Content-Disposition': 'attachment; filename="export.xva"',
  })
  finish(call, auth, { result: '' })
  req.socket.end(tar)
}

/** `vdi:<uuid>=<uuid>` query parameters (importexport.ml read_map_params "vdi"). */
function vdiMap(call: HttpCall): Map<string, string> {
  const map = new Map<string, string>()
  for (const [key, value] of call.url.searchParams) if (key.startsWith('vdi:')) map.set(key.slice(4), value)
  return map
}

export async function handleImportMetadata(call: HttpCall): Promise<void> {
  const { sim, req } = call
  const auth = authenticate(call, 'VM.metadata_import')
  if (!auth) return
  if (req.headers['transfer-encoding']) {
    failBeforeBody(call, auth, 403, new XapiFailure('IMPORT_ERROR_CANNOT_HANDLE_CHUNKED'))
    return
  }
  writeRawHead(req.socket, 'HTTP/1.1 200 OK', {
    Connection: 'close',
    'task-id': auth.task,
    'content-type': 'application/octet-stream',
    Server: serverHeader(sim),
  })
  const aborter = new AbortController()
  const onGone = (): void => aborter.abort()
  req.socket.once('close', onGone)
  try {
    const vms = await importXva(sim, req as Readable, {
      srRef: NULL_REF,
      restore: param(call, 'restore') === 'true',
      force: param(call, 'force') === 'true',
      task: auth.task,
      signal: aborter.signal,
      metadata: { vdiMap: vdiMap(call) },
    })
    finish(call, auth, { result: printValue(vms) })
  } catch (error) {
    finish(call, auth, {
      error: aborter.signal.aborted ? new XapiFailure('IMPORT_ERROR_PREMATURE_EOF') : error,
    })
    req.resume()
  }
  req.socket.off('close', onGone)
  req.socket.end()
}
