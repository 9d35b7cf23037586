/**
 * The gateway-wide byte budget (`limits.bufferBudget`): what all relayed streams together
 * may make the gateway hold in its buffers, whatever their readers do.
 *
 * A relayed stream whose reader stalls holds, in each direction, what the sender may
 * still send (the receive window the gateway granted that HTTP/2 stream), what the relay
 * had read when it paused (the source's read buffer: Node keeps taking the peer's bytes,
 * and so reopening its window, until that buffer reaches its high-water mark), what it
 * wrote that is not yet sent (the destination's write buffer) and one chunk in hand. With
 * 4 MiB windows and 256 KiB high-water marks that was 8–11 MiB per stalled stream.
 *
 * Two mechanisms; docs/security.md (Limits) and docs/performance.md have the figures:
 * 1. **Sizing.** The budget is shared out among the live streams: each direction of each
 *    stream gets `budget / (2 × streams)`, and {@link sizesFor} turns that share into a
 *    receive window and a high-water mark that fit it. While streams are few, that is the
 *    full speed (4 MiB windows, 256 KiB marks); as they multiply both shrink, in powers of
 *    two, down to {@link MIN_STREAM_WINDOW} and {@link MIN_HIGH_WATER_MARK}. The window
 *    goes to every authenticated client connection and every agent connection
 *    (`SETTINGS_INITIAL_WINDOW_SIZE`, which applies to their open streams too; a peer that
 *    does not acknowledge within {@link SETTINGS_ACK_TIMEOUT_MS} keeps a larger one and
 *    loses its connection, RFC 9113 §6.5.3); the mark to every live relay.
 * 2. **A backstop.** Windows shrink for the streams to come, but bytes already taken stay:
 *    streams that stalled while windows were large, or past `budget / (2 × the floors)`
 *    streams, can hold more than the budget.
 *    A sweep twice a second measures what the buffers cost: the bytes the relays hold, or the
 *    process's ArrayBuffer memory if more (a chunk Node hands over can keep a whole socket
 *    read buffer alive). Over the budget, the streams that have not moved a byte for
 *    longest are reset (ENHANCE_YOUR_CALM, audited `limit:buffer-budget`) until it fits.
 *
 * @module
 */
import type { Http2Session } from 'node:http2'
import { STREAM_HIGH_WATER_MARK, STREAM_WINDOW } from '../protocol/h2-settings.js'
import type { Logger } from '../shared/log.js'
import type { LiveStream } from './forward/stream-table.js'
import type { GatewayMetrics } from './metrics.js'

/** The smallest per-stream window the budget grants (one HTTP/2 frame). */
export const MIN_STREAM_WINDOW = 16 * 1024
/** The smallest stream high-water mark it sets (one HTTP/2 frame). */
export const MIN_HIGH_WATER_MARK = 16 * 1024
/** One chunk the relay may hold beyond the marks (an HTTP/2 DATA frame's payload). */
const CHUNK = 16 * 1024
/** How long a peer may take to acknowledge a window change before its connection goes. */
export const SETTINGS_ACK_TIMEOUT_MS = 10_000
/** How often the backstop measures the buffers (what can pile up beyond the budget meanwhile). */
const SWEEP_MS = 500
/** A stream is a backstop candidate once it has not moved a byte for this long. */
const STALLED_MS = 1000
/**
 * After a sweep ended streams, how long the next sweeps take what those streams held off
 * ArrayBuffer memory (which still holds their buffers until a collection).
 */
const SETTLE_MS = 2000

/** A stream's receive window and its buffers' high-water mark. */
export interface StreamSizes {
  window: number
  highWaterMark: number
}

function pow2Floor(x: number): number {
  return 2 ** Math.floor(Math.log2(x))
}

