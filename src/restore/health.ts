// A health check of one backup: proof that the VM in it boots. The backup is restored as a copy
// (new uuid, new MACs) and tagged from the moment it exists (restore/copy.ts, rebuild.ts: the
// restore journal covers it until the tags are on, OC_HEALTH_CHECK and the owner after); its
// network cards are removed, so that a copy of a production VM never comes up on the production
// network with its addresses, and its HA protection with them; it is started on a host that can run it, and watched until the
// guest proves itself: with its xenstore key (a guest script that answers
// vm-data/dpxen-health-check) its verdict, else the guest agent's report (VM_guest_metrics with
// a PV drivers version). Whatever happens, on SIGTERM too, the copy and its disks are destroyed.
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { DpxenError, isXapiError, messageOf } from '../core/errors.js'
import type { Ms } from '../core/format.js'
import { throwIfAborted } from '../core/signals.js'
import { noHostReasons } from '../pool/lifecycle.js'
import { removeHealthCopy } from '../pool/snapshots.js'
import { OC_BACKUP_RUN, OC_CREATED, OC_HEALTH_CHECK, OC_OWNER } from '../pool/tags.js'
import { ownerTag } from '../staging/owner.js'
import type { RestoreContext } from './common.js'

/** The xenstore key a guest's health-check script answers, and where it says why it failed. */
export const HEALTH_KEY = 'vm-data/dpxen-health-check'
export const HEALTH_ERROR_KEY = 'vm-data/dpxen-health-check-error'

const NULL_REF = 'OpaqueRef:NULL'
const GiB = 1024 ** 3
/** How often the copy is looked at while its guest boots. */
const POLL_MS = 500

type Rec = Record<string, unknown>

/** What is checked: a backup, and how to make a tagged copy of it. */
export interface HealthSubject {
  vmName: string
  vmUuid: string
  /** The virtual size of its disks: the wait grows with it (healthCheckPerGiB). */
  diskBytes: number
  /** Makes the copy, with these other_config keys on it before it is let go; its ref. */
  makeCopy(ctx: RestoreContext, tags: Record<string, string>): Promise<string>
}

export interface HealthResult {
  passed: boolean
  /** What was seen, in words: "booted in 41 s, guest agent 7.1 answered", or why it failed. */
  detail: string
}

/** A check that failed, and why in words (quoted on the troubleshooting page, as a reason). */
export function failedBecause(detail: string): HealthResult {
  return { passed: false, detail }
}

/** How long the guest has, from the copy's start: healthCheckTimeout plus healthCheckPerGiB a GiB. */
export function healthWait(config: RestoreContext['config'], diskBytes: number): Ms {
  return (config.healthCheckTimeout + Math.ceil(config.healthCheckPerGiB * (diskBytes / GiB))) as Ms
}

/**
 * Restores the subject as a copy, starts it without network and waits for its guest; the copy
 * is destroyed whatever happens. A failure of the check is a result; an abort is thrown.
 */
export async function checkBackup(
  ctx: RestoreContext,
  subject: HealthSubject,
  runId: string,
): Promise<HealthResult> {
  const tags = {
    [OC_HEALTH_CHECK]: subject.vmUuid,
    [OC_BACKUP_RUN]: runId,
    [OC_OWNER]: ownerTag(),
    [OC_CREATED]: new Date().toISOString(),
  }
  let vm: string | undefined
  try {
    ctx.onStatus?.('restoring a copy')
    vm = await subject.makeCopy(ctx, tags)
    return await watch(ctx, vm, subject)
  } catch (error) {
    if (ctx.signal.aborted || (error instanceof DpxenError && error.code === 'ABORTED')) throw error
    return failedBecause(messageOf(error))
  } finally {
    if (vm) await removeCopy(ctx, subject, vm)
  }
}

async function removeCopy(ctx: RestoreContext, subject: HealthSubject, vm: string): Promise<void> {
  ctx.onStatus?.('removing the copy')
  try {
    await removeHealthCopy(ctx.host, vm, ctx.log, ctx.signal)
  } catch (error) {
    ctx.log.info(
      `dpxen: ${subject.vmName}: warning: the health check's copy could not be removed: ${messageOf(error)} (the next run, or dpxen recover, removes it)`,
    )
  }
}

