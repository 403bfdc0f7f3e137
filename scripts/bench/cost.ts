// What hashing and verification cost by themselves: CPU seconds per GB to read a cached XVA in
// 256 KiB pieces (as the export does), to read and hash it (XXH64, the manifest's), and to
// read, hash and verify it; no network, no disk writes. Best of three.
import { newXxh64 } from '../../src/core/xxh64.js'
import { closeSync, openSync, readSync } from 'node:fs'
import { XvaVerifier } from '../../src/xva/verify.js'

export interface Cost {
  read: number
  hash: number
  verify: number
}

function pass(file: string, hash: boolean, verify: boolean): number {
  const buffer = Buffer.allocUnsafeSlow(256 * 1024)
  const fd = openSync(file, 'r')
  const h = hash ? newXxh64() : undefined
  const verifier = verify ? new XvaVerifier() : undefined
  const before = process.cpuUsage()
  let position = 0
  try {
    for (let n; (n = readSync(fd, buffer, 0, buffer.length, position)) > 0; position += n) {
      const piece = buffer.subarray(0, n)
      h?.update(piece)
      verifier?.push(piece)
    }
    verifier?.finish()
  } finally {
    closeSync(fd)
  }
  const used = process.cpuUsage(before)
  return (used.user + used.system) / 1e6 / (position / 1e9)
}

export function verificationCost(file: string): Cost {
  const best = (hash: boolean, verify: boolean): number =>
    Math.min(...[0, 1, 2].map(() => pass(file, hash, verify)))
  const read = best(false, false)
  return { read, hash: best(true, false) - read, verify: best(true, true) - read }
}
