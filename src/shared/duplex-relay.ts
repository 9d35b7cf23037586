/**
 * The byte relay at the heart of pfgate: two duplex byte streams joined both ways,
 * with backpressure, half-close, byte counts and error propagation. Every hop uses
 * it: CLI (local socket ↔ HTTP/2 stream), gateway (client stream ↔ agent stream,
 * whatever protocol the client spoke) and agent (HTTP/2 stream ↔ pod socket).
 *
 * Why hand-written instead of `stream.pipeline`: pipeline destroys both sides when
 * one direction ends (no half-close), and `a.pipe(b)` neither counts bytes nor
 * propagates resets. This is `pipe` with those two additions, written with named
 * listeners on one object per relay so an idle relay costs little memory
 * (PERFORMANCE-NOTES.md: pipe-like relays used half the memory of pipeline).
 *
 * @module
 */
import type { Duplex } from 'node:stream'

/** Why a side was aborted; each endpoint maps it to its own wire signal (RST code, TCP RST...). */
export type AbortReason =
  /** The other side reset or failed: propagate. */
  | 'peer-reset'
  /** An admin ended the stream. */
  | 'admin'
  /** A limit (idle, lifetime) ended the stream. */
  | 'limit'
  /** The process is shutting down (drain deadline passed). */
  | 'shutdown'
  /** An internal error. */
  | 'internal'

/** One side of a relay: a byte stream plus how to abort it abnormally. */
export interface RelayEndpoint {
  readonly stream: Duplex
  /**
   * Ends the stream abnormally, telling the peer in the endpoint's own terms.
   * `peerRstCode` is the HTTP/2 RST code the other side failed with, when it had one.
   */
  abort(reason: AbortReason, peerRstCode?: number): void
  /**
   * True when an EOF just read is really an abort in disguise. Node ends an HTTP/2
   * stream's readable side (push(null)) when its session dies and nghttp2 closes the
   * stream with NO_ERROR; a genuine END_STREAM leaves the stream open until we end ours.
   */
  eofIsAbort?(): boolean
}

/** How a relay ended. */
export interface RelayOutcome {
  /** Bytes read from A and written to B. */
  bytesAtoB: number
  /** Bytes read from B and written to A. */
  bytesBtoA: number
  /** The side whose EOF came first (normal ends), if any. */
  firstEof: 'a' | 'b' | undefined
  /** Set when the relay ended abnormally: which side failed (or 'local' for abort()), and why. */
  failure?: { side: 'a' | 'b' | 'local'; reason: AbortReason | 'error' | 'closed'; error?: Error }
}

/** Options for {@link DuplexRelay}. */
export interface RelayOptions {
  /** Called once when both sides are done (normally or not). */
  onDone: (outcome: RelayOutcome) => void
  /** Clock for `lastActivity` (ms). */
  now?: () => number
}

const DIR_A = 0
const DIR_B = 1

/**
 * Joins A and B. Data flows as soon as it is constructed; call it only once both
 * sides may carry bytes (e.g. after the 200).
 */
export class DuplexRelay {
  bytesAtoB = 0
  bytesBtoA = 0
  /** ms timestamp of the last byte either way (for idle limits). */
  lastActivity: number
  #a: RelayEndpoint
  #b: RelayEndpoint
  #opts: RelayOptions
  /** EOF read from A / from B. */
  #eof = [false, false]
  /** Our writes to A / to B have finished (after end()). */
  #finished = [false, false]
  #firstEof: 'a' | 'b' | undefined
  #done = false
  #now: () => number

  constructor(a: RelayEndpoint, b: RelayEndpoint, options: RelayOptions) {
    this.#a = a
    this.#b = b
    this.#opts = options
    this.#now = options.now ?? Date.now
    this.lastActivity = this.#now()
    this.#wire(a.stream, b.stream, DIR_A)
    this.#wire(b.stream, a.stream, DIR_B)
  }

  /** True once onDone has been called. */
  get done(): boolean {
    return this.#done
  }

  /** Aborts both sides (admin, limit, shutdown) and ends the relay. */
  abort(reason: AbortReason): void {
    if (this.#done) return
    this.#finish({ side: 'local', reason })
    this.#a.abort(reason)
    this.#b.abort(reason)
  }

  #wire(src: Duplex, dst: Duplex, dir: 0 | 1): void {
    const srcEndpoint = dir === DIR_A ? this.#a : this.#b
    const onData = (chunk: Buffer): void => {
      if (dir === DIR_A) this.bytesAtoB += chunk.length
      else this.bytesBtoA += chunk.length
      this.lastActivity = this.#now()
      if (!dst.write(chunk)) src.pause()
    }
    const onDrain = (): void => {
      src.resume()
    }
    const onEnd = (): void => {
      if (srcEndpoint.eofIsAbort?.() === true) {
        this.#fail(dir, 'closed')
        return
      }
      this.#eof[dir] = true
      this.#firstEof ??= dir === DIR_A ? 'a' : 'b'
      // Half-close: the peer's EOF becomes our end of the write side toward the other peer.
      dst.end()
    }
    const onFinish = (): void => {
      // `src` here is the destination of the other direction: our writes to it are done.
      this.#finished[dir] = true
      this.#check()
    }
    const onError = (err: Error): void => {
      this.#fail(dir, 'error', err)
    }
    const onClose = (): void => {
      if (!(this.#eof[dir] && this.#finished[dir])) this.#fail(dir, 'closed')
      else this.#check()
    }
    src.on('data', onData)
    src.on('end', onEnd)
    src.on('finish', onFinish)
    src.on('error', onError)
    src.on('close', onClose)
    dst.on('drain', onDrain)
    // Streams that arrive already flowing-capable but paused: start reading.
    src.resume()
  }

  #check(): void {
    if (this.#done) return
    if (this.#eof[DIR_A] && this.#eof[DIR_B] && this.#finished[DIR_A] && this.#finished[DIR_B]) {
      this.#finish(undefined)
    }
  }

  #fail(dir: 0 | 1, reason: 'error' | 'closed', error?: Error): void {
    if (this.#done) return
    const side = dir === DIR_A ? 'a' : 'b'
    this.#finish(error === undefined ? { side, reason } : { side, reason, error })
    // Propagate to the other side as a reset, with the failing side's RST code if it had one.
    const failed = dir === DIR_A ? this.#a : this.#b
    const other = dir === DIR_A ? this.#b : this.#a
    const rstCode = (failed.stream as Duplex & { rstCode?: number }).rstCode
    other.abort('peer-reset', typeof rstCode === 'number' ? rstCode : undefined)
  }

  #finish(failure: RelayOutcome['failure']): void {
    this.#done = true
    const outcome: RelayOutcome = {
      bytesAtoB: this.bytesAtoB,
      bytesBtoA: this.bytesBtoA,
      firstEof: this.#firstEof,
    }
    if (failure !== undefined) outcome.failure = failure
    this.#opts.onDone(outcome)
  }
}
