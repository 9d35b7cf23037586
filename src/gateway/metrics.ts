/**
 * The gateway's Prometheus metrics (prom-client), served on a separate listener.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** Callbacks that gauges read at scrape time. */
export interface MetricSources {
  sessions(): number
  streams(): number
  agentSessions(): number
  auditQueueDepth(): number
  /** Client TCP connections, by whether one of their requests has authenticated. */
  connections(): { authenticated: number; unauthenticated: number }
  /** What the relays held at the last sweep, and the per-stream window granted now. */
  buffers(): { bytes: number; window: number }
}

/** Every gateway metric. */
export class GatewayMetrics {
  readonly registry = new Registry()
  readonly streamsOpened: Counter<'protocol'>
  readonly streamsClosed: Counter<'ended_by'>
  readonly streamsRejected: Counter<'reason' | 'status'>
  readonly bytes: Counter<'direction'>
  readonly openLatency: Histogram<'protocol'>
  readonly auditFailures: Counter<'sink'>
  readonly limitHits: Counter<'limit'>
  #sources: MetricSources = {
    sessions: () => 0,
    streams: () => 0,
    agentSessions: () => 0,
    auditQueueDepth: () => 0,
    connections: () => ({ authenticated: 0, unauthenticated: 0 }),
    buffers: () => ({ bytes: 0, window: 0 }),
  }

  constructor() {
    const r = this.registry
    collectDefaultMetrics({ register: r, prefix: 'pfgate_gateway_' })
    const src = (): MetricSources => this.#sources
    new Gauge({
      name: 'pfgate_client_sessions',
      help: 'Client connections with at least one authenticated request',
      registers: [r],
      collect() {
        this.set(src().sessions())
      },
    })
    new Gauge({
      name: 'pfgate_streams_active',
      help: 'Forwarded streams open now',
      registers: [r],
      collect() {
        this.set(src().streams())
      },
    })
    new Gauge({
      name: 'pfgate_agent_sessions',
      help: 'HTTP/2 sessions to node agents',
      registers: [r],
      collect() {
        this.set(src().agentSessions())
      },
    })
    new Gauge({
      name: 'pfgate_client_connections',
      help: 'Client TCP connections, by whether one of their requests has authenticated',
      labelNames: ['state'],
      registers: [r],
      collect() {
        const c = src().connections()
        this.set({ state: 'authenticated' }, c.authenticated)
        this.set({ state: 'unauthenticated' }, c.unauthenticated)
      },
    })
    new Gauge({
      name: 'pfgate_relay_buffered_bytes',
      help: 'Bytes the relayed streams held in the gateway at the last sweep (limits.bufferBudget)',
      registers: [r],
      collect() {
        this.set(src().buffers().bytes)
      },
    })
    new Gauge({
      name: 'pfgate_stream_window_bytes',
      help: 'Per-stream receive window the gateway grants now (adapted to the buffer budget)',
      registers: [r],
      collect() {
        this.set(src().buffers().window)
      },
    })
    new Gauge({
      name: 'pfgate_audit_queue_depth',
      help: 'Audit records waiting to be written',
      registers: [r],
      collect() {
        this.set(src().auditQueueDepth())
      },
    })
    this.streamsOpened = new Counter({
      name: 'pfgate_streams_opened_total',
      help: 'Forwarded streams that opened (answered 200), by client protocol',
      labelNames: ['protocol'],
      registers: [r],
    })
    this.streamsClosed = new Counter({
      name: 'pfgate_streams_closed_total',
      help: 'Forwarded streams that ended, by who ended them',
      labelNames: ['ended_by'],
      registers: [r],
    })
    this.streamsRejected = new Counter({
      name: 'pfgate_streams_rejected_total',
      help: 'Stream requests denied or failed before opening, by reason',
      labelNames: ['reason', 'status'],
      registers: [r],
    })
    this.bytes = new Counter({
      name: 'pfgate_bytes_total',
      help: 'Bytes relayed, by direction',
      labelNames: ['direction'],
      registers: [r],
    })
    this.openLatency = new Histogram({
      name: 'pfgate_stream_open_seconds',
      help: 'From request to 200 (authn, authz, resolve, audit, agent dial)',
      labelNames: ['protocol'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
      registers: [r],
    })
    this.auditFailures = new Counter({
      name: 'pfgate_audit_failures_total',
      help: 'Audit writes that failed',
      labelNames: ['sink'],
      registers: [r],
    })
    this.limitHits = new Counter({
      name: 'pfgate_limit_hits_total',
      help: 'Times a limit refused or ended a stream',
      labelNames: ['limit'],
      registers: [r],
    })
  }

  /** Sets where the gauges read their values. */
  setSources(sources: Partial<MetricSources>): void {
    this.#sources = { ...this.#sources, ...sources }
  }
}
