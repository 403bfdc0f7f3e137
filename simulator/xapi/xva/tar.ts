// Minimal ustar writing for XVA streams: 512-byte headers, data padded to 512, end marker.

export const BLOCK = 512

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0'
}

/** A ustar header for a regular file. Names must fit in 100 bytes (XVA names always do). */
export function tarHeader(name: string, size: number, mtime = 0): Buffer {
  const header = Buffer.alloc(BLOCK)
  if (Buffer.byteLength(name) > 100) throw new Error(`tar entry name too long: ${name}`)
  header.write(name, 0, 100, 'utf8')
  header.write(octal(0o644, 8), 100, 'ascii')
  header.write(octal(0, 8), 108, 'ascii')
  header.write(octal(0, 8), 116, 'ascii')
  header.write(octal(size, 12), 124, 'ascii')
  header.write(octal(mtime, 12), 136, 'ascii')
  header.fill(' ', 148, 156)
  header.write('0', 156, 'ascii')
  header.write('ustar\0', 257, 'ascii')
  header.write('00', 263, 'ascii')
  let sum = 0
  for (const byte of header) sum += byte
  header.write(octal(sum, 7) + ' ', 148, 'ascii')
  return header
}

export function padding(size: number): Buffer {
  const rest = size % BLOCK
  return Buffer.alloc(rest === 0 ? 0 : BLOCK - rest)
}

/** Two zero blocks end a tar archive. */
export const TAR_END = Buffer.alloc(2 * BLOCK)
