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
import { applyVhd, includedBlocks, writeVhd } from '../xva/vhd.js'
import {
  abortOnClose,
  authenticate,
  failBeforeBody,
  finish,
  lookup,
  param,
  serverHeader,
  writeRawHead,
  type HttpCall,
} from './common.js'
import { SCHEMA } from '../model/schema.js'
import { escapeXml, formatDateTime, printValue } from '../model/xmlrpc.js'

function asFailure(error: unknown): XapiFailure {
  return error instanceof XapiFailure ? error : new XapiFailure('INTERNAL_ERROR', String(error))
}

/** The format asked for (raw unless said), and the VDI; refused as xapi refuses them. */
function rawVdi(call: HttpCall): { ref: string; format: 'raw' | 'vhd' } {
  const format = (param(call, 'format') ?? 'raw').toLowerCase()
  if (format !== 'raw' && format !== 'vhd')
    throw new XapiFailure('INTERNAL_ERROR', `Unknown format ${format}`)
  return { ref: lookup(call.sim, 'VDI', param(call, 'vdi')), format }
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

/** format=vhd: the whole disk (dynamic), or the blocks that differ from `base` (differencing). */
async function sendVhd(call: HttpCall, vdi: Rec, socket: Socket): Promise<void> {
  const { sim } = call
  const size = Number(vdi.virtual_size)
  const baseParam = param(call, 'base')
  let base: Rec | undefined
  if (baseParam !== undefined) {
    // After the 200, as xapi: a base that cannot be found fails the task, its page in the body.
    try {
      if (sim.faults.get('vhd-base-gone')) throw new XapiFailure('UUID_INVALID', 'VDI', baseParam)
      base = sim.db.require('VDI', lookup(sim, 'VDI', baseParam))
    } catch (error) {
      throw Object.assign(asFailure(error), { inBody: true })
    }
    if (Number(base.virtual_size) !== size)
      throw Object.assign(new XapiFailure('INTERNAL_ERROR', 'cannot compute differences: sizes differ'), {
        inBody: true,
      })
  }
  const disk = await fsp.open(sim.disks.path(String(vdi.uuid)), 'r')
  const baseDisk = base ? await fsp.open(sim.disks.path(String(base.uuid)), 'r') : undefined
  const controller = new AbortController()
  const stopWatching = abortOnClose(sim, controller)
  socket.once('close', () => controller.abort())
  try {
    const included = await includedBlocks(disk, baseDisk, size)
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

export async function handleImportRaw(call: HttpCall): Promise<void> {
  const { sim, req } = call
  const auth = authenticate(call, 'VDI import')
  if (!auth) return
  let asked: ReturnType<typeof rawVdi>
  let length: number
  try {
    if (req.headers['transfer-encoding'])
      throw new XapiFailure('INTERNAL_ERROR', `Cannot handle encoding: ${req.headers['transfer-encoding']}`)
    if ((param(call, 'format') ?? 'raw').toLowerCase() === 'vhd' && param(call, 'vdi') === undefined) {
      failBeforeBody(
        call,
        auth,
        400,
        new XapiFailure('INTERNAL_ERROR', 'Importing a VHD directly into an SR not supported'),
      )
      return
    }
    asked = rawVdi(call)
    if (asked.format === 'vhd' && param(call, 'chunked') !== undefined)
      throw new XapiFailure('INTERNAL_ERROR', 'Cannot handle chunked VHD')
    const vdi = sim.db.require('VDI', asked.ref)
    length = Number(req.headers['content-length'])
    if (!Number.isSafeInteger(length)) throw new XapiFailure('INTERNAL_ERROR', 'Content-Length required')
    if (asked.format === 'raw' && length > Number(vdi.virtual_size))
      throw new XapiFailure('VDI_IO_ERROR', 'Data larger than the VDI')
    if ((vdi.VBDs as string[]).some((v) => sim.db.get('VBD', v)?.currently_attached))
      throw new XapiFailure('VDI_IN_USE', asked.ref, 'import')
  } catch (error) {
    failBeforeBody(call, auth, 404, asFailure(error))
    return
  }
  const vdi = sim.db.require('VDI', asked.ref)
  const socket = req.socket
  writeRawHead(socket, 'HTTP/1.1 200 OK', {
    Connection: 'close',
    'Content-Type': 'application/octet-stream',
    'task-id': auth.task,
    Server: serverHeader(sim),
  })
  try {
    const aborted = once(req, 'aborted').then(() => {
      throw new XapiFailure('VDI_IO_ERROR', 'premature end of data')
    })
    aborted.catch(() => undefined)
    const path = sim.disks.path(String(vdi.uuid))
    await Promise.race([
      asked.format === 'vhd'
        ? receiveVhd(req, length, path, Number(vdi.virtual_size))
        : receiveRaw(req, length, path),
      aborted,
    ])
    finish(call, auth, { result: printValue(asked.ref) })
  } catch (error) {
    finish(call, auth, { error })
  }
  socket.end()
}

async function receiveRaw(req: Readable, length: number, path: string): Promise<void> {
  let received = 0
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      received += chunk.length
      done(null, chunk)
    },
  })
  await pipeline(req, counter, createWriteStream(path, { flags: 'r+' }))
  if (received !== length) throw new XapiFailure('VDI_IO_ERROR', 'premature end of data')
}

async function receiveVhd(req: Readable, length: number, path: string, size: number): Promise<void> {
  const reader = new ByteReader(req)
  const disk = await fsp.open(path, 'r+')
  try {
    await applyVhd(reader, length, disk, size)
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
