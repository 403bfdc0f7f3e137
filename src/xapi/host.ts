// The pool as dpxen talks to it: one object, made by connect(), with three verbs. `call` is an
// XML-RPC call to the master (following a master that moved); `download` and `upload` are
// streamed transfers, each under its own task, following redirects to the member that holds
// the storage, with stallTimeout. Every task dpxen makes (those two, and `callAsync`) is made,
// waited for, cancelled and destroyed in one place: `#underTask`. Every socket comes from one
// trust policy (connection.ts). The engines never build URLs, agents or tasks themselves.
import type { Ms } from '../core/format.js'
import { DpxenError, XapiError, messageOf } from '../core/errors.js'
import type { Intake } from '../core/intake.js'
import { anySignal } from '../core/signals.js'
import type { Dispatcher } from './undici.js'
import type { PoolHost, Trust } from './connection.js'
import { putFile, type UploadAgents } from './put.js'
import { rawGet } from './raw-get.js'
import type { XapiSession } from './session.js'
import { assertTaskSucceeded, waitTask, type TaskOutcome } from './tasks.js'

/** How long a download waits for its task to settle once the body ended. */
const TASK_SETTLE_MS = 30_000
/** How long a cancelled upload's task is given to undo what it imported. */
const UPLOAD_CANCEL_WAIT_MS = 10_000

export interface Transfer {
  /** What the transfer is of, in the task's name and in messages (a VM's name, a disk). */
  label: string
  signal: AbortSignal
}

export interface DownloadOptions<R> extends Transfer {
  /** Opens the intake once the host answered 200; `wake` resumes reading after push() said stop. */
  open(wake: () => void): Promise<Intake<R>>
  onBytes?(bytes: number): void
}

export interface UploadOptions extends Transfer {
  file: string
  /** Told the task before anything is sent (the restore journal records it). */
  onTask?(task: string): Promise<void>
  /** Told the task's result before the task goes (after that, only the caller's record names what it made). */
  onResult?(result: string): Promise<void>
}

export interface CallAsyncOptions {
  signal?: AbortSignal
  /** Cancel the task when `signal` fires (a clean shutdown); otherwise it is left to finish (a start, a copy). */
  cancel?: boolean
}

interface Parts {
  session: XapiSession
  trust: Trust
  dispatcher: Dispatcher
  agents: UploadAgents
  /** How long without a byte before a transfer counts as stalled (stallTimeout). */
  stallTimeout: Ms
  /** The waits before each retry of a destroy xapi refuses as busy (VDI_IN_USE); tests shorten them. */
  retryDelays?: readonly Ms[]
}

/** Retries of a busy destroy: half a second, doubling, about half a minute in all. */
const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000, 15000] as Ms[]

export class Host {
  readonly #session: XapiSession
  readonly #trust: Trust
  readonly #dispatcher: Dispatcher
  readonly #agents: UploadAgents
  readonly #idleMs: Ms
  /** The waits before each retry of a destroy xapi refuses as busy (VDI_IN_USE). */
  readonly retryDelays: readonly Ms[]

  constructor(parts: Parts) {
    this.#session = parts.session
    this.#trust = parts.trust
    this.#dispatcher = parts.dispatcher
    this.#agents = parts.agents
    this.#idleMs = parts.stallTimeout
    this.retryDelays = parts.retryDelays ?? RETRY_DELAYS
  }

  /** The master's base URL (after it moved, the new one). */
  get url(): string {
    return this.#session.url
  }

  /** The pool's hosts with their recorded certificates, as learnt at login. */
  get hosts(): PoolHost[] {
    return this.#trust.hosts
  }

  /** An XML-RPC call with the session (SESSION_INVALID and HOST_IS_SLAVE are followed). */
  call<T = unknown>(method: string, ...args: unknown[]): Promise<T> {
    return this.#session.call<T>(method, ...args)
  }

  /** Async.<method>: waits for its task and returns the result (XapiError when it failed). */
  callAsync(method: string, args: unknown[], options: CallAsyncOptions = {}): Promise<string> {
    return this.#underTask(
      () => this.call<string>(`Async.${method}`, ...args),
      { cancelWaitMs: options.cancel ? 0 : undefined },
      async (task, settled) => {
        const outcome = await waitTask(this.#session, task, options.signal)
        settled()
        return assertTaskSucceeded(outcome, method)
      },
    )
  }

