/**
 * One namespace path of the netns dialer: its helper (at most one at a time), restarts
 * with backoff, the idle stop, and the periodic check that the path still names the
 * same namespace (a deleted or replaced namespace retires the slot).
 *
 * @module
 */
import { Backoff } from '../shared/backoff.js'
import type { BackoffOptions } from '../shared/backoff.js'
import type { AppError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import { HelperGoneError, HelperProcess } from './helper-process.js'
import type { HelperSocket, HelperSpawnSpec, NetnsDialerStats } from './helper-process.js'
import { netnsError, readIdentity, sameIdentity } from './netns-handle.js'
import type { NsIdentity } from './netns-handle.js'

/** A helper that lived this long before dying restarts from the initial backoff delay. */
const STABLE_UPTIME_MS = 10_000

/** One live helper, as `NetnsDialer.helpers()` reports it. */
export interface NetnsHelperInfo {
  /** The namespace path it serves. */
  path: string
  /** Its process id (the helper node process; nsenter execs it). */
  pid: number | undefined
  state: 'starting' | 'ready' | 'waiting-restart'
  /** Pods ("namespace/pod") that dialled through it. */
  pods: string[]
}

/** Cancellation state of one dial, shared by its steps. */
export interface DialControl {
  cancelled: boolean
  stage: 'resolve' | 'start' | 'connect'
  /** Set while a request is in flight: forgets it so a late socket is closed. */
  onCancel: (() => void) | undefined
}

/** What the slot needs from its dialer. */
export interface SlotContext {
  spec: HelperSpawnSpec
  log: Logger
  stats: NetnsDialerStats
  backoff: BackoffOptions
  idleTimeoutMs: number
  checkIntervalMs: number
  /** Removes the slot from the dialer (it is retired). */
  retire: (slot: NamespaceSlot, reason: AppError) => void
}

const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms).unref())

/**
 * One namespace path: its helper (at most one at a time), restarts with backoff,
 * idle stop and the periodic check that the path still names the same namespace.
 */
export class NamespaceSlot {
  readonly path: string
  readonly identity: NsIdentity
  readonly pods = new Set<string>()
  retired = false

  readonly #ctx: SlotContext
  readonly #backoff: Backoff
  #helper: HelperProcess | undefined
  #nextStartAt = 0
  #lastStartError: AppError | undefined
  #inflight = 0
  #restartTimer: NodeJS.Timeout | undefined
  #idleTimer: NodeJS.Timeout | undefined
  #checkTimer: NodeJS.Timeout
  #retiredError: AppError | undefined

  constructor(path: string, identity: NsIdentity, ctx: SlotContext) {
    this.path = path
    this.identity = identity
    this.#ctx = ctx
    this.#backoff = new Backoff(ctx.backoff)
    this.#checkTimer = setInterval(() => void this.check(), ctx.checkIntervalMs).unref()
  }

  info(): NetnsHelperInfo {
    const h = this.#helper
    return {
      path: this.path,
      pid: h?.pid,
      state: h === undefined ? 'waiting-restart' : h.isReady ? 'ready' : 'starting',
      pods: [...this.pods].sort(),
    }
  }

  /** Retires the slot if its path is gone or now names another namespace. */
  async check(): Promise<void> {
    if (this.retired) return
    let id: NsIdentity
    try {
      id = await readIdentity(this.path)
    } catch (err) {
      this.#ctx.retire(this, err as AppError)
      return
    }
    if (!sameIdentity(id, this.identity)) {
      this.#ctx.retire(this, netnsError(this.path, `the namespace was deleted or replaced`))
    }
  }