/** The copy cut off from the network, started, and watched until its guest answers or time runs out. */
async function watch(ctx: RestoreContext, vm: string, subject: HealthSubject): Promise<HealthResult> {
  for (const vif of await ctx.host.call<string[]>('VM.get_VIFs', vm)) await ctx.host.call('VIF.destroy', vif)
  // A copy of an HA-protected VM is not to be protected: in a pool with HA on, its start would
  // be weighed against the failover plan, and a host failure would restart it.
  if ((await ctx.host.call<string>('VM.get_ha_restart_priority', vm)) !== '')
    await ctx.host.call('VM.set_ha_restart_priority', vm, '')
  const script = HEALTH_KEY in (await ctx.host.call<Record<string, string>>('VM.get_xenstore_data', vm))
  if (script) {
    for (const key of [HEALTH_KEY, HEALTH_ERROR_KEY])
      await ctx.host.call('VM.remove_from_xenstore_data', vm, key)
    await ctx.host.call('VM.add_to_xenstore_data', vm, HEALTH_KEY, 'planned')
  }
  throwIfAborted(ctx.signal)
  ctx.onStatus?.('starting the copy, without network')
  await startCopy(ctx, vm)
  const started = performance.now()
  const limit = healthWait(ctx.config, subject.diskBytes)
  const waitingFor = script ? 'its health-check script' : 'its guest agent'
  for (;;) {
    throwIfAborted(ctx.signal)
    const seconds = Math.round((performance.now() - started) / 1000)
    const seen = await look(ctx, vm, script, seconds)
    if (seen) return seen
    if (performance.now() - started > limit)
      return failedBecause(
        `the guest never answered in ${Math.round(limit / 1000)} s (${script ? `its health-check script did not write ${HEALTH_KEY}` : 'no guest agent report: guest tools not running, or it does not boot from its restored disks'}; healthCheckTimeout gives it longer)`,
      )
    ctx.onStatus?.(`waiting for ${waitingFor} (${seconds} s of ${Math.round(limit / 1000)} s)`)
    await sleep(POLL_MS, undefined, { signal: ctx.signal }).catch(() => undefined)
  }
}

/** What the copy shows now: a verdict, or undefined while its guest is still on its way. */
async function look(
  ctx: RestoreContext,
  vm: string,
  script: boolean,
  seconds: number,
): Promise<HealthResult | undefined> {
  const rec = await ctx.host.call<Rec>('VM.get_record', vm)
  if (rec.power_state !== 'Running')
    return failedBecause(
      `the copy stopped (${String(rec.power_state)}) ${seconds} s after it started: its guest shut down or crashed`,
    )
  if (script) {
    const data = (rec.xenstore_data ?? {}) as Record<string, string>
    if (data[HEALTH_KEY] === 'success')
      return { passed: true, detail: `booted, its health-check script answered success in ${seconds} s` }
    if (data[HEALTH_KEY] === 'failure')
      return failedBecause(
        `its health-check script answered failure after ${seconds} s${data[HEALTH_ERROR_KEY] ? `: ${data[HEALTH_ERROR_KEY]}` : ''}`,
      )
    return undefined
  }
  const metrics = String(rec.guest_metrics ?? NULL_REF)
  if (metrics === NULL_REF) return undefined
  const version = await ctx.host
    .call<Record<string, string>>('VM_guest_metrics.get_PV_drivers_version', metrics)
    .catch(() => ({}) as Record<string, string>)
  if (!version.major) return undefined
  return {
    passed: true,
    detail: `booted in ${seconds} s, guest agent ${version.major}.${version.minor ?? 0} answered`,
  }
}

/** VM.start; NO_HOSTS_AVAILABLE said host by host (pool/lifecycle.ts noHostReasons). */
async function startCopy(ctx: RestoreContext, vm: string): Promise<void> {
  try {
    await ctx.host.callAsync('VM.start', [vm, false, false], { signal: ctx.signal })
  } catch (error) {
    if (!isXapiError(error, 'NO_HOSTS_AVAILABLE')) throw error
    throw new DpxenError(
      'VM_FAILED',
      `NO_HOSTS_AVAILABLE: no host of the pool could start the copy (${await noHostReasons(ctx.host, vm, 'the copy')})`,
      { cause: error },
    )
  }
}
