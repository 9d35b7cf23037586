/**
 * Exponential backoff with full jitter, for reconnect loops (agent sessions,
 * the CLI's gateway connection, watches, webhook retries).
 *
 * @module
 */

/** Backoff parameters. */
export interface BackoffOptions {
  /** First delay, ms. */
  initialMs: number
  /** Largest delay, ms. */
  maxMs: number
  /** Multiplier per failure (default 2). */
  factor?: number
  /** Random source (tests inject one). */
  random?: () => number
}

/** A backoff sequence: `next()` gives the next delay, `reset()` starts over after a success. */
export class Backoff {
  #attempt = 0
  readonly #opts: Required<BackoffOptions>

  constructor(options: BackoffOptions) {
    this.#opts = { factor: 2, random: Math.random, ...options }
  }

  /** Failures since the last reset. */
  get attempt(): number {
    return this.#attempt
  }

  /** The delay before the next attempt: `initial·factor^n`, capped, with jitter in [50%, 100%]. */
  next(): number {
    const { initialMs, maxMs, factor, random } = this.#opts
    const base = Math.min(maxMs, initialMs * factor ** this.#attempt)
    this.#attempt++
    return Math.round(base / 2 + (random() * base) / 2)
  }

  reset(): void {
    this.#attempt = 0
  }
}
