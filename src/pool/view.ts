// The pool read in a constant number of calls (one get_all_records per class): what backup
// planning, the leftover sweep and the restore's choice of SR read.
import type { Host } from '../xapi/host.js'

type Rec = Record<string, unknown>
type Table = Map<string, Rec>

export interface PoolView {
  vms: Table
  vbds: Table
  vdis: Table
  srs: Table
  vifs: Table
  networks: Table
  pool: Rec
}

/** Where a disk sits in a VM: its VBD and VDI, and the VBD's position, boot flag and mode. */
export interface DiskSlot {
  vbd: string
  vdi: string
  userdevice: string
  device: string
  bootable: boolean
  mode: string
}

async function table(host: Host, cls: string): Promise<Table> {
  return new Map(Object.entries(await host.call<Record<string, Rec>>(`${cls}.get_all_records`)))
}

/** Reads what a backup needs: 7 calls whatever the pool's size. */
export async function readPool(host: Host): Promise<PoolView> {
  const [vms, vbds, vdis, srs, vifs, networks, pools] = await Promise.all(
    ['VM', 'VBD', 'VDI', 'SR', 'VIF', 'network', 'pool'].map((cls) => table(host, cls)),
  )
  return {
    vms: vms!,
    vbds: vbds!,
    vdis: vdis!,
    srs: srs!,
    vifs: vifs!,
    networks: networks!,
    pool: [...pools!.values()][0] ?? {},
  }
}
