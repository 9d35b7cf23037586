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
 * (docs/performance.md#starting-points-from-a-prototype: pipe-like relays used half the
 * memory of pipeline).
 *
 * @module
 */
import type { Duplex } from 'node:stream'
import type { AbortReason } from '../protocol/stream-end.js'

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

/**
 * How a relay ended. `S` names the two sides (A first) in the caller's own words
 * ({@link RelayOptions.sides}; `a` and `b` unless named).
 */
export interface RelayOutcome<S extends string = 'a' | 'b'> {
  /** Bytes read from A and written to B. */
  bytesAtoB: number
  /** Bytes read from B and written to A. */
  bytesBtoA: number
  /** The side whose EOF came first (normal ends), if any. */
  firstEof: S | undefined
  /** Set when the relay ended abnormally: which side failed (or 'local' for abort()), and why. */
  failure?: { side: S | 'local'; reason: AbortReason | 'error' | 'closed'; error?: Error }
}

/** Options for {@link DuplexRelay}. */
export interface RelayOptions<S extends string = 'a' | 'b'> {
  /** Called once when both sides are done (normally or not). */
  onDone: (outcome: RelayOutcome<S>) => void
  /** Clock for `lastActivity` (ms). */
  now?: () => number
  /** The names of A and B in the outcome (default `a`, `b`). */
  sides?: readonly [S, S]
}

const DIR_A = 0
const DIR_B = 1

/** A stream's Readable and Writable state, where Node keeps their high-water marks. */
type HwmStream = Duplex & {
  _readableState?: { highWaterMark: number }
  _writableState?: { highWaterMark: number }
}

const uncork = (s: Duplex): void => {
  s.uncork()
}

/** The relay a stream belongs to, stored on the stream for the shared listeners. */
const kRelay = Symbol('pfgate.relay')
type RelayStream = Duplex & { [kRelay]?: DuplexRelay<string> }

/**
 * Joins A and B. Data flows as soon as it is constructed; call it only once both
 * sides may carry bytes (e.g. after the 200).
 *
 * The stream listeners are shared by every relay (static functions that find their
 * relay through a symbol property on the stream) rather than closures per relay: an
 * idle relay then costs two small objects, not a dozen closures and their scopes
 * (docs/performance.md: memory per idle stream).
 */
export class DuplexRelay<S extends string = 'a' | 'b'> {
  bytesAtoB = 0
  bytesBtoA = 0
  /** ms timestamp of the last byte either way (for idle limits). */
  lastActivity: number
  #a: RelayEndpoint
  #b: RelayEndpoint
  #opts: RelayOptions<S>
  #sides: readonly [S, S]
  /** EOF read from A / from B. */
  #eof = [false, false]
  /** Our writes to A / to B have finished (after end()). */
  #finished = [false, false]
  #firstEof: S | undefined
  #done = false
  #now: () => number