  /**
   * GET `path` under a task into the intake, then waits for the task: resolves with the intake's
   * result only once every byte was taken and checked and the host's task succeeded.
   */
  download<R>(path: string, query: Record<string, string>, options: DownloadOptions<R>): Promise<R> {
    return this.#underTask(
      () => this.call<string>('task.create', `dpxen export ${options.label}`, 'Data Protector backup'),
      { cancelWaitMs: 0 },
      async (task, settled) => {
        const res = await rawGet(this.#trust, this.#resource(path, { ...query, task_id: task }), {
          signal: options.signal,
          idleMs: this.#idleMs,
        }).catch(async (error: unknown) => {
          throw await this.#noAnswer(task, options, error)
        })
        if (res.status !== 200) {
          await res.text().catch(() => '')
          throw await this.#taskErrorOr(task, `the host answered HTTP ${res.status} to the export`)
        }
        const intake = await options.open(() => res.resume())
        let result: R
        try {
          await res.pump((piece) => {
            const more = intake.push(piece)
            options.onBytes?.(intake.bytes)
            return more
          })
          result = await intake.finish()
        } catch (error) {
          res.destroy()
          await intake.abort()
          throw await this.#streamFailure(task, options.signal, intake.bytes, error)
        }
        const settle = anySignal(options.signal, AbortSignal.timeout(TASK_SETTLE_MS))
        const outcome = await waitTask(this.#session, task, settle.signal).finally(settle.dispose)
        settled()
        if (outcome.status !== 'success')
          throw new DpxenError(
            'EXPORT_FAILED',
            `the host reports the export failed: ${outcome.errorInfo.join(' ') || outcome.status}`,
          )
        return result
      },
    )
  }

  /**
   * PUT the file to `path` under a task: the body is sent once, to the host that takes it (a
   * 302 is learnt from the head alone), then the task's result is returned. On failure or abort
   * the task is cancelled, which makes the host remove what it imported.
   */
  upload(path: string, query: Record<string, string>, options: UploadOptions): Promise<string> {
    return this.#underTask(
      () => this.call<string>('task.create', `dpxen import ${options.label}`, 'Data Protector restore'),
      { cancelWaitMs: UPLOAD_CANCEL_WAIT_MS },
      async (task, settled) => {
        await options.onTask?.(task)
        await putFile(this.#trust, this.#agents, this.#resource(path, { task_id: task, ...query }), {
          file: options.file,
          signal: options.signal,
          idleMs: this.#idleMs,
          outcome: () => waitTask(this.#session, task, AbortSignal.timeout(5000)).catch(() => undefined),
        })
        const outcome = await waitTask(this.#session, task, options.signal)
        settled()
        if (outcome.status !== 'success')
          throw new XapiError(outcome.errorInfo.length ? outcome.errorInfo : [outcome.status], 'import')
        await options.onResult?.(outcome.result)
        return outcome.result
      },
    )
  }

  /**
   * A task another run left (the restore journal names it): cancelled if still pending (the
   * host then removes what it imported), and its outcome once settled; undefined if it is not.
   */
  async settleTask(task: string, waitMs = UPLOAD_CANCEL_WAIT_MS): Promise<TaskOutcome | undefined> {
    if ((await this.call<string>('task.get_status', task)) === 'pending')
      await this.call('task.cancel', task).catch(() => undefined)
    return waitTask(this.#session, task, AbortSignal.timeout(waitMs)).catch(() => undefined)
  }

  /** Logs out and closes every socket; never throws. */
  async close(): Promise<void> {
    await this.#session.logout()
    await this.#dispatcher.close().catch(() => undefined)
    this.#agents.http.destroy()
    this.#agents.https.destroy()
  }

  /**
   * The one place a task lives: made by `create`, given to `work`, which calls `settled` once
   * the task is no longer pending; when `work` ends before that (a failure, an abort), the task
   * is cancelled (when `cancelWaitMs` is set) and given that long to stop; destroyed always.
   */
  async #underTask<T>(
    create: () => Promise<string>,
    policy: { cancelWaitMs: number | undefined },
    work: (task: string, settled: () => void) => Promise<T>,
  ): Promise<T> {
    const task = await create()
    let settled = false
    try {
      return await work(task, () => (settled = true))
    } finally {
      if (!settled && policy.cancelWaitMs !== undefined) {
        await this.call('task.cancel', task).catch(() => undefined)
        if (policy.cancelWaitMs > 0)
          await waitTask(this.#session, task, AbortSignal.timeout(policy.cancelWaitMs)).catch(() => undefined)
      }
      await this.call('task.destroy', task).catch(() => undefined)
    }
  }

  #resource(path: string, query: Record<string, string>): string {
    const url = new URL(path, this.#session.url)
    for (const [key, value] of Object.entries({ session_id: this.#session.ref, ...query }))
      url.searchParams.set(key, value)
    return url.toString()
  }

  /** The task's error_info, if it failed within `ms`. */
  async #taskFailure(task: string, ms: number): Promise<string[] | undefined> {
    try {
      const outcome = await waitTask(this.#session, task, AbortSignal.timeout(ms))
      if (outcome.status === 'success') return undefined
      return outcome.errorInfo.length ? outcome.errorInfo : [outcome.status]
    } catch {
      return undefined
    }
  }

  /**
   * A transfer that got no answer: xapi fails the task and closes without a word when no host
   * can see the VM's storage (export.ml), so the task, not the connection, says why.
   */
  async #noAnswer(task: string, options: Transfer, error: unknown): Promise<unknown> {
    if (options.signal.aborted) return error
    const failure = await this.#taskFailure(task, 5000)
    if (!failure) return error
    if (failure[0] === 'NO_HOSTS_AVAILABLE')
      return new DpxenError(
        'EXPORT_FAILED',
        `no host of the pool can reach the storage of ${options.label} (NO_HOSTS_AVAILABLE): the host holding its local SR may be down or disabled; bring it back and run the backup again`,
      )
    return new XapiError(failure, 'export')
  }

  async #taskErrorOr(task: string, fallback: string): Promise<DpxenError> {
    const failure = await this.#taskFailure(task, 5000)
    if (failure) return new XapiError(failure, 'export')
    return new DpxenError('EXPORT_FAILED', fallback)
  }

  /** Why a stream ended early, as one error: the abort, the host's task, or the local failure. */
  async #streamFailure(
    task: string,
    signal: AbortSignal,
    received: number,
    error: unknown,
  ): Promise<DpxenError> {
    if (signal.aborted) return new DpxenError('ABORTED', 'interrupted', { cause: error })
    if (error instanceof DpxenError && error.code === 'XVA_INVALID') {
      // A cut-off stream usually means the host failed; its task says why.
      const failure = await this.#taskFailure(task, 2000)
      return new DpxenError(
        'EXPORT_FAILED',
        failure
          ? `the export stopped after ${received} bytes: ${failure.join(' ')}`
          : `the export${error.message.startsWith('not a valid VHD') ? '' : 'ed XVA'} is invalid: ${error.message}`,
        { cause: hostCause(failure, error) },
      )
    }
    // A local failure (the disk) is the cause, whatever the host then says about the closed
    // connection; otherwise the host's task says why the stream ended.
    const code = error instanceof DpxenError ? error.code : undefined
    const failure = code === 'LOCAL_IO' ? undefined : await this.#taskFailure(task, 2000)
    return new DpxenError(
      code === 'LOCAL_IO' || code === 'TRANSFER_STALLED' ? code : 'EXPORT_FAILED',
      `the export stopped after ${received} bytes: ${failure?.join(' ') ?? messageOf(error)}`,
      { cause: hostCause(failure, error) },
    )
  }
}

/** The host task's failure as the cause (callers read its code), the local error behind it. */
function hostCause(failure: string[] | undefined, error: unknown): unknown {
  if (!failure) return error
  const xapi = new XapiError(failure, 'export')
  xapi.cause = error
  return xapi
}