/**
 * The sizes for `streams` live relayed streams sharing `budget`: per direction, the
 * window plus a read and a write buffer (the high-water mark each) plus a chunk fit the
 * share, as long as the floors allow: the window takes half of what is left after the
 * chunk, each buffer a quarter, in powers of two, never above the full
 * {@link STREAM_WINDOW} and {@link STREAM_HIGH_WATER_MARK}. Both only shrink as streams
 * multiply.
 */
export function sizesFor(budget: number, streams: number): StreamSizes {
  const share = budget / (2 * Math.max(1, streams)) - CHUNK
  const fit = (part: number, min: number, max: number): number =>
    part <= min ? min : Math.min(max, pow2Floor(part))
  return {
    window: fit(share / 2, MIN_STREAM_WINDOW, STREAM_WINDOW),
    highWaterMark: fit(share / 4, MIN_HIGH_WATER_MARK, STREAM_HIGH_WATER_MARK),
  }
}

/** What {@link BufferBudget} needs. */
export interface BufferBudgetOptions {
  budgetBytes: number
  metrics: GatewayMetrics
  logger: Logger
  now?: () => number
  /** The process's buffer memory (default: `process.memoryUsage().arrayBuffers`). */
  memory?: () => number
}

/** The budget of one gateway. */
export class BufferBudget {
  readonly #o: BufferBudgetOptions
  readonly #now: () => number
  /** Until then, {@link #freed} is taken off ArrayBuffer memory (after a sweep ended streams). */
  #settleUntil = 0
  /** What the streams the last sweeps ended held (freed, perhaps not yet collected). */
  #freed = 0
  readonly #sessions = new Set<Http2Session>()
  /** The live relayed streams. */
  readonly #live = new Set<LiveStream>()
  #sizes: StreamSizes = { window: STREAM_WINDOW, highWaterMark: STREAM_HIGH_WATER_MARK }
  /** The stream count the sizes were computed for. */
  #sizedFor = 1
  #buffered = 0
  readonly #sweeper: NodeJS.Timeout