  /** Connects through the helper; retries once on a restarted helper if it died meanwhile. */
  async dial(
    port: number,
    podIps: readonly string[],
    deadline: number,
    ctl: DialControl,
    protocol: 'tcp' | 'udp' = 'tcp',
  ): Promise<HelperSocket> {
    this.#inflight++
    clearTimeout(this.#idleTimer)
    try {
      for (let attempt = 0; ; attempt++) {
        ctl.stage = 'start'
        const helper = await this.#ensureHelper(deadline, ctl)
        ctl.stage = 'connect'
        const { id, result } = helper.request(port, podIps, deadline - Date.now(), protocol)
        ctl.onCancel = () => helper.cancel(id)
        try {
          return await result
        } catch (err) {
          if (!(err instanceof HelperGoneError)) throw err
          if (attempt === 0 && !ctl.cancelled && !this.retired && Date.now() < deadline) {
            this.#ctx.stats.retries++
            continue
          }
          throw netnsError(this.path, `${err.message}`, { cause: err })
        } finally {
          ctl.onCancel = undefined
        }
      }
    } finally {
      this.#inflight--
      this.#armIdle()
    }
  }

  /** Ends the helper; in-flight dials fail with `reason`. */
  retire(reason: AppError): Promise<void> {
    this.retired = true
    this.#retiredError = reason
    clearInterval(this.#checkTimer)
    clearTimeout(this.#idleTimer)
    clearTimeout(this.#restartTimer)
    const h = this.#helper
    this.#helper = undefined
    return h === undefined ? Promise.resolve() : h.stop(reason)
  }

  async #ensureHelper(deadline: number, ctl: DialControl): Promise<HelperProcess> {
    for (;;) {
      if (this.retired) throw this.#retiredError!
      // The caller has already been answered; this only stops the work.
      if (ctl.cancelled) throw new Error('cancelled')
      const h = this.#helper
      if (h !== undefined) {
        await h.ready
        if (this.retired) throw this.#retiredError!
        if (!h.dead) return h
        continue
      }
      const wait = this.#nextStartAt - Date.now()
      if (wait > 0) {
        // Fail fast rather than time out when the backoff outlasts this dial.
        if (this.#lastStartError !== undefined && Date.now() + wait >= deadline) {
          throw this.#lastStartError
        }
        await sleep(wait)
        continue
      }
      this.#start()
    }
  }

  #start(): void {
    clearTimeout(this.#restartTimer)
    this.#restartTimer = undefined
    const h = new HelperProcess(
      this.path,
      this.identity,
      this.#ctx.spec,
      this.#ctx.log,
      this.#ctx.stats,
    )
    this.#ctx.stats.helperStarts++
    this.#helper = h
    h.ready.then(
      () => {
        this.#lastStartError = undefined
        this.#ctx.log.debug({ netns: this.path, pid: h.pid }, 'netns helper ready')
      },
      (err: AppError) => {
        this.#lastStartError = err
        this.#nextStartAt = Date.now() + this.#backoff.next()
        if (this.#helper === h) this.#helper = undefined
        this.#ctx.log.warn({ netns: this.path, err: err.message }, 'netns helper failed to start')
        // Perhaps the namespace went away: find out now rather than at the next tick.
        void this.check()
      },
    )
    h.onDeath = (expected) => {
      if (this.#helper === h) this.#helper = undefined
      if (expected || this.retired) return
      if (Date.now() - h.startedAt >= STABLE_UPTIME_MS) this.#backoff.reset()
      const delay = this.#backoff.next()
      this.#nextStartAt = Date.now() + delay
      // Restart eagerly so the next dial finds a helper ready, unless the namespace is gone.
      this.#restartTimer = setTimeout(() => {
        void this.check().then(() => {
          if (!this.retired && this.#helper === undefined) this.#start()
        })
      }, delay).unref()
    }
  }

  #armIdle(): void {
    if (this.#inflight > 0 || this.retired || this.#ctx.idleTimeoutMs <= 0) return
    clearTimeout(this.#idleTimer)
    this.#idleTimer = setTimeout(() => {
      if (this.#inflight > 0 || this.retired) return
      this.#ctx.log.debug({ netns: this.path }, 'netns helper idle; stopping it')
      this.#ctx.retire(this, netnsError(this.path, 'the helper was stopped (idle)'))
    }, this.#ctx.idleTimeoutMs).unref()
  }
}
