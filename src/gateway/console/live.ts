/**
 * The console's live view: once a second the sampler reads the gateway's counters (for
 * the gateway-wide charts, kept for the last minutes) and, while a page is watching, the
 * table of sessions and streams, whose byte counts it turns into rates. Nothing here
 * runs per byte or per stream event: the relay's counters are only read.
 *
 * @module
 */
import type { ConsoleBackend } from './backend.js'
import type { GatewayPoint, LiveSample, StreamSample } from '../../protocol/console-view.js'

export type { GatewayPoint, LiveSample, StreamSample } from '../../protocol/console-view.js'

/** The most sessions and streams one sample lists (the busiest first). */
export const MAX_LISTED = 500

export interface SamplerOptions {
  intervalMs: number
  /** Gateway-wide points kept. */
  historyPoints: number
  /** Called when a sample fails (the sampler goes on). */
  onError?: (err: unknown) => void
}

export const DEFAULT_SAMPLER: SamplerOptions = { intervalMs: 1000, historyPoints: 600 }

type Listener = (sample: LiveSample) => void

export class LiveSampler {
  readonly #backend: ConsoleBackend
  readonly #opts: SamplerOptions
  readonly #history: GatewayPoint[] = []
  readonly #listeners = new Set<Listener>()
  #timer: NodeJS.Timeout | undefined
  #last: { t: number; opened: number; denials: number; bytes: number } | undefined
  /** Each stream's byte counts at the previous sample (only while someone watches). */
  #prev = new Map<string, { c2p: number; p2c: number }>()
  #busy = false

  constructor(backend: ConsoleBackend, opts: SamplerOptions = DEFAULT_SAMPLER) {
    this.#backend = backend
    this.#opts = opts
  }

  start(): void {
    if (this.#timer !== undefined) return
    this.#timer = setInterval(() => void this.sample(), this.#opts.intervalMs)
    this.#timer.unref()
    void this.sample()
  }

  stop(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#listeners.clear()
  }

  /** The gateway-wide points of the last minutes, oldest first. */
  history(): GatewayPoint[] {
    return [...this.#history]
  }

  get watchers(): number {
    return this.#listeners.size
  }

  /** Calls `listener` with every sample until the returned function is called. */
  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener)
    return () => {
      this.#listeners.delete(listener)
      if (this.#listeners.size === 0) this.#prev.clear()
    }
  }

  /** Takes one sample now (the timer calls it; tests may too). */
  async sample(): Promise<void> {
    if (this.#busy) return
    this.#busy = true
    try {
      await this.#sample()
    } catch (err) {
      this.#opts.onError?.(err)
    } finally {
      this.#busy = false
    }
  }

  async #sample(): Promise<void> {
    const t = Date.now()
    const c = await this.#backend.counters()
    const last = this.#last
    const secs = last !== undefined ? Math.max(0.001, (t - last.t) / 1000) : 1
    const rate = (now: number, before: number | undefined): number =>
      before === undefined ? 0 : Math.max(0, now - before) / secs
    const watching = this.#listeners.size > 0
    const sessions = watching ? this.#backend.sessions() : undefined
    const streams = watching ? this.#backend.streams() : undefined
    const point: GatewayPoint = {
      t,
      opensPerSec: rate(c.streamsOpened, last?.opened),
      bytesPerSec: rate(c.bytes, last?.bytes),
      denialsPerSec: rate(c.denials, last?.denials),
      sessions: sessions?.length ?? 0,
      streams: streams?.length ?? 0,
    }
    this.#last = { t, opened: c.streamsOpened, denials: c.denials, bytes: c.bytes }
    this.#history.push(point)
    if (this.#history.length > this.#opts.historyPoints) this.#history.shift()
    if (sessions === undefined || streams === undefined) return
    const prev = this.#prev
    const next = new Map<string, { c2p: number; p2c: number }>()
    const sampled: StreamSample[] = streams.map((s) => {
      const p = prev.get(s.id)
      next.set(s.id, { c2p: s.bytesClientToPod, p2c: s.bytesPodToClient })
      return {
        ...s,
        rateClientToPod: rate(s.bytesClientToPod, p?.c2p ?? (last !== undefined ? 0 : undefined)),
        ratePodToClient: rate(s.bytesPodToClient, p?.p2c ?? (last !== undefined ? 0 : undefined)),
      }
    })
    this.#prev = next
    const busiest = (a: StreamSample, b: StreamSample): number =>
      b.rateClientToPod + b.ratePodToClient - (a.rateClientToPod + a.ratePodToClient)
    const sample: LiveSample = {
      gateway: point,
      sessions: sessions.slice(0, MAX_LISTED),
      streams: sampled.length > MAX_LISTED ? sampled.sort(busiest).slice(0, MAX_LISTED) : sampled,
      totalSessions: sessions.length,
      totalStreams: streams.length,
    }
    for (const l of this.#listeners) l(sample)
  }
}
