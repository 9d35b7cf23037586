/**
 * The gateway's relay of one UDP flow: the client's stream of datagrams ⇄ the agent's
 * (docs/protocol.md, "UDP flows"). Frames are decoded and re-encoded, so the gateway
 * counts datagrams and bytes each way, and a datagram for a congested side is dropped and
 * counted rather than queued. It also ends flows on purpose (idle, lifetime) cleanly:
 * the agent's side first, so that the agent's trailers (its drops, wrong-source
 * datagrams) reach the audit record, then the client's, with trailers of our own.
 *
 * It offers the members of `DuplexRelay` that the forwarder's live-stream bookkeeping
 * uses (`done`, `abort`, `lastActivity`, byte counts, `buffered`), so a flow is listed,
 * killed and swept like a stream.
 *
 * @module
 */
import type { ClientHttp2Stream, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2'
import { DatagramStream } from '../shared/datagram-stream.js'
import type { DatagramStreamEnd } from '../shared/datagram-stream.js'
import { rstCodeFor } from '../shared/relay-endpoints.js'
import { RST } from '../protocol/reset-codes.js'
import type { AbortReason } from '../protocol/stream-end.js'
import {
  parseCountTrailer,
  parseUdpEnd,
  UDP_DROPPED_TRAILER,
  UDP_END_TRAILER,
  UDP_WRONG_SOURCE_TRAILER,
} from '../protocol/udp-frames.js'
import type { UdpEndReason } from '../protocol/udp-frames.js'

/** How long a clean end waits for the agent's trailers before resetting, ms. */
export const UDP_END_GRACE_MS = 5_000

/** How a flow ended, for its audit record. */
export interface UdpRelayOutcome {
  datagramsClientToPod: number
  bytesClientToPod: number
  datagramsPodToClient: number
  bytesPodToClient: number
  /** Datagrams the gateway dropped (either direction). */
  droppedGateway: number
  /** The agent's drops and wrong-source datagrams, from its trailers (absent after a reset). */
  droppedAgent?: number
  wrongSource?: number
  /**
   * Who ended it: `client` (it ended its side, or reset: `reset` set), `pod` (the agent
   * ended it: unreachable, pod-error), `local` (we did: `abort` or `end`), `error` (the
   * agent's stream failed).
   */
  by: 'client' | 'pod' | 'local' | 'error'
  /** A reason word: the end trailer's, `client-reset`, `agent-failed`, `protocol-error`. */
  reason: UdpEndReason | 'client-reset' | 'agent-failed' | 'protocol-error' | AbortReason
  /** The agent stream's RST code, when it was reset. */
  upstreamRstCode?: number
}

/** Relays one UDP flow between a client stream (already answered 200 with trailers) and the agent's. */
export class UdpFlowRelay {
  done = false
  readonly #client: DatagramStream
  readonly #upstream: DatagramStream
  readonly #onDone: (o: UdpRelayOutcome) => void
  readonly #now: () => number
  #agentTrailers: IncomingHttpHeaders | undefined
  #endedBy: { by: UdpRelayOutcome['by']; reason: UdpRelayOutcome['reason'] } | undefined
  #ourEnd: UdpEndReason | undefined
  #graceTimer: NodeJS.Timeout | undefined
  #clientEnded = false
  #upstreamEnded = false

  constructor(
    client: ServerHttp2Stream,
    upstream: ClientHttp2Stream,
    options: { onDone: (o: UdpRelayOutcome) => void; now?: () => number },
  ) {
    this.#onDone = options.onDone
    this.#now = options.now ?? Date.now
    upstream.once('trailers', (t: IncomingHttpHeaders) => (this.#agentTrailers = t))
    client.once('wantTrailers', () => {
      client.sendTrailers({
        [UDP_END_TRAILER]:
          this.#ourEnd ?? parseUdpEnd(this.#agentTrailers?.[UDP_END_TRAILER]) ?? 'client',
        [UDP_DROPPED_TRAILER]: String(this.#client.counts.dropped + this.#upstream.counts.dropped),
      })
    })
    this.#client = new DatagramStream(client, {
      datagram: (d) => this.#upstream.send(d),
      end: (how) => this.#onClientEnd(how),
    })
    this.#upstream = new DatagramStream(upstream, {
      datagram: (d) => this.#client.send(d),
      end: (how) => this.#onUpstreamEnd(how),
    })
  }

  get lastActivity(): number {
    return Math.max(this.#client.lastActivity, this.#upstream.lastActivity)
  }

  get bytesAtoB(): number {
    return this.#client.counts.bytesIn
  }

  get bytesBtoA(): number {
    return this.#upstream.counts.bytesIn
  }

  get datagramsAtoB(): number {
    return this.#client.counts.datagramsIn
  }

  get datagramsBtoA(): number {
    return this.#upstream.counts.datagramsIn
  }

  /** Bytes waiting in the two streams' write buffers. */
  buffered(): number {
    return this.#client.stream.writableLength + this.#upstream.stream.writableLength
  }

  /** Flows have no high-water mark to tune: they drop instead (for the buffer budget). */
  setHighWaterMark(): void {}

  /**
   * Ends the flow cleanly (idle, lifetime): the agent's side first, then the client's
   * with trailers. Resets both if the agent has not answered within {@link UDP_END_GRACE_MS}.
   */
  end(reason: UdpEndReason): void {
    if (this.done || this.#ourEnd !== undefined) return
    this.#ourEnd = reason
    this.#endedBy ??= { by: 'local', reason }
    const up = this.#upstream.stream
    if (!up.writableEnded && !up.destroyed) up.end()
    this.#graceTimer = setTimeout(() => this.abort('limit'), UDP_END_GRACE_MS)
    this.#graceTimer.unref()
  }

  /** Resets both sides (admin, limit, `gateway`: shutdown; `peer-reset`: the client is gone). */
  abort(reason: AbortReason): void {
    if (this.done) return
    this.#endedBy ??= { by: 'local', reason }
    this.#client.reset(rstCodeFor(reason, undefined, RST.CANCEL))
    this.#upstream.reset(RST.CANCEL)
    this.#finish()
  }

  #onClientEnd(how: DatagramStreamEnd): void {
    if (how.kind === 'ended') {
      this.#clientEnded = true
      this.#endedBy ??= { by: 'client', reason: 'client' }
      const up = this.#upstream.stream
      if (!up.writableEnded && !up.destroyed) up.end()
      this.#maybeFinish()
      return
    }
    this.#endedBy ??= {
      by: 'client',
      reason: how.kind === 'protocol-error' ? 'protocol-error' : 'client-reset',
    }
    this.#upstream.reset(RST.CANCEL)
    this.#finish()
  }

  #onUpstreamEnd(how: DatagramStreamEnd): void {
    if (how.kind === 'ended') {
      this.#upstreamEnded = true
      const why = parseUdpEnd(this.#agentTrailers?.[UDP_END_TRAILER])
      if (why === 'unreachable' || why === 'pod-error') this.#endedBy ??= { by: 'pod', reason: why }
      const c = this.#client.stream
      if (!c.writableEnded && !c.destroyed) c.end()
      this.#maybeFinish()
      return
    }
    this.#endedBy ??= {
      by: 'error',
      reason: how.kind === 'protocol-error' ? 'protocol-error' : 'agent-failed',
    }
    const code = this.#upstream.stream.rstCode
    this.#client.reset(code === RST.CONNECT_ERROR ? RST.CONNECT_ERROR : RST.INTERNAL_ERROR)
    this.#finish()
  }

  #maybeFinish(): void {
    if (this.#clientEnded && this.#upstreamEnded) this.#finish()
    else if (this.#upstreamEnded && this.#ourEnd !== undefined) this.#finish()
  }

  #finish(): void {
    if (this.done) return
    this.done = true
    clearTimeout(this.#graceTimer)
    const e = this.#endedBy ?? { by: 'error', reason: 'agent-failed' }
    const o: UdpRelayOutcome = {
      datagramsClientToPod: this.#client.counts.datagramsIn,
      bytesClientToPod: this.#client.counts.bytesIn,
      datagramsPodToClient: this.#upstream.counts.datagramsIn,
      bytesPodToClient: this.#upstream.counts.bytesIn,
      droppedGateway: this.#client.counts.dropped + this.#upstream.counts.dropped,
      by: e.by,
      reason: e.reason,
    }
    const t = this.#agentTrailers
    if (t !== undefined) {
      o.droppedAgent = parseCountTrailer(t[UDP_DROPPED_TRAILER])
      o.wrongSource = parseCountTrailer(t[UDP_WRONG_SOURCE_TRAILER])
    }
    const rst = this.#upstream.stream.rstCode
    if (rst !== undefined && rst !== RST.NO_ERROR) o.upstreamRstCode = rst
    void this.#now
    this.#onDone(o)
  }
}