  constructor(options: BufferBudgetOptions) {
    this.#o = options
    this.#now = options.now ?? Date.now
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_MS)
    this.#sweeper.unref()
    options.metrics.setSources({
      buffers: () => ({ bytes: this.#buffered, window: this.#sizes.window }),
    })
  }

  /** The per-stream receive window and high-water mark now. */
  get sizes(): StreamSizes {
    return this.#sizes
  }

  /** Bytes the relays held at the last sweep. */
  get buffered(): number {
    return this.#buffered
  }

  /**
   * A connection whose per-stream receive window the budget sets (an authenticated client
   * connection, an agent connection). It gets the current window now if it has another.
   */
  register(session: Http2Session): void {
    if (session.destroyed || this.#sessions.has(session)) return
    this.#sessions.add(session)
    session.once('close', () => this.#sessions.delete(session))
    if (session.localSettings.initialWindowSize !== this.#sizes.window) this.#apply(session)
  }

  /** A relayed stream started: it gets the current high-water mark. */
  started(live: LiveStream): void {
    this.#live.add(live)
    this.#resize(live)
  }

  /** A relayed stream ended. */
  ended(live: LiveStream): void {
    this.#live.delete(live)
    this.#resize(undefined)
  }

  /** Sizes for the number of live streams now; `started` gets the high-water mark. */
  #resize(started: LiveStream | undefined): void {
    const n = this.#live.size
    const budget = this.#o.budgetBytes
    const cur = this.#sizes
    // Shrink at once; grow only with room to spare (sized for a quarter more streams than
    // there are), so that streams opening and closing around a step do not flap SETTINGS.
    let next = cur
    if (n > this.#sizedFor) {
      this.#sizedFor = n
      next = sizesFor(budget, n)
    } else if (n * 1.25 < this.#sizedFor) {
      this.#sizedFor = Math.max(1, Math.ceil(n * 1.25))
      next = sizesFor(budget, this.#sizedFor)
    }
    const { window, highWaterMark } = next
    if (started !== undefined && highWaterMark !== STREAM_HIGH_WATER_MARK) {
      started.relay?.setHighWaterMark(highWaterMark)
    }
    if (window === cur.window && highWaterMark === cur.highWaterMark) return
    this.#o.logger.info(
      { streams: n, windowBytes: window, highWaterMark, was: cur, budgetBytes: budget },
      'stream buffer sizes changed (buffer budget)',
    )
    this.#sizes = { window, highWaterMark }
    if (window !== cur.window) for (const s of this.#sessions) this.#apply(s)
    if (highWaterMark !== cur.highWaterMark) {
      for (const s of this.#live) s.relay?.setHighWaterMark(highWaterMark)
    }
  }

  #apply(session: Http2Session): void {
    if (session.destroyed || session.closed) return
    const window = this.#sizes.window
    // A peer that never acknowledges keeps the window it had: it loses its connection.
    const timer = setTimeout(() => {
      if (session.destroyed) return
      this.#o.logger.warn(
        { windowBytes: window },
        'a peer did not acknowledge a window change in time; closing its connection',
      )
      session.destroy()
    }, SETTINGS_ACK_TIMEOUT_MS)
    timer.unref()
    try {
      session.settings({ initialWindowSize: window }, () => clearTimeout(timer))
    } catch (err) {
      // Too many SETTINGS unacknowledged already: the same peer; it goes.
      clearTimeout(timer)
      this.#o.logger.warn({ err: String(err) }, 'cannot change a peer window; closing it')
      session.destroy()
    }
  }

  /** Measures what the buffers cost; over the budget, resets the streams stalled longest. */
  #sweep(): void {
    const live = [...this.#live]
    let total = 0
    const held = new Map<LiveStream, number>()
    for (const s of live) {
      const n = s.relay?.buffered() ?? 0
      held.set(s, n)
      total += n
    }
    this.#buffered = total
    const budget = this.#o.budgetBytes
    const now = this.#now()
    // What the held bytes really cost (a chunk's backing store may be larger than it). Right
    // after a sweep ended streams, their buffers are freed but not yet collected: ArrayBuffer
    // memory still counts them, and trusting it would end every other stalled stream too.
    // Until the collector has had its chance, what those streams held is taken off it.
    if (now >= this.#settleUntil) this.#freed = 0
    const memory = (this.#o.memory?.() ?? process.memoryUsage().arrayBuffers) - this.#freed
    const cost = Math.max(total, memory)
    if (cost <= budget) return
    const scale = total > 0 ? cost / total : 1
    let over = cost - budget
    const candidates = live
      .filter((s) => (held.get(s) ?? 0) > 0 && now - (s.relay?.lastActivity ?? now) >= STALLED_MS)
      .sort((a, b) => (a.relay?.lastActivity ?? 0) - (b.relay?.lastActivity ?? 0))
    let ended = 0
    for (const s of candidates) {
      if (over <= 0) break
      const idleS = Math.round((now - (s.relay?.lastActivity ?? now)) / 1000)
      this.#o.metrics.limitHits.inc({ limit: 'buffer-budget' })
      s.kill({
        endedBy: 'limit',
        reason: 'limit:buffer-budget',
        error: {
          code: 'PFG_ERR_LIMIT_BUFFER_BUDGET',
          message: `the gateway's relay buffers are over budget (limits.bufferBudget, ${budget} bytes) and this stream had not moved a byte for ${idleS} s`,
        },
      })
      over -= (held.get(s) ?? 0) * scale
      this.#freed += (held.get(s) ?? 0) * scale
      ended++
    }
    if (ended > 0) {
      this.#settleUntil = now + SETTLE_MS
      this.#o.logger.warn(
        {
          ended,
          bufferedBytes: total,
          costBytes: cost,
          budgetBytes: budget,
          streams: live.length,
        },
        'buffer budget exceeded: stalled streams reset',
      )
    }
  }

  /** Stops the sweeps. */
  close(): void {
    clearInterval(this.#sweeper)
  }
}
