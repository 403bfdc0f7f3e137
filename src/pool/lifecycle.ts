// Stopping and starting VMs, for the offline backup and for both restores. A clean shutdown
// waits at most shutdownTimeout and gives up at once on SIGTERM (the task is cancelled and the
// VM's state decides what is owed); starting again is bounded by CLEANUP_TIMEOUT_MS and runs
// even after SIGTERM, because a VM dpxen stopped must run again.
import { performance } from 'node:perf_hooks'
import { DpxenError, XapiError, isXapiError, messageOf } from '../core/errors.js'
import type { Config } from '../config/schema.js'
import { formatBytes, shownSeconds, type Ms } from '../core/format.js'
import type { Logger } from '../core/log.js'
import { anySignal } from '../core/signals.js'
import type { Host } from '../xapi/host.js'
import type { PoolContext } from './context.js'
import { exists } from './disks.js'

/** How long clean-up may take after an abort (starting a VM again, destroying a snapshot). */
export const CLEANUP_TIMEOUT_MS = 120_000

/** The VM's power state, or 'unknown' when it cannot be read. */
export async function powerState(host: Host, vm: string): Promise<string> {
  return host.call<string>('VM.get_power_state', vm).catch(() => 'unknown')
}

/** The VM's power state when it is Running or Halted; a paused or suspended VM fails with what to do. */
export async function runningOrHalted(
  host: Host,
  vm: string,
  name: string,
  before: string,
): Promise<'Running' | 'Halted'> {
  const state = await host.call<string>('VM.get_power_state', vm)
  if (state === 'Running' || state === 'Halted') return state
  throw new DpxenError(
    'VM_FAILED',
    `${name} is ${state.toLowerCase()}; resume it or shut it down before ${before}`,
  )
}

/** How a VM is stopped, as the configuration says (shutdownTimeout, forceShutdown). */
export function stopOptions(config: Pick<Config, 'shutdownTimeout' | 'forceShutdown'>): StopOptions {
  return { timeout: config.shutdownTimeout, force: config.forceShutdown }
}

export interface StopOptions {
  timeout: Ms
  /** After a clean shutdown that timed out: force the VM off (hard shutdown) instead of failing. */
  force: boolean
}

/**
 * Clean shutdown within `timeout`; on abort, or a timeout without `force`, the task is
 * cancelled and the VM left as it is. With `force` a timeout is followed by a hard shutdown.
 */
export async function stopVm(ctx: PoolContext, vm: string, name: string, stop: StopOptions): Promise<void> {
  const { timeout } = stop
  ctx.onStatus?.('shutting down')
  const limit = AbortSignal.timeout(timeout)
  const either = anySignal(limit, ctx.signal)
  try {
    await ctx.host.callAsync('VM.clean_shutdown', [vm], { signal: either.signal, cancel: true })
  } catch (error) {
    if (error instanceof XapiError)
      throw new DpxenError(
        'VM_FAILED',
        `${name} could not be shut down: ${[error.xapiCode, ...error.params].join(' ')}`,
      )
    if (limit.aborted && stop.force && !ctx.signal.aborted) return await forceOff(ctx, vm, name, timeout)
    if (limit.aborted) {
      throw new DpxenError(
        'VM_FAILED',
        `${name} did not shut down within ${shownSeconds(timeout)} (is the guest responding? raise shutdownTimeout)`,
        { cause: error },
      )
    }
    throw error
  } finally {
    either.dispose()
  }
}

/** The hard shutdown after a clean one timed out (forceShutdown), said in the session. */
async function forceOff(ctx: PoolContext, vm: string, name: string, timeout: Ms): Promise<void> {
  ctx.log.info(
    `dpxen: ${name}: did not shut down within ${shownSeconds(timeout)}; forcing it off (forceShutdown)`,
  )
  ctx.onStatus?.('forcing off')
  if ((await powerState(ctx.host, vm)) === 'Halted') return
  try {
    await ctx.host.callAsync('VM.hard_shutdown', [vm], { signal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) })
  } catch (error) {
    throw new DpxenError('VM_FAILED', `${name} could not be forced off: ${messageOf(error)}`, {
      cause: error,
    })
  }
}

/**
 * Starts the VM; a failure is the VM's failure, with `why` saying what it means, and, when no
 * host could take it, each host's reason.
 */
export async function startVm(
  ctx: PoolContext,
  vm: string,
  name: string,
  why = 'could not be started',
): Promise<void> {
  try {
    await ctx.host.callAsync('VM.start', [vm, false, false], {
      signal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS),
    })
  } catch (error) {
    const hosts = isXapiError(error, 'NO_HOSTS_AVAILABLE') ? ` (${await noHostReasons(ctx.host, vm)})` : ''
    throw new DpxenError('VM_FAILED', `${name} ${why}: ${messageOf(error)}${hosts} (start it by hand)`, {
      cause: error,
    })
  }
}

/**
 * Why no host of the pool can start the VM, host by host, as VM.assert_can_boot_here refuses
 * it: memory needed and free, an SR the host cannot reach, disabled, not live. What xapi's
 * NO_HOSTS_AVAILABLE, which has no parameters, does not say.
 */
export async function noHostReasons(host: Host, vm: string, what = 'the VM'): Promise<string> {
  const why: string[] = []
  for (const [ref, rec] of Object.entries(
    await host.call<Record<string, Record<string, unknown>>>('host.get_all_records'),
  )) {
    const name = String(rec.name_label)
    try {
      await host.call('VM.assert_can_boot_here', vm, ref)
      why.push(`${name}: can now`)
    } catch (refusal) {
      why.push(`${name}: ${await refusalInWords(host, refusal, what)}`)
    }
  }
  return why.join('; ')
}

