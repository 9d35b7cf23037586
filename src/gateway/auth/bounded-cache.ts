/**
 * Small bounded structures for the identity sources and the RBAC authorizer, which ask a
 * remote service on behalf of clients that have not proven anything yet:
 *
 * - {@link TtlCache}: at most `maxEntries` answers, each until its own deadline, the
 *   least recently used dropped first; keys are SHA-256 digests when they are secrets
 *   (tokens are never kept in memory as keys, see {@link secretKey}).
 * - {@link ReviewLimiter}: at most `maxInFlight` questions at once and a token bucket of
 *   `perSecond` (with a burst); identical questions asked while one is in flight share it.
 *
 * @module
 */
import { createHash } from 'node:crypto'
import { appError } from '../../shared/errors.js'

/** The cache key for a secret: its SHA-256, so that the secret itself is not held. */
export function secretKey(secret: string): string {
  return createHash('sha256').update(secret).digest('base64url')
}

/** A map bounded in size, each entry until its own deadline. */
export class TtlCache<V> {
  readonly #max: number
  readonly #now: () => number
  readonly #entries = new Map<string, { value: V; until: number }>()

  constructor(maxEntries: number, now: () => number = Date.now) {
    this.#max = maxEntries
    this.#now = now
  }

  get(key: string): V | undefined {
    const hit = this.#entries.get(key)
    if (hit === undefined) return undefined
    if (this.#now() >= hit.until) {
      this.#entries.delete(key)
      return undefined
    }
    // Most recently used last.
    this.#entries.delete(key)
    this.#entries.set(key, hit)
    return hit.value
  }

  set(key: string, value: V, ttlMs: number): void {
    if (ttlMs <= 0 || this.#max <= 0) return
    this.#entries.delete(key)
    while (this.#entries.size >= this.#max) {
      const oldest = this.#entries.keys().next().value
      if (oldest === undefined) break
      this.#entries.delete(oldest)
    }
    this.#entries.set(key, { value, until: this.#now() + ttlMs })
  }

  get size(): number {
    return this.#entries.size
  }

  clear(): void {
    this.#entries.clear()
  }
}

/** Options of {@link ReviewLimiter}. */
export interface ReviewLimits {
  /** Questions in flight at once. */
  maxInFlight: number
  /** Questions per second, sustained. */
  perSecond: number
  /** Questions that may come at once after a quiet period. */
  burst: number
}

/**
 * Bounds the questions asked of a remote reviewer. Over the bounds, a question is refused
 * at once with `PFG_ERR_AUTH_UNAVAILABLE` (fail closed) rather than queued: an unbounded
 * queue in front of an unauthenticated caller is the thing this prevents.
 */
export class ReviewLimiter<T> {
  readonly #limits: ReviewLimits
  readonly #now: () => number
  readonly #what: string
  readonly #inflight = new Map<string, Promise<T>>()
  #tokens: number
  #refilledAt: number

  constructor(what: string, limits: ReviewLimits, now: () => number = Date.now) {
    this.#what = what
    this.#limits = limits
    this.#now = now
    this.#tokens = limits.burst
    this.#refilledAt = now()
  }

  /** Runs `ask` for `key`, or joins the run already in flight for it. */
  run(key: string, ask: () => Promise<T>): Promise<T> {
    const joined = this.#inflight.get(key)
    if (joined !== undefined) return joined
    if (this.#inflight.size >= this.#limits.maxInFlight) {
      return Promise.reject(
        appError(
          'PFG_ERR_AUTH_UNAVAILABLE',
          `too many ${this.#what} in flight (${this.#limits.maxInFlight})`,
        ),
      )
    }
    const now = this.#now()
    this.#tokens = Math.min(
      this.#limits.burst,
      this.#tokens + ((now - this.#refilledAt) / 1000) * this.#limits.perSecond,
    )
    this.#refilledAt = now
    if (this.#tokens < 1) {
      return Promise.reject(
        appError(
          'PFG_ERR_AUTH_UNAVAILABLE',
          `too many ${this.#what} (over ${this.#limits.perSecond} per second)`,
        ),
      )
    }
    this.#tokens -= 1
    const p = ask().finally(() => this.#inflight.delete(key))
    this.#inflight.set(key, p)
    return p
  }

  get inFlight(): number {
    return this.#inflight.size
  }
}
