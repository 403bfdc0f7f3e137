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