  constructor(a: RelayEndpoint, b: RelayEndpoint, options: RelayOptions<S>) {
    this.#a = a
    this.#b = b
    this.#opts = options
    this.#sides = options.sides ?? (['a', 'b'] as unknown as readonly [S, S])
    this.#now = options.now ?? Date.now
    this.lastActivity = this.#now()
    DuplexRelay.#wire(this as unknown as DuplexRelay<string>, a.stream)
    DuplexRelay.#wire(this as unknown as DuplexRelay<string>, b.stream)
    // A side may have been destroyed before it was handed to us (a pod's reset reaching
    // a hop while the stream was still being opened): its 'close' is gone, so end the
    // relay as that close would have (propagating its reset) instead of waiting for ever.
    for (const s of [a.stream, b.stream]) {
      if (s.destroyed) process.nextTick(DuplexRelay.#onClose.bind(s as RelayStream))
    }
  }

  /** True once onDone has been called. */
  get done(): boolean {
    return this.#done
  }

  /**
   * Bytes the relay holds now: read from a side and not yet consumed, or written to a side
   * and not yet flushed (the gateway's buffer budget adds these up).
   */
  buffered(): number {
    const a = this.#a.stream
    const b = this.#b.stream
    return a.readableLength + a.writableLength + b.readableLength + b.writableLength
  }

  /**
   * Sets both sides' read and write high-water marks (what each may buffer before the
   * relay pauses, or the stream stops taking bytes from its peer). Node has no public
   * setter after construction: the streams' own state fields are set, which its Readable
   * and Writable read on every push and write.
   */
  setHighWaterMark(bytes: number): void {
    for (const s of [this.#a.stream, this.#b.stream] as HwmStream[]) {
      if (s._readableState !== undefined) s._readableState.highWaterMark = bytes
      if (s._writableState !== undefined) s._writableState.highWaterMark = bytes
    }
  }

  /** Aborts both sides (admin, limit, shutdown) and ends the relay. */
  abort(reason: AbortReason): void {
    if (this.#done) return
    this.#finish({ side: 'local', reason })
    this.#a.abort(reason)
    this.#b.abort(reason)
  }

  /**
   * Listens on one side. A stream is the source of one direction (its bytes go to the
   * other side) and the destination of the other; `dir` below is the direction the
   * stream is the source of, found by identity (A is the source of A→B).
   */
  static #wire(relay: DuplexRelay<string>, stream: RelayStream): void {
    stream[kRelay] = relay
    stream.on('data', DuplexRelay.#onData)
    stream.on('end', DuplexRelay.#onEnd)
    stream.on('finish', DuplexRelay.#onFinish)
    stream.on('error', DuplexRelay.#onError)
    stream.on('close', DuplexRelay.#onClose)
    stream.on('drain', DuplexRelay.#onDrain)
    // Streams that arrive already flowing-capable but paused: start reading.
    stream.resume()
  }

  /** The direction `stream` is the source of, and the stream it writes to. */
  #dirOf(stream: Duplex): 0 | 1 {
    return this.#a.stream === stream ? DIR_A : DIR_B
  }

  #other(dir: 0 | 1): Duplex {
    return dir === DIR_A ? this.#b.stream : this.#a.stream
  }

  static #onData = function (this: RelayStream, chunk: Buffer): void {
    const r = this[kRelay] as DuplexRelay<string>
    const dir = r.#dirOf(this)
    if (dir === DIR_A) r.bytesAtoB += chunk.length
    else r.bytesBtoA += chunk.length
    r.lastActivity = r.#now()
    const to = r.#other(dir)
    // Chunks read in one turn of the event loop go out in one write (uncorked in the
    // loop's check phase, after every read of this turn; process.nextTick would run after
    // each chunk, as each is its own callback from native code): an HTTP/2 DATA frame
    // arrives as two pieces (a TLS record holds 16 KiB, a frame 16 KiB + 9 bytes), and
    // writing each piece to a socket cost a system call per piece (docs/performance.md).
    if (to.writableCorked === 0) {
      to.cork()
      setImmediate(uncork, to)
    }
    if (!to.write(chunk)) this.pause()
  }

  /** The stream we write to drained: resume the one we read from. */
  static #onDrain = function (this: RelayStream): void {
    const r = this[kRelay] as DuplexRelay<string>
    r.#other(r.#dirOf(this)).resume()
  }

  static #onEnd = function (this: RelayStream): void {
    const r = this[kRelay] as DuplexRelay<string>
    const dir = r.#dirOf(this)
    const endpoint = dir === DIR_A ? r.#a : r.#b
    if (endpoint.eofIsAbort?.() === true) {
      r.#fail(dir, 'closed')
      return
    }
    r.#eof[dir] = true
    r.#firstEof ??= r.#sides[dir]
    // Half-close: the peer's EOF becomes our end of the write side toward the other peer
    // (unless that side is already gone: end() would only build an error to drop).
    const other = r.#other(dir)
    if (!other.writableEnded && !other.destroyed) other.end()
  }

  static #onFinish = function (this: RelayStream): void {
    // Our writes to this stream (the destination of the other direction) are done.
    const r = this[kRelay] as DuplexRelay<string>
    r.#finished[r.#dirOf(this)] = true
    r.#check()
  }

  static #onError = function (this: RelayStream, err: Error): void {
    const r = this[kRelay] as DuplexRelay<string>
    r.#fail(r.#dirOf(this), 'error', err)
  }

  static #onClose = function (this: RelayStream): void {
    const r = this[kRelay] as DuplexRelay<string>
    const dir = r.#dirOf(this)
    if (!(r.#eof[dir] && r.#finished[dir])) r.#fail(dir, 'closed')
    else r.#check()
  }

  #check(): void {
    if (this.#done) return
    if (this.#eof[DIR_A] && this.#eof[DIR_B] && this.#finished[DIR_A] && this.#finished[DIR_B]) {
      this.#finish(undefined)
    }
  }

  #fail(dir: 0 | 1, reason: 'error' | 'closed', error?: Error): void {
    if (this.#done) return
    const side = this.#sides[dir]
    this.#finish(error === undefined ? { side, reason } : { side, reason, error })
    // Propagate to the other side as a reset, with the failing side's RST code if it had one.
    const failed = dir === DIR_A ? this.#a : this.#b
    const other = dir === DIR_A ? this.#b : this.#a
    const rstCode = (failed.stream as Duplex & { rstCode?: number }).rstCode
    // What was read before the failure goes out first, as it would have without the cork.
    while (other.stream.writableCorked > 0) other.stream.uncork()
    other.abort('peer-reset', typeof rstCode === 'number' ? rstCode : undefined)
  }

  #finish(failure: RelayOutcome<S>['failure']): void {
    this.#done = true
    const outcome: RelayOutcome<S> = {
      bytesAtoB: this.bytesAtoB,
      bytesBtoA: this.bytesBtoA,
      firstEof: this.#firstEof,
    }
    if (failure !== undefined) outcome.failure = failure
    this.#opts.onDone(outcome)
  }
}
