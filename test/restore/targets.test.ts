// Where each disk of a backup goes (planTargets), table-driven: the target SR, or with
// originalSr each disk's own SR while it exists; and every SR checked for room before anything.
import { describe, expect, it } from 'vitest'
import { planTargets, type RestoreContext } from '../../src/restore/common.js'
import type { RestoreItem } from '../../src/restore/find.js'

type Rec = Record<string, unknown>
const GiB = 1024 ** 3
const sr = (uuid: string, name: string, freeGiB: number, extra: Rec = {}): [string, Rec] => [
  `OpaqueRef:${uuid}`,
  {
    uuid,
    name_label: name,
    type: 'ext',
    content_type: 'user',
    allowed_operations: ['vdi_create'],
    physical_size: String(100 * GiB),
    physical_utilisation: String((100 - freeGiB) * GiB),
    ...extra,
  },
]
const srs = new Map([
  sr('u-local', 'Local', 50),
  sr('u-nfs', 'NFS', 5),
  sr('u-iso', 'ISO', 50, { content_type: 'iso' }),
])
const target = (uuid: string) => ({
  ref: `OpaqueRef:${uuid}`,
  name: String(srs.get(`OpaqueRef:${uuid}`)!.name_label),
  uuid,
})
const item = (disks: { userdevice: string; size: number; srUuid: string }[]) =>
  ({
    vmName: 'web',
    verified: { summary: { disks: disks.map((d) => ({ ...d, virtualSize: d.size * GiB })) } },
  }) as unknown as RestoreItem
const ctx = (into: string, originalSr: boolean) =>
  ({ config: { originalSr }, view: { srs }, target: target(into) }) as unknown as RestoreContext

const disks = [
  { userdevice: '0', size: 2, srUuid: 'u-nfs' },
  { userdevice: '1', size: 4, srUuid: 'u-gone' },
]

describe('planTargets', () => {
  it.each([
    {
      what: 'every disk to the target SR',
      into: 'u-local',
      originalSr: false,
      expected: { 0: 'Local', 1: 'Local' },
    },
    {
      what: 'originalSr: each disk home while its SR exists, else the target',
      into: 'u-local',
      originalSr: true,
      expected: { 0: 'NFS', 1: 'Local' },
    },
  ])('$what', ({ into, originalSr, expected }) => {
    const plan = planTargets(ctx(into, originalSr), item(disks))
    expect(Object.fromEntries([...plan].map(([position, sr]) => [position, sr.name]))).toEqual(expected)
  })

  it.each([
    {
      what: 'a target without room for the whole import',
      into: 'u-nfs',
      originalSr: false,
      error: /SR "NFS" has 5\.0 GiB free, the restore needs 6\.0 GiB/,
    },
    {
      what: 'an ISO library',
      into: 'u-iso',
      originalSr: false,
      error: /SR "ISO" \(type ext\) cannot hold restored disks; set sr to another SR/,
    },
    {
      what: "a disk's own SR without room for it",
      into: 'u-local',
      originalSr: true,
      big: true,
      error: /SR "NFS" has 5\.0 GiB free, the restore needs 8\.0 GiB/,
    },
  ])('refuses $what before anything changes', ({ into, originalSr, big, error }) => {
    const these = big ? [{ userdevice: '0', size: 8, srUuid: 'u-nfs' }] : disks
    expect(() => planTargets(ctx(into, originalSr), item(these))).toThrow(error)
  })
})
