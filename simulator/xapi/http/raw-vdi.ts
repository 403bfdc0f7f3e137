// Disk transfer (/export_raw_vdi, /import_raw_vdi, format raw or vhd) and /pool/xmldbdump.
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs'
import { once } from 'node:events'
import type { Socket } from 'node:net'
import { pipeline } from 'node:stream/promises'
import { Transform, type Readable } from 'node:stream'
import { XapiFailure } from '../model/errors.js'
import type { Rec } from '../model/db.js'
import { parseSize } from '../faults.js'
import { ByteReader } from '../xva/tar-read.js'
import { watchCancel } from '../model/tasks.js'
import { applyVhd, includedBlocks, writeVhd } from '../xva/vhd.js'
import { destroyVdi } from '../model/storage.js'
import { destroyVmWithDevices } from '../model/vmops.js'
import {
  abortOnClose,
  asFailure,
  authenticate,
  failBeforeBody,
  finish,
  param,
  redirected,
  serverHeader,
  writeRawHead,
  type Authed,
  type HttpCall,
} from './common.js'
import { SCHEMA } from '../model/schema.js'
import { escapeXml, formatDateTime, printValue } from '../model/xmlrpc.js'

/** The format asked for (raw unless said), and the VDI; refused as xapi refuses them. */
function rawVdi(call: HttpCall): { ref: string; format: 'raw' | 'vhd' } {
  const format = (param(call, 'format') ?? 'raw').toLowerCase()
  if (format !== 'raw' && format !== 'vhd')
    throw new XapiFailure('INTERNAL_ERROR', `Unknown format ${format}`)
  return { ref: vdiOfReq(call.sim, param(call, 'vdi')), format }
}

/**
 * A VDI named by ref or uuid, as xapi's vdi_of_req: a value that is not a valid ref is looked
 * up as a uuid, so a ref that no longer exists fails as UUID_INVALID too.
 */
function vdiOfReq(sim: HttpCall['sim'], value: string | undefined): string {
  if (value && sim.db.has('VDI', value)) return value
  const byUuid = value ? sim.db.refByUuid('VDI', value) : undefined
  if (byUuid) return byUuid
  throw new XapiFailure('UUID_INVALID', 'VDI', value ?? '')
}

export async function handleExportRaw(call: HttpCall): Promise<void> {
  const { sim, req } = call
  const auth = authenticate(call, 'VDI export')
  if (!auth) return
  let asked: ReturnType<typeof rawVdi>
  try {
    asked = rawVdi(call)
  } catch (error) {
    failBeforeBody(call, auth, 404, asFailure(error))
    return
  }
  const vdi = sim.db.require('VDI', asked.ref)
  if (redirected(call, auth, [String(vdi.SR)], 'answer-500')) return
  const socket = req.socket
  writeRawHead(socket, 'HTTP/1.1 200 OK', {
    Connection: 'close',
    'Cache-Control': 'no-cache, no-store',
    'content-type': asked.format === 'vhd' ? 'application/vhd' : 'application/octet-stream',
    'Content-Disposition': `attachment; filename="${String(vdi.uuid)}.${asked.format}"`,
    'task-id': auth.task,
    Server: serverHeader(sim),
  })
  try {
    if (asked.format === 'vhd') await sendVhd(call, vdi, socket)
    else await pipeline(createReadStream(sim.disks.path(String(vdi.uuid))), socket, { end: false })
    finish(call, auth, { result: '' })
    socket.end()
  } catch (error) {
    finish(call, auth, { error })
    // xapi's HTTP server writes its error page into the body it already started.
    if (error instanceof XapiFailure && error.inBody) socket.end(`HTTP/1.1 500 Internal Error\r\n\r\n`)
    else socket.destroy()
  }
}

/** Fault vhd-base-gone: the base's snapshot and disks deleted (by someone, or SM) under the export. */
async function removeBase(sim: HttpCall['sim'], vdiRef: string): Promise<void> {
  const vdi = sim.db.require('VDI', vdiRef)
  for (const vbd of vdi.VBDs as string[]) {
    const vm = sim.db.get('VBD', vbd)?.VM
    if (vm && sim.db.get('VM', vm)?.is_a_snapshot) await destroyVmWithDevices(sim, String(vm), true)
  }
  if (sim.db.has('VDI', vdiRef)) await destroyVdi(sim, vdiRef)
}

/** The largest disk format=vhd exports: 2040 GiB (constants.ml max_vhd_size). */
const VHD_MAX_BYTES = 2_190_433_320_960

/**
 * Whether a VHD backs the disk (what vhd-tool needs for a delta): not on GFS2 (XenServer 8's thin
 * shared storage keeps QCOW2 images), not a QCOW2 image (XCP-ng 8.3), not a raw LVM volume.
 */
function vhdBacked(sim: HttpCall['sim'], vdi: Rec): boolean {
  const sm = (vdi.sm_config as Record<string, string> | undefined) ?? {}
  if (sm['image-format'] === 'qcow2' || sm.type === 'raw') return false
  return String(sim.db.get('SR', vdi.SR)?.type ?? '') !== 'gfs2'
}

