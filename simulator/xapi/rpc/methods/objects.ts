// VM, VDI, VBD, VIF, SR and pool methods beyond the generic accessors.
import { setTimeout as sleep } from 'node:timers/promises'
import { XapiFailure } from '../../model/errors.js'
import { isCancelling } from '../../model/tasks.js'
import { refreshVmOps } from '../../model/factory.js'
import { masterOf } from '../../model/hosts.js'
import type { MethodTable, ParamSpec } from '../dispatch.js'
import { SCHEMA } from '../../model/schema.js'
import {
  createVbd,
  createVdi,
  createVif,
  copyVdi,
  destroyVbd,
  destroyVdi,
  destroyVif,
  resizeVdi,
  snapshotVdi,
} from '../../model/storage.js'
import {
  assertCanBootHere,
  assertVmOp,
  cloneVm,
  destroyVm,
  possibleHosts,
  revertVm,
  setPowerState,
  snapshotVm,
  startVm,
} from '../../model/vmops.js'
import type { Rec } from '../../model/db.js'
import { createVtpm, destroyVtpm, setVtpmContents } from '../../model/vtpm.js'
import type { SimContext } from '../../model/context.js'
import { assertCbtState } from '../../model/cbt-checks.js'

const vm: ParamSpec = { name: 'vm', type: 'ref:VM' }
const self = (cls: string): ParamSpec => ({ name: 'self', type: `ref:${cls}` })
const startArgs: ParamSpec[] = [
  { name: 'start_paused', type: 'bool' },
  { name: 'force', type: 'bool' },
]

/** Checks a *.create record as xapi's generated server does: required fields present, types right. */
function createRecord(sim: SimContext, cls: string, value: unknown): Rec {
  const schema = SCHEMA[cls]!
  const record = value as Rec
  const out: Rec = {}
  for (const field of schema.createFields ?? []) {
    if (!(field in record)) {
      if (schema.createDefaults && field in schema.createDefaults) {
        out[field] = schema.createDefaults[field]
        continue
      }
      throw new XapiFailure('INTERNAL_ERROR', `Dispatcher_FieldNotFound("${field}")`)
    }
    const type = schema.fields[field]
    const v = record[field]
    if (type === 'b') out[field] = v === true || v === 'true' || v === 1
    else if (type === 'i') {
      const n = Number(v)
      if (!Number.isSafeInteger(n)) throw new XapiFailure('FIELD_TYPE_ERROR', field)
      out[field] = n
    } else out[field] = v
  }
  void sim
  return out
}

/** A guest slow to shut down: the task waits, and a cancel before the guest is done cancels it. */
async function guestTakesItsTime(sim: SimContext, task: string, ms: number): Promise<void> {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (isCancelling(sim, task)) throw new XapiFailure('TASK_CANCELLED', task)
    await sleep(50)
  }
}

/** xapi_vm.ml set_ha_restart_priority: one of restart, best-effort or "" (HA itself, and its failover plan, are not modelled). */
function registerHa(table: MethodTable): void {
  table.set('VM.set_ha_restart_priority', {
    params: [vm, { name: 'value', type: 'string' }],
    run({ sim }, [ref, value]) {
      if (!['restart', 'best-effort', ''].includes(String(value)))
        throw new XapiFailure('INVALID_VALUE', 'ha_restart_priority', String(value))
      sim.db.update('VM', String(ref), { ha_restart_priority: String(value) })
    },
  })
}

/** Power operations, where a VM may run, and the hosts' and the pool's own (maintenance, a new master). */
function registerPower(table: MethodTable): void {
  const powerOp = (
    name: string,
    target: 'Halted' | 'Running' | 'Suspended',
    params: ParamSpec[] = [],
  ): void => {
    table.set(`VM.${name}`, {
      params: [vm, ...params],
      async run({ sim, task }, [ref]) {
        assertVmOp(sim, String(ref), name)
        const slow = name === 'clean_shutdown' ? sim.faults.get('shutdown-slow') : undefined
        if (slow && task) await guestTakesItsTime(sim, task, Number(slow.arg) * 1000)
        setPowerState(sim, String(ref), target)
      },
    })
  }
  table.set('VM.start', { params: [vm, ...startArgs], run: ({ sim }, [ref]) => startVm(sim, String(ref)) })
  table.set('VM.get_possible_hosts', {
    params: [vm],
    run: ({ sim }, [ref]) => possibleHosts(sim, String(ref)),
  })
  table.set('VM.assert_can_boot_here', {
    params: [self('VM'), { name: 'host', type: 'ref:host' }],
    run: ({ sim }, [ref, host]) => assertCanBootHere(sim, String(ref), String(host)),
  })
  // host.disable / host.enable: maintenance mode's first step (xapi_host.ml; the HA and
  // evacuation checks of a real pool are not modelled).
  for (const [name, enabled] of [
    ['disable', false],
    ['enable', true],
  ] as const)
    table.set(`host.${name}`, {
      params: [{ name: 'host', type: 'ref:host' }],
      run({ sim }, [ref]) {
        sim.db.require('host', ref)
        sim.db.update('host', String(ref), { enabled })
      },
    })
  // pool.designate_new_master (xapi_pool.ml): the host becomes the master. Sessions and tasks
  // are not persisted (datamodel.ml: PersistNothing), so none survive the transition.
  table.set('pool.designate_new_master', {
    params: [{ name: 'host', type: 'ref:host' }],
    run({ sim }, [ref]) {
      sim.db.require('host', ref)
      if (masterOf(sim) === ref) return
      sim.db.update('pool', sim.poolRef, { master: String(ref) })
      for (const cls of ['session', 'task']) for (const [old] of sim.db.all(cls)) sim.db.destroy(cls, old)
    },
  })
  powerOp('clean_shutdown', 'Halted')
  powerOp('hard_shutdown', 'Halted')
  powerOp('shutdown', 'Halted')
  powerOp('suspend', 'Suspended')
  powerOp('resume', 'Running', startArgs)
  powerOp('clean_reboot', 'Running')
  powerOp('hard_reboot', 'Running')
}

