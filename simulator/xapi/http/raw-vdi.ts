// Raw disk transfer (/export_raw_vdi, /import_raw_vdi, format raw) and /pool/xmldbdump.
import { createReadStream, createWriteStream } from 'node:fs'
import { once } from 'node:events'
import { pipeline } from 'node:stream/promises'
import { Transform } from 'node:stream'
import { XapiFailure } from '../model/errors.js'
import {
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

function rawVdi(call: HttpCall): string {
  const format = param(call, 'format') ?? 'raw'
  if (format !== 'raw') throw new XapiFailure('INTERNAL_ERROR', `unsupported format in simulator: ${format}`)
  return lookup(call.sim, 'VDI', param(call, 'vdi'))
}

export async function handleExportRaw(call: HttpCall): Promise<void> {
  const { sim, req } = call
  const auth = authenticate(call, 'VDI export')
  if (!auth) return
  let vdiRef: string
  try {
    vdiRef = rawVdi(call)
  } catch (error) {
    failBeforeBody(call, auth, 404, asFailure(error))
    return
  }
  const vdi = sim.db.require('VDI', vdiRef)
  const socket = req.socket
  writeRawHead(socket, 'HTTP/1.1 200 OK', {
    Connection: 'close',
    'content-type': 'application/octet-stream',
    'Content-Disposition': `attachment; filename="${String(vdi.uuid)}.raw"`,
    'task-id': auth.task,
    Server: serverHeader(sim),
  })
  try {
    await pipeline(createReadStream(sim.disks.path(String(vdi.uuid))), socket, { end: false })
    finish(call, auth, { result: '' })
    socket.end()
  } catch (error) {
    finish(call, auth, { error })
    socket.destroy()
  }
}

export async function handleImportRaw(call: HttpCall): Promise<void> {
  const { sim, req } = call
  const auth = authenticate(call, 'VDI import')
  if (!auth) return
  let vdiRef: string
  let length: number
  try {
    if (req.headers['transfer-encoding'])
      throw new XapiFailure('INTERNAL_ERROR', 'Transfer-Encoding is not supported')
    vdiRef = rawVdi(call)
    const vdi = sim.db.require('VDI', vdiRef)
    length = Number(req.headers['content-length'])
    if (!Number.isSafeInteger(length)) throw new XapiFailure('INTERNAL_ERROR', 'Content-Length required')
    if (length > Number(vdi.virtual_size)) throw new XapiFailure('VDI_IO_ERROR', 'Data larger than the VDI')
    if ((vdi.VBDs as string[]).some((v) => sim.db.get('VBD', v)?.currently_attached))
      throw new XapiFailure('VDI_IN_USE', vdiRef, 'import')
  } catch (error) {
    failBeforeBody(call, auth, 404, asFailure(error))
    return
  }
  const vdi = sim.db.require('VDI', vdiRef)
  const socket = req.socket
  writeRawHead(socket, 'HTTP/1.1 200 OK', {
    Connection: 'close',
    'task-id': auth.task,
    Server: serverHeader(sim),
  })
  let received = 0
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      received += chunk.length
      done(null, chunk)
    },
  })
  try {
    const aborted = once(req, 'aborted').then(() => {
      throw new XapiFailure('VDI_IO_ERROR', 'premature end of data')
    })
    aborted.catch(() => undefined)
    await Promise.race([
      pipeline(req, counter, createWriteStream(sim.disks.path(String(vdi.uuid)), { flags: 'r+' })),
      aborted,
    ])
    if (received !== length) throw new XapiFailure('VDI_IO_ERROR', 'premature end of data')
    finish(call, auth, { result: printValue(vdiRef) })
  } catch (error) {
    finish(call, auth, { error })
  }
  socket.end()
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
