/**
 * One UDP flow's HTTP/2 stream seen as datagrams (docs/protocol.md, "UDP flows"):
 * frames in, frames out, with counters. Every hop of a flow uses it (CLI: local UDP
 * socket ⇄ stream; gateway: client stream ⇄ agent stream; agent: stream ⇄ the pod's
 * UDP socket).
 *
 * Pressure drops, never buffers without bound: a datagram for a stream that already
 * holds more than `maxBufferedBytes` unsent (its peer's window is closed) is dropped and
 * counted, as a congested UDP path would. Incoming frames are decoded as they arrive; the
 * stream is never paused, so what limits memory on the receiving side is the decoder's
 * one partial frame and whatever the consumer does with a datagram (it drops too).
 *
 * @module
 */
import type { Http2Stream } from 'node:http2'
import { DatagramDecoder, encodeDatagram, UdpFrameError } from '../protocol/udp-frames.js'
import { RST } from '../protocol/reset-codes.js'
import { resetStream } from './relay-endpoints.js'

/** Default unsent bytes a flow's stream may hold before datagrams are dropped (256 KiB). */
export const DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024

/** Counters of one direction pair, as audit records and trailers carry them. */
export interface DatagramCounts {
  /** Datagrams received from the stream, and their payload bytes. */
  datagramsIn: number
  bytesIn: number
  /** Datagrams written to the stream, and their payload bytes. */
  datagramsOut: number
  bytesOut: number
  /** Datagrams not written because the stream was congested. */
  dropped: number
}

/** How the stream ended, seen from this side. */
export type DatagramStreamEnd =
  /** The peer ended its side at a frame boundary (END_STREAM). */
  | { kind: 'ended' }
  /** The peer reset the stream, or the stream/session failed. */
  | { kind: 'reset'; code: number | undefined }
  /** The peer sent a bad frame (oversize or truncated); we reset it with PROTOCOL_ERROR. */
  | { kind: 'protocol-error'; message: string }

/** Callbacks of a {@link DatagramStream}. */
export interface DatagramStreamHandlers {
  /** A datagram arrived (its buffer may be a view of the frame; copy to keep it). */
  datagram(d: Buffer): void
  /** The stream's readable side ended (once; `close` follows when both sides are done). */
  end(how: DatagramStreamEnd): void
}

/** An HTTP/2 stream carrying length-prefixed datagrams. */
export class DatagramStream {
  readonly stream: Http2Stream
  readonly counts: DatagramCounts = {
    datagramsIn: 0,
    bytesIn: 0,
    datagramsOut: 0,
    bytesOut: 0,
    dropped: 0,
  }
  /** Milliseconds timestamp of the last datagram either way (for idle timeouts). */
  lastActivity = Date.now()

  readonly #decoder = new DatagramDecoder()
  readonly #handlers: DatagramStreamHandlers
  readonly #maxBuffered: number
  #ended = false

  constructor(
    stream: Http2Stream,
    handlers: DatagramStreamHandlers,
    maxBufferedBytes = DEFAULT_MAX_BUFFERED_BYTES,
  ) {
    this.stream = stream
    this.#handlers = handlers
    this.#maxBuffered = maxBufferedBytes
    stream.on('data', (chunk: Buffer) => this.#onData(chunk))
    stream.on('end', () => {
      // Node ends the readable side of a stream that was reset, or whose session died:
      // that EOF is no END_STREAM (the same test as the byte relay's, relay-endpoints.ts).
      if (stream.closed && (stream.aborted || (stream.rstCode ?? RST.NO_ERROR) !== RST.NO_ERROR)) {
        this.#finish({ kind: 'reset', code: stream.rstCode })
        return
      }
      try {
        this.#decoder.end()
      } catch (err) {
        this.#protocolError(err as Error)
        return
      }
      this.#finish({ kind: 'ended' })
    })
    stream.on('error', () => {})
    stream.on('close', () => this.#finish({ kind: 'reset', code: stream.rstCode }))
  }

  /** Whether the readable side has ended (either way). */
  get ended(): boolean {
    return this.#ended
  }

  /**
   * Sends one datagram; false when it was dropped (the stream is congested or closed).
   */
  send(d: Buffer): boolean {
    const s = this.stream
    if (s.destroyed || s.writableEnded || s.writableLength > this.#maxBuffered) {
      this.counts.dropped++
      return false
    }
    s.write(encodeDatagram(d))
    this.counts.datagramsOut++
    this.counts.bytesOut += d.length
    this.lastActivity = Date.now()
    return true
  }

  /** Resets the stream with `code` (never an END_STREAM first). */
  reset(code: number): void {
    resetStream(this.stream, code)
  }

  #onData(chunk: Buffer): void {
    if (this.#ended) return
    let datagrams: Buffer[]
    try {
      datagrams = this.#decoder.push(chunk)
    } catch (err) {
      this.#protocolError(err as Error)
      return
    }
    if (datagrams.length > 0) this.lastActivity = Date.now()
    for (const d of datagrams) {
      this.counts.datagramsIn++
      this.counts.bytesIn += d.length
      this.#handlers.datagram(d)
    }
  }

  #protocolError(err: Error): void {
    const message = err instanceof UdpFrameError ? err.message : String(err)
    this.#finish({ kind: 'protocol-error', message })
    this.reset(RST.PROTOCOL_ERROR)
  }

  #finish(how: DatagramStreamEnd): void {
    if (this.#ended) return
    this.#ended = true
    this.#handlers.end(how)
  }
}
