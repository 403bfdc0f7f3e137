// The keys dpxen writes into other_config are a contract with the pools it has already run on:
// snapshots and bases tagged by an earlier version must still be recognised (swept, settled,
// chained), so a key is never renamed. The suites use the constants; this table holds their
// spelling on the wire.
import { describe, expect, it } from 'vitest'
import * as tags from '../../src/pool/tags.js'

const WIRE: Record<string, string> = {
  OC_BACKUP_RUN: 'dpxen:backup-run',
  OC_VM_UUID: 'dpxen:vm-uuid',
  OC_VM_NAME: 'dpxen:vm-name',
  OC_CREATED: 'dpxen:created',
  OC_OWNER: 'dpxen:owner',
  OC_RESTORED_FROM: 'dpxen:restored-from',
  OC_BASE_OF: 'dpxen:base-of',
  OC_BASE_RUN: 'dpxen:base-run',
  OC_BASE_CHAIN: 'dpxen:base-chain',
  OC_BASE_POSITION: 'dpxen:base-position',
  OC_BASE_USERDEVICE: 'dpxen:base-userdevice',
  OC_BASE_LEVEL: 'dpxen:base-level',
  OC_BASE_LEVELED: 'dpxen:base-leveled',
  OC_BASE_PENDING: 'dpxen:base-pending',
  OC_RESTORE_TOKEN: 'dpxen:restore-token',
  OC_HEALTH_CHECK: 'dpxen:health-check',
  NO_HEALTH_CHECK_TAG: 'dpxen:no-health-check',
  SNAPSHOT_PREFIX: 'dpxen backup',
  BASE_PREFIX: 'dpxen base',
}

describe('other_config keys and names on the wire', () => {
  it.each(Object.entries(WIRE))('%s is %j', (name, wire) => {
    expect((tags as Record<string, unknown>)[name]).toBe(wire)
  })

  it('every key and name in pool/tags.ts is in the table, so a new one is pinned too', () => {
    const written = Object.entries(tags).filter(([, v]) => typeof v === 'string' && v.startsWith('dpxen'))
    expect(written.map(([name]) => name).sort()).toEqual(Object.keys(WIRE).sort())
  })
})
