// What incremental backups without a snapshot's data use: VDI.enable_cbt, disable_cbt,
// data_destroy and list_changed_blocks (model/cbt-ops.ts); network purposes, VDI.get_nbd_info
// and host.get_server_certificate (model/nbd-info.ts).
import { dataDestroy, listChangedBlocks, setCbt } from '../../model/cbt-ops.js'
import { destroyVdi } from '../../model/storage.js'
import { addPurpose, nbdInfo, removePurpose } from '../../model/nbd-info.js'
import type { MethodTable, ParamSpec } from '../dispatch.js'

const self: ParamSpec = { name: 'self', type: 'ref:VDI' }

export function registerCbt(table: MethodTable): void {
  table.set('VDI.enable_cbt', { params: [self], run: ({ sim }, [ref]) => setCbt(sim, String(ref), true) })
  table.set('VDI.disable_cbt', { params: [self], run: ({ sim }, [ref]) => setCbt(sim, String(ref), false) })
  table.set('VDI.data_destroy', { params: [self], run: ({ sim }, [ref]) => dataDestroy(sim, String(ref)) })
  table.set('VDI.list_changed_blocks', {
    params: [
      { name: 'vdi_from', type: 'ref:VDI' },
      { name: 'vdi_to', type: 'ref:VDI' },
    ],
    run: async ({ sim }, [from, to]) => {
      // Fault cbt-base-gone: the base deleted (by someone, in XenCenter) as the run asks.
      if (sim.faults.take('cbt-base-gone')) await destroyVdi(sim, String(from))
      return listChangedBlocks(sim, String(from), String(to))
    },
  })
}

export function registerNbd(table: MethodTable): void {
  const network: ParamSpec = { name: 'self', type: 'ref:network' }
  const value: ParamSpec = { name: 'value', type: 'string' }
  table.set('network.add_purpose', {
    params: [network, value],
    run: ({ sim }, [ref, purpose]) => addPurpose(sim, String(ref), purpose),
  })
  table.set('network.remove_purpose', {
    params: [network, value],
    run: ({ sim }, [ref, purpose]) => removePurpose(sim, String(ref), purpose),
  })
  table.set('VDI.get_nbd_info', {
    params: [self],
    run: ({ sim, session }, [ref]) => nbdInfo(sim, String(ref), String(session)),
  })
  table.set('host.get_server_certificate', {
    params: [{ name: 'host', type: 'ref:host' }],
    run: ({ sim }, [ref]) => {
      sim.db.require('host', ref)
      return sim.certificates.get(String(ref)) ?? ''
    },
  })
}
