// The names of what dpxen writes in the staging folder: its own files, and the XVA files as in
// the white paper: <server>_<vmName>.xva (offline) and
// <server>_<vmName>_Snapshot.xva (online), made safe for Linux and Windows file systems.

/** The state file the pre-exec writes and the post-exec reads, inside backupDir. */
export const STATE_FILE = '.dpxen-state.json'
/** The restore journal in backupDir (pool/journal.ts). */
export const JOURNAL_FILE = '.dpxen-restore.json'
/** The lock file that holds backupDir for one session (staging/folder.ts). */
export const LOCK_FILE = '.dpxen-lock'
/** Suffix of a file while it is being written; it gets its final name only when complete. */
export const PARTIAL_SUFFIX = '.partial'
/** Suffix of the manifest beside each XVA. */
export const MANIFEST_SUFFIX = '.manifest.json'
/** Suffix of an incremental run's manifest (staging/chain.ts), and of its disks' files. */
export const CHAIN_SUFFIX = '.chain.json'
export const VHD_SUFFIX = '.vhd'
/**
 * Suffix of an incremental run's VM metadata: xapi's /export_metadata as it sent it (a tar of
 * ova.xml, vTPM contents included).
 */
export const METADATA_SUFFIX = '.metadata.tar'

const RESERVED = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i
const MAX_BYTES = 180
/** The bytes a file name may take on the file systems dpxen writes to (ext4, XFS, NTFS). */
const NAME_MAX = 255
/**
 * The most dpxen adds after a VM's `<server>_<vmName>` base: `_<uuid8>_Snapshot.xva.manifest.json.partial`
 * is 44 bytes, `_<run>.chain.json.partial` 39, `_<run>_<disk>.vhd.partial` 36; with room to spare.
 */
export const SUFFIX_ROOM = 64

/** `text` cut, at a character boundary, to at most `bytes` UTF-8 bytes. */
function cutTo(text: string, bytes: number): string {
  let cut = text
  while (Buffer.byteLength(cut) > bytes) cut = [...cut].slice(0, -1).join('')
  return cut
}

/**
 * Makes a name safe on Linux and Windows: characters Windows refuses (<>:"/\|?* and controls)
 * become _, trailing dots and spaces go, reserved device names get a leading _, and the
 * name is cut to 180 bytes (room for suffixes within the usual 255).
 */
export function safeName(name: string): string {
  // eslint-disable-next-line no-control-regex
  let safe = name.normalize('NFC').replace(/[<>:"/\\|?*\u0000-\u001f\u007f]/g, '_')
  safe = safe.replace(/[. ]+$/, '').replace(/^[ ]+/, '')
  if (safe === '' || safe === '.' || safe === '..') safe = '_'
  if (RESERVED.test(safe)) safe = `_${safe}`
  return cutTo(safe, MAX_BYTES)
}

export interface NamedVm {
  uuid: string
  name: string
}

/**
 * The XVA file name for each VM, whose base (without `_Snapshot.xva`) also names its incremental
 * runs' files. Names that collide once made safe (or VMs with the same name)
 * get the first 8 characters of their uuid appended, so no two VMs share a file. Comparison
 * ignores case, as Windows file systems do.
 */
export function xvaNames(server: string, vms: NamedVm[], online: boolean): Map<string, string> {
  // The whole base is cut, the server's part included, so that the longest name made from it
  // (a partial manifest of an online backup with a uuid) still fits in NAME_MAX.
  const base = (vm: NamedVm): string =>
    cutTo(`${safeName(server)}_${safeName(vm.name)}`, NAME_MAX - SUFFIX_ROOM)
  const counts = new Map<string, number>()
  for (const vm of vms) counts.set(base(vm).toLowerCase(), (counts.get(base(vm).toLowerCase()) ?? 0) + 1)
  const names = new Map<string, string>()
  for (const vm of vms) {
    const b = base(vm)
    const unique = counts.get(b.toLowerCase())! > 1 ? `${b}_${vm.uuid.slice(0, 8)}` : b
    names.set(vm.uuid, `${unique}${online ? '_Snapshot' : ''}.xva`)
  }
  return names
}