/** vTPMs, made and removed while their VM is halted. */
function registerVtpms(table: MethodTable): void {
  // VTPM (xapi_vtpm.ml). get_contents and set_contents are _R_LOCAL_ROOT_ONLY: the simulator's
  // one user logs in as root with a password, which xapi makes a local superuser session.
  table.set('VTPM.create', {
    params: [
      { name: 'vM', type: 'ref:VM' },
      { name: 'is_unique', type: 'bool' },
    ],
    run: ({ sim }, [ref, unique]) => createVtpm(sim, String(ref), Boolean(unique)),
  })
  table.set('VTPM.destroy', {
    params: [self('VTPM')],
    run: ({ sim }, [ref]) => destroyVtpm(sim, String(ref)),
  })
  table.set('VTPM.get_contents', {
    params: [self('VTPM')],
    run: ({ sim }, [ref]) => String(sim.db.require('VTPM', ref).contents),
  })
  table.set('VTPM.set_contents', {
    params: [self('VTPM'), { name: 'contents', type: 'string' }],
    run: ({ sim }, [ref, contents]) => setVtpmContents(sim, String(ref), String(contents)),
  })
}

/** A VM destroyed, reverted, snapshotted, cloned or copied, and made a template. */
function registerVmCopies(table: MethodTable): void {
  table.set('VM.destroy', { params: [self('VM')], run: ({ sim }, [ref]) => destroyVm(sim, String(ref)) })
  table.set('VM.revert', {
    params: [{ name: 'snapshot', type: 'ref:VM' }],
    run: ({ sim }, [ref]) => revertVm(sim, String(ref)),
  })
  table.set('VM.snapshot', {
    params: [vm, { name: 'new_name', type: 'string' }, { name: 'ignore_vdis', type: 'strings', default: [] }],
    run: ({ sim }, [ref, name, ignore]) => snapshotVm(sim, String(ref), String(name), ignore as string[]),
  })
  table.set('VM.snapshot_with_quiesce', {
    params: [vm, { name: 'new_name', type: 'string' }],
    run: (_call, [ref]) => {
      throw new XapiFailure('VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED', String(ref))
    },
  })
  table.set('VM.clone', {
    params: [vm, { name: 'new_name', type: 'string' }],
    run: ({ sim }, [ref, name]) => cloneVm(sim, String(ref), String(name), 'clone'),
  })
  table.set('VM.copy', {
    params: [vm, { name: 'new_name', type: 'string' }, { name: 'sr', type: 'ref?:SR' }],
    run: ({ sim }, [ref, name, sr]) =>
      cloneVm(sim, String(ref), String(name), 'copy', sr === 'OpaqueRef:NULL' ? undefined : String(sr)),
  })
  table.set('VM.get_allowed_VBD_devices', {
    noAsync: true,
    params: [vm],
    run({ sim }, [ref]) {
      const used = (sim.db.require('VM', ref).VBDs as string[]).map((v) => sim.db.get('VBD', v)?.userdevice)
      return Array.from({ length: 16 }, (_, i) => String(i)).filter((d) => !used.includes(d))
    },
  })
  table.set('VM.set_is_a_template', {
    noAsync: true,
    params: [self('VM'), { name: 'value', type: 'bool' }],
    run({ sim }, [ref, value]) {
      const rec = sim.db.require('VM', ref)
      if (value && rec.power_state !== 'Halted') {
        throw new XapiFailure(
          'VM_BAD_POWER_STATE',
          String(ref),
          'halted',
          String(rec.power_state).toLowerCase(),
        )
      }
      sim.db.update('VM', String(ref), { is_a_template: Boolean(value) })
      refreshVmOps(sim, String(ref))
    },
  })
}