/** Why a host cannot run a VM, from VM.assert_can_boot_here's error. */
async function refusalInWords(host: Host, error: unknown, what: string): Promise<string> {
  if (!(error instanceof XapiError)) return messageOf(error)
  const [a, b] = error.params
  switch (error.xapiCode) {
    case 'HOST_NOT_ENOUGH_FREE_MEMORY':
      return `not enough free memory (${what} needs ${formatBytes(Number(a))}, it has ${formatBytes(Number(b))})`
    case 'VM_REQUIRES_SR': {
      const name = await host.call<string>('SR.get_name_label', b).catch(() => b)
      return `cannot reach SR "${name}" where ${what}'s disks are (a host's local storage is reachable from that host only)`
    }
    case 'HOST_DISABLED':
      return 'disabled (maintenance mode)'
    case 'HOST_NOT_LIVE':
      return 'not live (down, or not answering the pool)'
    default:
      return [error.xapiCode, ...error.params].join(' ')
  }
}

/**
 * Runs `work` with the VM halted. A running VM is stopped cleanly first (a line says so) and,
 * whatever happens, started again afterwards if it is halted then — a shutdown that timed out
 * or was cancelled may still have stopped it — unless `startAgain()` says it must stay halted.
 */
export async function whileHalted<T>(
  ctx: PoolContext,
  vm: { ref: string; name: string; running: boolean },
  options: StopOptions & { why: string; startAgain?: () => boolean },
  work: () => Promise<T>,
): Promise<T> {
  if (!vm.running) return work()
  await assertCanStartAgain(ctx, vm)
  const started = performance.now()
  let stopped = false
  let failure: unknown
  try {
    await stopVm(ctx, vm.ref, vm.name, options)
    stopped = true
    ctx.log.info(`dpxen: ${vm.name}: shut down in ${((performance.now() - started) / 1000).toFixed(1)} s`)
    return await work()
  } catch (error) {
    failure = error
    throw error
  } finally {
    if (options.startAgain?.() ?? true) await startAgain(ctx, vm, { stopped, why: options.why, failure })
  }
}

const NULL_REF = 'OpaqueRef:NULL'

/**
 * Before a running VM is stopped: whether xapi could start it again. Its own host, if enabled,
 * can (the memory the VM frees is its own); else another enabled host among those xapi says
 * could run it (VM.get_possible_hosts: it counts the VM's own host even when disabled, and
 * weighs memory for a second copy, so only the other hosts are asked). A VM that could not
 * start again is not stopped: a backup or restore must never leave it down.
 */
async function assertCanStartAgain(ctx: PoolContext, vm: { ref: string; name: string }): Promise<void> {
  const { host } = ctx
  const resident = await host.call<string>('VM.get_resident_on', vm.ref)
  const here = resident !== NULL_REF && (await exists(host, 'host', resident))
  if (here && (await host.call<boolean>('host.get_enabled', resident))) return
  for (const candidate of await host.call<string[]>('VM.get_possible_hosts', vm.ref))
    if (candidate !== resident && (await host.call<boolean>('host.get_enabled', candidate))) return
  const where = here
    ? `its host ${await host.call<string>('host.get_name_label', resident)} is disabled (maintenance mode)`
    : 'its host is unknown'
  throw new DpxenError(
    'VM_FAILED',
    `${vm.name} was left running, untouched: once stopped it could not start again (${where}, and no other host can run it); enable the host, then run this again`,
  )
}

/**
 * After the work: starts the VM if it is halted; one that someone else started meanwhile is
 * left as it is, and said so. A start that fails never hides why the work failed: the line
 * gives both.
 */
async function startAgain(
  ctx: PoolContext,
  vm: { ref: string; name: string },
  after: { stopped: boolean; why: string; failure: unknown },
): Promise<void> {
  // 'unknown': the host did not say; a VM dpxen stopped is then started (or tried) all the same.
  const state = await powerState(ctx.host, vm.ref)
  if (state !== 'Halted' && !(state === 'unknown' && after.stopped)) {
    if (after.stopped && state !== 'unknown')
      ctx.log.info(
        `dpxen: ${vm.name}: was started by someone else while it was stopped for dpxen (now ${state}): left as it is`,
      )
    return
  }
  ctx.onStatus?.('starting again')
  try {
    await startVm(ctx, vm.ref, vm.name, after.why)
  } catch (error) {
    if (after.failure === undefined) throw error
    throw new DpxenError('VM_FAILED', `${messageOf(after.failure)}; and ${messageOf(error)}`, {
      cause: error,
    })
  }
  ctx.log.info(`dpxen: ${vm.name}: running again`)
}

/** Starts the VM if it still exists and is halted (settling an interrupted run). */
export async function startIfHalted(host: Host, vm: string): Promise<boolean> {
  if (!(await exists(host, 'VM', vm))) return false
  if ((await host.call<string>('VM.get_power_state', vm)) !== 'Halted') return false
  await host.callAsync('VM.start', [vm, false, false], { signal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) })
  return true
}

/** Starts the VMs an interrupted run stopped and never started again (by uuid); one line each. */
export async function restartStopped(
  host: Host,
  log: Logger,
  stopped: { uuid: string; name: string }[],
): Promise<number> {
  let started = 0
  for (const vm of stopped) {
    try {
      const ref = await host.call<string>('VM.get_by_uuid', vm.uuid)
      if (await startIfHalted(host, ref)) {
        log.info(`dpxen: started ${vm.name} again, which an interrupted backup had stopped`)
        started++
      }
    } catch (error) {
      log.info(
        `dpxen: ${vm.name}: FAILED to start it again after an interrupted backup: ${messageOf(error)} (start it by hand)`,
      )
    }
  }
  return started
}
