// Which VMs a backup takes (selectVms), table-driven over a pool read as readPool gives it: names
// and uuids, duplicates, what is not a VM dpxen backs up, and the all* modes' narrowing.
import { describe, expect, it } from 'vitest'
import { selectVms, type Choice } from '../../src/backup/select.js'
import type { PoolView } from '../../src/pool/view.js'

type Rec = Record<string, unknown>
const vm = (uuid: string, name: string, extra: Rec = {}): [string, Rec] => [
  `OpaqueRef:${uuid}`,
  { uuid, name_label: name, power_state: 'Running', VBDs: [], VIFs: [], tags: [], ...extra },
]
const view: PoolView = {
  vms: new Map([
    vm('u-web', 'web', { tags: ['prod'] }),
    vm('u-db', 'db', { tags: ['prod', 'no-backup'] }),
    vm('u-twin-1', 'twin'),
    vm('u-twin-2', 'twin'),
    vm('u-dom0', 'Control domain', { is_control_domain: true }),
    vm('u-tpl', 'Debian 12', { is_a_template: true }),
    vm('u-snap', 'web before upgrade', { is_a_snapshot: true, is_a_template: true }),
  ]),
  vbds: new Map(),
  vdis: new Map(),
  srs: new Map(),
  vifs: new Map(),
  networks: new Map(),
  pool: {},
}

const cases: { what: string; choice: Choice; plans: string[]; problems?: string[]; skipped?: string[] }[] = [
  { what: 'a name', choice: { allVms: false, vmName: ['web'] }, plans: ['web'] },
  { what: 'a uuid', choice: { allVms: false, vmName: ['u-db'] }, plans: ['db'] },
  {
    what: 'a VM named twice in vmName, once',
    choice: { allVms: false, vmName: ['web', 'u-web'] },
    plans: ['web'],
  },
  {
    what: 'two VMs of one name: refused, their uuids named',
    choice: { allVms: false, vmName: ['twin', 'u-twin-2'] },
    plans: ['twin'],
    problems: ['2 VMs are named twin; name one by its uuid in vmName (u-twin-1, u-twin-2)'],
  },
  {
    what: 'no such VM, case matters',
    choice: { allVms: false, vmName: ['Web'] },
    plans: [],
    problems: ['no VM is named Web (check vmName; names are case-sensitive)'],
  },
  {
    what: 'not VMs dpxen backs up',
    choice: { allVms: false, vmName: ['Control domain', 'Debian 12', 'web before upgrade'] },
    plans: [],
    problems: [
      'Control domain is the control domain, not a VM dpxen backs up',
      'Debian 12 is a template, not a VM dpxen backs up',
      'web before upgrade is a snapshot, not a VM dpxen backs up',
    ],
  },
  {
    what: 'all*: every VM, in name order',
    choice: { allVms: true, vmName: [] },
    plans: ['db', 'twin', 'twin', 'web'],
  },
  {
    what: 'all* with exclude and tags, each left out with its line',
    choice: {
      allVms: true,
      vmName: [],
      exclude: ['u-twin-1'],
      includeTags: ['prod'],
      excludeTags: ['no-backup'],
    },
    plans: ['web'],
    skipped: [
      'db: not backed up: it carries the tag "no-backup" (excludeTags)',
      'twin: not backed up: it carries none of the tags "prod" (includeTags)',
      'twin: not backed up: it is in exclude',
    ],
  },
]

describe('selectVms', () => {
  it.each(cases)('$what', ({ choice, plans, problems = [], skipped = [] }) => {
    const selection = selectVms(view, choice)
    expect(selection.plans.map((p) => p.name)).toEqual(plans)
    expect(selection.problems.map((p) => p.reason)).toEqual(problems)
    expect(selection.skipped).toEqual(skipped)
  })
})