/** Disks made, reset on boot, destroyed and resized. */
function registerVdis(table: MethodTable): void {
  table.set('VDI.create', {
    params: [{ name: 'args', type: 'record' }],
    async run({ sim }, [record]) {
      const fields = createRecord(sim, 'VDI', record)
      sim.db.require('SR', fields.SR)
      return createVdi(sim, fields)
    },
  })
  // xapi: the SM backend's set_persistent, then the field (xapi_vdi.ml set_on_boot). The SM
  // backends record a reset disk as sm_config on_boot=reset, which is what xapi's lifecycle
  // checks read (inferred from xapi_vm_lifecycle.ml reading sm_config, not from SM's code).
  table.set('VDI.set_on_boot', {
    params: [self('VDI'), { name: 'value', type: 'string' }],
    run({ sim }, [ref, value]) {
      // An unknown value fails xapi's unmarshalling (its exact error was not verified).
      if (value !== 'persist' && value !== 'reset')
        throw new XapiFailure('INTERNAL_ERROR', `Rpc.Runtime_error("on_boot_mode", "${String(value)}")`)
      assertCbtState(sim, String(ref), 'set_on_boot')
      const vdi = sim.db.require('VDI', ref)
      const sm = { ...(vdi.sm_config as Record<string, string>) }
      if (value === 'reset') sm.on_boot = 'reset'
      else delete sm.on_boot
      sim.db.update('VDI', String(ref), { on_boot: value, sm_config: sm })
      for (const vbd of vdi.VBDs as string[]) refreshVmOps(sim, String(sim.db.get('VBD', vbd)?.VM))
    },
  })
  table.set('VDI.destroy', { params: [self('VDI')], run: ({ sim }, [ref]) => destroyVdi(sim, String(ref)) })
  table.set('VDI.resize', {
    params: [
      { name: 'vdi', type: 'ref:VDI' },
      { name: 'size', type: 'int' },
    ],
    run: ({ sim }, [ref, size]) => resizeVdi(sim, String(ref), Number(size)),
  })
}

/** Disks snapshotted, cloned and copied. */
function registerVdiCopies(table: MethodTable): void {
  table.set('VDI.snapshot', {
    params: [
      { name: 'vdi', type: 'ref:VDI' },
      { name: 'driver_params', type: 'map', default: {} },
    ],
    run: ({ sim }, [ref]) => snapshotVdi(sim, String(ref), new Date()),
  })
  table.set('VDI.clone', {
    params: [
      { name: 'vdi', type: 'ref:VDI' },
      { name: 'driver_params', type: 'map', default: {} },
    ],
    run({ sim }, [ref]) {
      const vdi = sim.db.require('VDI', ref)
      if (!(vdi.allowed_operations as string[]).includes('clone'))
        throw new XapiFailure('SR_OPERATION_NOT_SUPPORTED', String(vdi.SR))
      assertCbtState(sim, String(ref), 'clone')
      return copyVdi(sim, String(ref), String(vdi.SR), {})
    },
  })
  table.set('VDI.copy', {
    params: [
      { name: 'vdi', type: 'ref:VDI' },
      { name: 'sr', type: 'ref:SR' },
    ],
    run({ sim }, [ref, sr]) {
      assertCbtState(sim, String(ref), 'copy')
      return copyVdi(sim, String(ref), String(sr), {})
    },
  })
}

/** VBDs and VIFs, and an SR scan. */
function registerDevices(table: MethodTable): void {
  table.set('VBD.create', {
    params: [{ name: 'args', type: 'record' }],
    run({ sim }, [record]) {
      const fields = createRecord(sim, 'VBD', record)
      return createVbd(sim, fields)
    },
  })
  table.set('VBD.destroy', { params: [self('VBD')], run: ({ sim }, [ref]) => destroyVbd(sim, String(ref)) })
  table.set('VBD.plug', {
    params: [self('VBD')],
    run({ sim }, [ref]) {
      const vbd = sim.db.require('VBD', ref)
      const owner = sim.db.require('VM', vbd.VM)
      if (owner.power_state !== 'Running') {
        throw new XapiFailure(
          'VM_BAD_POWER_STATE',
          String(vbd.VM),
          'running',
          String(owner.power_state).toLowerCase(),
        )
      }
      if (vbd.currently_attached) throw new XapiFailure('DEVICE_ALREADY_ATTACHED', String(ref))
      sim.db.update('VBD', String(ref), { currently_attached: true })
    },
  })
  table.set('VBD.unplug', {
    params: [self('VBD')],
    run({ sim }, [ref]) {
      const vbd = sim.db.require('VBD', ref)
      if (!vbd.currently_attached) throw new XapiFailure('DEVICE_ALREADY_DETACHED', String(ref))
      sim.db.update('VBD', String(ref), { currently_attached: false })
    },
  })

  table.set('VIF.create', {
    params: [{ name: 'args', type: 'record' }],
    run({ sim }, [record]) {
      const fields = createRecord(sim, 'VIF', record)
      return createVif(sim, fields)
    },
  })
  table.set('VIF.destroy', { params: [self('VIF')], run: ({ sim }, [ref]) => destroyVif(sim, String(ref)) })

  table.set('SR.scan', { params: [{ name: 'sr', type: 'ref:SR' }], run: () => undefined })
}

export function registerObjects(table: MethodTable): void {
  registerPower(table)
  registerHa(table)
  registerVtpms(table)
  registerVmCopies(table)
  registerVdis(table)
  registerVdiCopies(table)
  registerDevices(table)
}