/**
 * The base a delta is made against (`base=`), checked after the 200 as xapi checks it: the disk
 * behind a VHD (vhd_tool_wrapper.ml send), the base there. Each refusal goes into the body.
 */
async function deltaBase(call: HttpCall, vdi: Rec, baseParam: string): Promise<Rec> {
  const { sim } = call
  if (!vhdBacked(sim, vdi) || sim.faults.get('delta-refused'))
    throw Object.assign(new XapiFailure('INTERNAL_ERROR', 'Cannot compute differences on non-VHD images'), {
      inBody: true,
    })
  // No size check, as vhd-tool makes none: a delta against a smaller base (a disk grown since)
  // is made, with the exported disk's own size.
  try {
    if (sim.faults.take('vhd-base-gone')) await removeBase(sim, vdiOfReq(sim, baseParam))
    return sim.db.require('VDI', vdiOfReq(sim, baseParam))
  } catch (error) {
    throw Object.assign(asFailure(error), { inBody: true })
  }
}

/** format=vhd: the whole disk (dynamic), or the blocks that differ from `base` (differencing). */
async function sendVhd(call: HttpCall, vdi: Rec, socket: Socket): Promise<void> {
  const { sim } = call
  const size = Number(vdi.virtual_size)
  const baseParam = param(call, 'base')
  // After the 200, as xapi (export_raw_vdi.ml): format=vhd stops at 2040 GiB.
  if (size > VHD_MAX_BYTES)
    throw Object.assign(
      new XapiFailure('VDI_TOO_LARGE', vdiOfReq(sim, String(vdi.uuid)), String(VHD_MAX_BYTES)),
      {
        inBody: true,
      },
    )
  const base = baseParam === undefined ? undefined : await deltaBase(call, vdi, baseParam)
  const disk = await fsp.open(sim.disks.path(String(vdi.uuid)), 'r')
  const baseDisk = base ? await fsp.open(sim.disks.path(String(base.uuid)), 'r') : undefined
  const controller = new AbortController()
  const stopWatching = abortOnClose(sim, controller)
  socket.once('close', () => controller.abort())
  try {
    // Tracked disks say which blocks were written (and since the base); others are read.
    const tracked = base
      ? sim.disks.changed(String(vdi.uuid), String(base.uuid))
      : sim.disks.allocated(String(vdi.uuid))
    const included = tracked ?? (await includedBlocks(disk, baseDisk, size))
    const stall = sim.faults.get('export-stall')
    const cut = sim.faults.get('vhd-truncate')
    let left = cut ? parseSize(cut.arg ?? '0') : Infinity
    await writeVhd(
      disk,
      {
        size,
        uuid: String(vdi.uuid),
        ...(base ? { parentUuid: String(base.uuid) } : {}),
        included,
        signal: controller.signal,
        ...(stall ? { stallMs: Number(stall.arg) * 1000 } : {}),
      },
      async (data) => {
        const part = data.length > left ? data.subarray(0, left) : data
        left -= part.length
        if (!socket.write(part)) await once(socket, 'drain')
        if (left <= 0) throw new XapiFailure('VDI_IO_ERROR', 'Device I/O errors')
      },
    )
  } finally {
    stopWatching()
    await disk.close()
    await baseDisk?.close()
  }
}

/**
 * What import_raw_vdi.ml checks before it answers 200: the disk's host (a redirect), the
 * encoding, VHD only into a disk, a known length that fits, a disk not attached. The disk and the
 * body's length, or undefined when the answer is already given.
 */
function importChecks(
  call: HttpCall,
  auth: Authed,
): { asked: ReturnType<typeof rawVdi>; length: number } | undefined {
  const { sim, req } = call
  try {
    const named = param(call, 'vdi')
    if (named !== undefined) {
      const { SR } = sim.db.require('VDI', vdiOfReq(sim, named))
      if (redirected(call, auth, [String(SR)], 'fail-task-400')) return undefined
    }
    if (req.headers['transfer-encoding'])
      throw new XapiFailure('INTERNAL_ERROR', `Cannot handle encoding: ${req.headers['transfer-encoding']}`)
    if ((param(call, 'format') ?? 'raw').toLowerCase() === 'vhd' && param(call, 'vdi') === undefined) {
      failBeforeBody(
        call,
        auth,
        400,
        new XapiFailure('INTERNAL_ERROR', 'Importing a VHD directly into an SR not supported'),
      )
      return undefined
    }
    const asked = rawVdi(call)
    if (asked.format === 'vhd' && param(call, 'chunked') !== undefined)
      throw new XapiFailure('INTERNAL_ERROR', 'Cannot handle chunked VHD')
    const vdi = sim.db.require('VDI', asked.ref)
    const length = Number(req.headers['content-length'])
    if (!Number.isSafeInteger(length)) throw new XapiFailure('INTERNAL_ERROR', 'Content-Length required')
    if (asked.format === 'raw' && length > Number(vdi.virtual_size))
      throw new XapiFailure('VDI_IO_ERROR', 'Data larger than the VDI')
    if ((vdi.VBDs as string[]).some((v) => sim.db.get('VBD', v)?.currently_attached))
      throw new XapiFailure('VDI_IN_USE', asked.ref, 'import')
    return { asked, length }
  } catch (error) {
    failBeforeBody(call, auth, 404, asFailure(error))
    return undefined
  }
}

