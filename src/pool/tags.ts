// What dpxen writes on the pool (other_config keys, snapshot names), named in one place.
// The staging folder's file names are in staging/names.ts.

/** other_config key on every snapshot dpxen makes: the run that made it. */
export const OC_BACKUP_RUN = 'dpxen:backup-run'
/** other_config keys on a snapshot: the VM it was taken of, so a restore knows it from the XVA alone. */
export const OC_VM_UUID = 'dpxen:vm-uuid'
export const OC_VM_NAME = 'dpxen:vm-name'
/** other_config key: when dpxen made it (ISO time). */
export const OC_CREATED = 'dpxen:created'
/** Name prefix of dpxen's snapshots, so people recognise them in XenCenter. */
export const SNAPSHOT_PREFIX = 'dpxen backup'

/** other_config key: `<hostname>:<pid>` of the dpxen process that made it (to know if it is gone). */
export const OC_OWNER = 'dpxen:owner'
/** other_config key on a VM an offline restore made in place of another: the uuid it stands for. */
export const OC_RESTORED_FROM = 'dpxen:restored-from'

/**
 * other_config keys on the snapshot an incremental backup keeps as the next run's base: the VM
 * it is of, the run that made it, the chain (the full's run) and its position in that chain.
 * A base is not tagged as a run's snapshot (dpxen:backup-run), so no sweep ever takes it. Its
 * disks carry dpxen:base-of too, so disks left by a base removed half-way are still known.
 */
export const OC_BASE_OF = 'dpxen:base-of'
export const OC_BASE_RUN = 'dpxen:base-run'
export const OC_BASE_CHAIN = 'dpxen:base-chain'
export const OC_BASE_POSITION = 'dpxen:base-position'
/**
 * On each disk of a base that changed block tracking keeps without data (cbt): the disk's
 * position in the VM, since no VM record holds its VBDs any more.
 */
export const OC_BASE_USERDEVICE = 'dpxen:base-userdevice'
/**
 * The Data Protector level of the run a base is of (0 a Full, N an Incremental N, 1 a plain
 * Incremental), and whether it was a leveled one: a leveled run keeps the bases of lower levels
 * (an Incremental N is a delta against the last run of a lower level); any other run replaces
 * every base the VM had.
 */
export const OC_BASE_LEVEL = 'dpxen:base-level'
export const OC_BASE_LEVELED = 'dpxen:base-leveled'
/**
 * other_config key on a run's snapshot kept as the next base before Data Protector has backed up
 * the run's files: the post-exec confirms it (SMEXIT 0) or drops it.
 */
export const OC_BASE_PENDING = 'dpxen:base-pending'
/**
 * other_config key on every VDI a restore of an incremental chain creates, the value its journal
 * entry's token (JournalEntry.token): a VDI made just before a crash, whose ref the journal never
 * learnt, is found by it and removed.
 */
export const OC_RESTORE_TOKEN = 'dpxen:restore-token'
/**
 * other_config key on a health check's copy, from the moment it exists (set before the restore
 * journal lets it go): the uuid of the VM it is a copy of. With OC_BACKUP_RUN, OC_OWNER and
 * OC_CREATED, the sweep removes a copy a killed health check left.
 */
export const OC_HEALTH_CHECK = 'dpxen:health-check'
/** XenServer tag (VM.tags) an administrator puts on a VM whose backups are not to be health-checked. */
export const NO_HEALTH_CHECK_TAG = 'dpxen:no-health-check'
/** Name prefix of a kept base snapshot. */
export const BASE_PREFIX = 'dpxen base'
