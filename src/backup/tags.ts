// What dpxen writes on the pool and in the staging folder, named in one place.

/** other_config key on every snapshot dpxen makes: the run that made it. */
export const OC_BACKUP_RUN = 'dpxen:backup-run'
/** other_config keys on a snapshot: the VM it was taken of, so a restore knows it from the XVA alone. */
export const OC_VM_UUID = 'dpxen:vm-uuid'
export const OC_VM_NAME = 'dpxen:vm-name'
/** other_config key: when dpxen made it (ISO time). */
export const OC_CREATED = 'dpxen:created'
/** Name prefix of dpxen's snapshots, so people recognise them in XenCenter. */
export const SNAPSHOT_PREFIX = 'dpxen backup'

/** The state file the pre-exec writes and the post-exec reads, inside backupDir. */
export const STATE_FILE = '.dpxen-state.json'
/** The restore journal in backupDir (restore/journal.ts). */
export const JOURNAL_FILE = '.dpxen-restore.json'
/** The lock file that holds backupDir for one session (staging.ts). */
export const LOCK_FILE = '.dpxen-lock'
/** Suffix of a file while it is being written; it gets its final name only when complete. */
export const PARTIAL_SUFFIX = '.partial'
/** Suffix of the manifest beside each XVA. */
export const MANIFEST_SUFFIX = '.manifest.json'
/** other_config key: `<hostname>:<pid>` of the dpxen process that made it (to know if it is gone). */
export const OC_OWNER = 'dpxen:owner'
/** A snapshot of ours older than this is swept even if its owner may still run. */
export const STALE_AFTER_MS = 24 * 3600 * 1000