export async function handleImportRaw(call: HttpCall): Promise<void> {
  const { sim, req } = call
  const auth = authenticate(call, 'VDI import')
  if (!auth) return
  const checked = importChecks(call, auth)
  if (!checked) return
  const { asked, length } = checked
  const vdi = sim.db.require('VDI', asked.ref)
  const socket = req.socket
  writeRawHead(socket, 'HTTP/1.1 200 OK', {
    Connection: 'close',
    'Content-Type': 'application/octet-stream',
    'task-id': auth.task,
    Server: serverHeader(sim),
  })
  // A client that goes away, or cancels the task, ends the import.
  const gone = new AbortController()
  let cancelled = false
  const stopWatching = watchCancel(sim, auth.task, () => {
    cancelled = true
    gone.abort()
  })
  req.once('aborted', () => gone.abort())
  socket.once('close', () => gone.abort())
  try {
    const ended = new Promise<never>((_resolve, reject) =>
      gone.signal.addEventListener('abort', () =>
        reject(
          cancelled
            ? new XapiFailure('TASK_CANCELLED', auth.task)
            : new XapiFailure('VDI_IO_ERROR', 'premature end of data'),
        ),
      ),
    )
    ended.catch(() => undefined)
    const uuid = String(vdi.uuid)
    await Promise.race([
      asked.format === 'vhd'
        ? receiveVhd(req, length, uuid, Number(vdi.virtual_size), call, gone.signal)
        : receiveRaw(req, length, call, uuid),
      ended,
    ])
    finish(call, auth, { result: printValue(asked.ref) })
  } catch (error) {
    finish(call, auth, { error })
  }
  stopWatching()
  socket.end()
}

async function receiveRaw(req: Readable, length: number, call: HttpCall, uuid: string): Promise<void> {
  let received = 0
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      received += chunk.length
      done(null, chunk)
    },
  })
  await call.sim.disks.writable(uuid)
  try {
    await pipeline(req, counter, createWriteStream(call.sim.disks.path(uuid), { flags: 'r+' }))
  } finally {
    call.sim.disks.touch(uuid, 0, received)
  }
  if (received !== length) throw new XapiFailure('VDI_IO_ERROR', 'premature end of data')
}

async function receiveVhd(
  req: Readable,
  length: number,
  uuid: string,
  size: number,
  call: HttpCall,
  signal: AbortSignal,
): Promise<void> {
  await call.sim.disks.writable(uuid)
  const path = call.sim.disks.path(uuid)
  const stall = call.sim.faults.get('import-stall')
  const reader = new ByteReader(
    req,
    stall ? { stall: { afterBytes: 1024 * 1024, ms: Number(stall.arg) * 1000, signal } } : {},
  )
  const disk = await fsp.open(path, 'r+')
  try {
    await applyVhd(reader, length, disk, size, (offset, n) => call.sim.disks.touch(uuid, offset, n))
  } catch (error) {
    throw error instanceof XapiFailure ? error : new XapiFailure('VDI_IO_ERROR', 'Device I/O errors')
  } finally {
    reader.close()
    await disk.close()
  }
}

/** GET /pool/xmldbdump: the database as xapi's XML dump (tables of rows with field attributes). */
export function handleDbDump(call: HttpCall): void {
  const { sim, req } = call
  const auth = authenticate(call, 'Pool database dump')
  if (!auth) return
  const socket = req.socket
  writeRawHead(socket, 'HTTP/1.1 200 OK', {
    Connection: 'close',
    'task-id': auth.task,
    Server: serverHeader(sim),
  })
  socket.write(
    '<?xml version="1.0" encoding="UTF-8"?><database><manifest><pair key="schema_major_vsn" value="5"/><pair key="schema_minor_vsn" value="786"/></manifest>',
  )
  for (const [cls, schema] of Object.entries(SCHEMA)) {
    if (cls === 'session' || cls === 'task') continue
    let table = `<table name="${cls}">`
    for (const [ref, rec] of sim.db.all(cls)) {
      let row = `<row ref="${escapeXml(ref)}"`
      for (const [field, type] of Object.entries(schema.fields)) {
        const value = rec[field]
        const text =
          type === 'd'
            ? formatDateTime(value as Date)
            : type === 'S' || type === 'M'
              ? printValue(value as never)
              : String(value)
        row += ` ${field}="${escapeXml(text)}"`
      }
      table += `${row}/>`
    }
    socket.write(`${table}</table>`)
  }
  socket.end('</database>')
  finish(call, auth, { result: '' })
}
