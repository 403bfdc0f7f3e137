// VDI.enable_cbt, disable_cbt, data_destroy and list_changed_blocks (model/cbt-ops.ts).
import { dataDestroy, listChangedBlocks, setCbt } from '../../model/cbt-ops.js'
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
    run: ({ sim }, [from, to]) => listChangedBlocks(sim, String(from), String(to)),
  })
}
