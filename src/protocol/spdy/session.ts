/**
 * The server side of a SPDY/3.1 session, as the peer of spdystream (kubectl and
 * every client-go program). See docs/spdy.md and docs/kubernetes-protocols.md.
 *
 * The session runs over any byte `Duplex`: the upgraded TLS socket (protocol A) or
 * a byte stream made of WebSocket binary messages (protocol B, see ws-stream.ts).
 * It knows nothing of port-forward; {@link SpdySession} emits a {@link SpdyStream}
 * per SYN_STREAM and the port-forward layer (portforward.ts) gives them meaning.
 *
 * Design points, each from a section of docs/kubernetes-protocols.md:
 * - **No flow control** (docs/kubernetes-protocols.md#no-flow-control): spdystream
 *   never sends WINDOW_UPDATE, so none is awaited or sent; SETTINGS and
 *   WINDOW_UPDATE are parsed and ignored.
 *   Backpressure is TCP's: a stream write reports backpressure while the transport
 *   wants a drain, and the session stops reading the transport while any stream's
 *   readable buffer is full (head-of-line, exactly like spdystream on the kubelet).
 * - **Nothing before the client's first frame**
 *   (docs/kubernetes-protocols.md#nothing-after-the-101): bytes glued to the 101 are
 *   lost by the client, so everything the session writes before the client's first
 *   byte (a GOAWAY, a PING) waits.
 * - **One inflate, one deflate, wire order** (docs/kubernetes-protocols.md#header-blocks):
 *   SYN_STREAM header blocks are inflated one at a time with parsing stopped meanwhile;
 *   a stream's DATA, FIN and RST wait until its SYN_REPLY (compressed in order) has
 *   been written.
 * - **Only SYN_REPLY, DATA, RST_STREAM, PING and GOAWAY are ever sent**
 *   (docs/kubernetes-protocols.md#control-frames).
 * - A malformed frame is session-fatal: GOAWAY PROTOCOL_ERROR, then the transport is
 *   ended (and destroyed if the peer does not close within `closeTimeoutMs`).
 *
 * Errors never surface as `'error'` events (an unhandled one would crash the
 * process): the session reports its fault in `'close'`, a stream reset by the peer
 * emits `'reset'` and is destroyed without an error.
 *
 * @module
 */
import { EventEmitter } from 'node:events'
import { Duplex } from 'node:stream'
import { performance } from 'node:perf_hooks'
import {
  FLAG_FIN,
  FLAG_UNIDIRECTIONAL,
  FRAME_HEADER_SIZE,
  FrameParser,
  GoawayStatus,
  MAX_FRAME_LENGTH,
  RstStatus,
  SpdyProtocolError,
  encodeDataFrame,
  encodeDataHeader,
  encodeGoaway,
  encodePing,
  encodeRstStream,
  encodeSynReply,
} from './frames.js'
import type { ControlFrame, DataPiece, SpdyFrame, SynStreamFrame } from './frames.js'
import { HeaderCodec } from './header-codec.js'
import type { HeaderInput, SpdyHeaders } from './header-codec.js'

/** Default cap on the payload of each DATA frame we write. */
export const DEFAULT_MAX_DATA_FRAME_SIZE = 64 * 1024
/** Default number of open client streams per session (kubectl uses 2 per TCP connection). */
export const DEFAULT_MAX_CONCURRENT_STREAMS = 2000
/** Default readable and writable high-water mark of each stream. */
export const DEFAULT_STREAM_HIGH_WATER_MARK = 256 * 1024
/** Default time the peer gets to close the transport after we ended it. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 5000

/** Payloads up to this size are copied next to their frame header (one write). */
const SMALL_PAYLOAD = 4096
const EMPTY = Buffer.alloc(0)
const noop = (): void => {}

/** Options for {@link SpdySession}. */
export interface SpdySessionOptions {
  /**
   * Bytes the client sent right after its upgrade request (the `head` of Node's
   * `'upgrade'` event): the start of its first frame, if any.
   */
  head?: Buffer
  /** Largest control frame accepted (default 64 KiB); larger is session-fatal. */
  maxControlFrameSize?: number
  /** Largest inflated header block (default 64 KiB); larger is session-fatal. */
  maxHeaderBlockSize?: number
  /** Largest DATA payload written per frame (default 64 KiB, at most 2^24-1). */
  maxDataFrameSize?: number
  /** Open streams allowed; more are refused with RST REFUSED_STREAM (default 2000). */
  maxConcurrentStreams?: number
  /** High-water mark of each stream's buffers (default 256 KiB). */
  streamHighWaterMark?: number
  /** How long the peer gets to close after we end the transport (default 5 s). */
  closeTimeoutMs?: number
}

/** Options for {@link SpdySession.close}. */
export interface SpdyCloseOptions {
  /** GOAWAY status (default OK). */
  status?: number
  /**
   * When true, refuse new streams (RST REFUSED_STREAM) now but send GOAWAY and end
   * the transport only once every open stream has finished. kubectl ends its whole
   * session on a GOAWAY, so this is how to drain it without cutting live streams.
   */
  graceful?: boolean
}

/** Events of {@link SpdySession}. */
export interface SpdySessionEvents {
  /** A client stream was opened. Call `reply()` (or write) to accept it, or `reset()`. */
  stream: [stream: SpdyStream]
  /** The client sent GOAWAY: it opens no more streams and is about to close. */
  goaway: [info: { lastGoodStreamId: number; status: number }]
  /**
   * The session is over: the transport closed and every stream was destroyed.
   * `error` says why when it was not a clean close (protocol error, transport error).
   */
  close: [error: Error | undefined]
}

/** Events of {@link SpdyStream}, besides the Duplex ones. */
export interface SpdyStreamResetInfo {
  /** RST_STREAM status (see `RstStatus`). */
  status: number
}

type WriteCallback = (err?: Error | null) => void

interface StreamHost {
  reply(stream: SpdyStream, headers: HeaderInput): void
  writeData(stream: SpdyStream, chunk: Buffer, fin: boolean, cb: WriteCallback): void
  reset(stream: SpdyStream, status: number): void
  read(stream: SpdyStream): void
  destroyed(stream: SpdyStream): void
}

interface StreamState {
  host: StreamHost
  reply: 'none' | 'pending' | 'sent'
  /** A write that arrived before the SYN_REPLY was on the wire. */
  pending: { chunk: Buffer; cb: WriteCallback }[]
  /** end() before the SYN_REPLY was on the wire. */
  pendingFin: WriteCallback | undefined
  /** reset() before the SYN_REPLY was on the wire. */
  pendingRst: number | undefined
  localFin: boolean
  remoteFin: boolean
  rstSent: boolean
  rstReceived: number | undefined
}

const kState = Symbol('pfgate.spdy.stream')

/**
 * One client-initiated SPDY stream, as a `Duplex`:
 * - readable: the DATA the client sends; `'end'` when it sends FIN;
 * - writable: `write()` sends DATA (split into frames of at most
 *   `maxDataFrameSize`), `end()` sends DATA with FIN (a half-close);
 * - {@link reply} sends SYN_REPLY (done for you by the first write or end);
 * - {@link reset} sends RST_STREAM and destroys the stream; `destroy()` on a stream
 *   that has not finished both ways sends RST_STREAM CANCEL;
 * - a RST_STREAM from the client emits `'reset'` ({@link SpdyStreamResetInfo}), then
 *   destroys the stream without an error (so `'close'` comes without `'end'`).
 */
export class SpdyStream extends Duplex {
  /** The client's stream id (odd). */
  readonly id: number
  /** The SYN_STREAM headers (names lower-case). */
  readonly headers: SpdyHeaders
  /** SYN_STREAM priority, 0 (highest) to 7. */
  readonly priority: number
  /** @internal */
  readonly [kState]: StreamState

  /** @internal Streams are created by {@link SpdySession}. */
  constructor(
    host: StreamHost,
    id: number,
    headers: SpdyHeaders,
    priority: number,
    highWaterMark: number,
  ) {
    super({
      allowHalfOpen: true,
      readableHighWaterMark: highWaterMark,
      writableHighWaterMark: highWaterMark,
      decodeStrings: true,
    })
    this.id = id
    this.headers = headers
    this.priority = priority
    this[kState] = {
      host,
      reply: 'none',
      pending: [],
      pendingFin: undefined,
      pendingRst: undefined,
      localFin: false,
      remoteFin: false,
      rstSent: false,
      rstReceived: undefined,
    }
  }

  /** The first value of a SYN_STREAM header, or undefined. */
  header(name: string): string | undefined {
    return this.headers.get(name)?.[0]
  }

  /** The RST_STREAM status the client sent, if it reset this stream. */
  get resetStatus(): number | undefined {
    return this[kState].rstReceived
  }

  /** True once reply() was called (the SYN_REPLY may still be compressing). */
  get replied(): boolean {
    return this[kState].reply !== 'none'
  }

  /**
   * Accepts the stream with a SYN_REPLY. Port-forward replies with no headers, as
   * the kubelet does (docs/kubernetes-protocols.md#header-blocks). Idempotent.
   *
   * @throws TypeError on an invalid header name.
   */
  reply(headers: HeaderInput = []): void {
    const st = this[kState]
    if (st.reply !== 'none' || this.destroyed) return
    st.reply = 'pending'
    try {
      st.host.reply(this, headers)
    } catch (err) {
      st.reply = 'none'
      throw err
    }
  }

  /**
   * Sends RST_STREAM (default CANCEL) and destroys the stream. If the SYN_REPLY is
   * still being compressed, the RST follows it on the wire. No-op once reset or
   * destroyed.
   */
  reset(status: number = RstStatus.CANCEL): void {
    const st = this[kState]
    if (this.destroyed || st.rstSent || st.rstReceived !== undefined) return
    st.rstSent = true
    st.host.reset(this, status)
    this.destroy()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: WriteCallback): void {
    this.#writeChunk(chunk, cb)
  }

  #writeChunk(chunk: Buffer, cb: WriteCallback): void {
    const st = this[kState]
    if (st.reply === 'none') this.reply()
    if (st.reply !== 'sent') {
      st.pending.push({ chunk, cb })
      return
    }
    st.host.writeData(this, chunk, false, cb)
  }

  override _writev(chunks: { chunk: Buffer }[], cb: WriteCallback): void {
    // Several writes queued up (we were waiting for a drain or for the SYN_REPLY):
    // small ones travel as one DATA frame, large ones keep their own frames.
    let total = 0
    for (const c of chunks) total += c.chunk.length
    if (total <= SMALL_PAYLOAD * 4) {
      this.#writeChunk(
        Buffer.concat(
          chunks.map((c) => c.chunk),
          total,
        ),
        cb,
      )
      return
    }
    const last = chunks.length - 1
    for (let i = 0; i < last; i++) this.#writeChunk(chunks[i]!.chunk, noop)
    this.#writeChunk(chunks[last]!.chunk, cb)
  }

  override _final(cb: WriteCallback): void {
    const st = this[kState]
    if (st.reply === 'none') this.reply()
    if (st.reply !== 'sent') {
      st.pendingFin = cb
      return
    }
    st.host.writeData(this, EMPTY, true, cb)
  }

  override _read(): void {
    this[kState].host.read(this)
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this[kState].host.destroyed(this)
    cb(err)
  }
}

type SessionState = 'open' | 'draining' | 'closing' | 'closed'

interface PendingPing {
  start: number
  cb: (err: Error | null, rttMs?: number) => void
}

/**
 * A server-side SPDY/3.1 session over `transport`.
 *
 * @example
 * ```ts
 * server.on('upgrade', (req, socket, head) => {
 *   socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n' +
 *     'Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n')
 *   const session = new SpdySession(socket, { head })
 *   session.on('stream', (stream) => { stream.reply(); stream.pipe(stream) })
 *   session.on('close', (err) => log.info({ err }, 'spdy session closed'))
 * })
 * ```
 */
export class SpdySession extends EventEmitter<SpdySessionEvents> {
  readonly #transport: Duplex
  #parser: FrameParser
  readonly #codec: HeaderCodec
  readonly #streams = new Map<number, SpdyStream>()
  readonly #congested = new Set<SpdyStream>()
  readonly #maxDataFrame: number
  readonly #maxStreams: number
  readonly #hwm: number
  readonly #closeTimeoutMs: number
  readonly #host: StreamHost
  #state: SessionState = 'open'
  #clientSpoke = false
  #prelude: Buffer[] = []
  #decoding = false
  #pumping = false
  #transportPaused = false
  #lastClientStreamId = 0
  #lastGoodStreamIdValue = 0
  #goawayReceived = false
  /** GOAWAY status for the end of a graceful close. */
  #drainStatus: number = GoawayStatus.OK
  #drainWaiters: WriteCallback[] = []
  #closeTimer: NodeJS.Timeout | undefined
  #closeError: Error | undefined
  #pings = new Map<number, PendingPing>()
  #nextPingId = 2
  #bytesReadValue = 0
  #bytesWrittenValue = 0

  constructor(transport: Duplex, options: SpdySessionOptions = {}) {
    super()
    this.#transport = transport
    this.#parser = new FrameParser({ maxControlFrameSize: options.maxControlFrameSize })
    this.#codec = new HeaderCodec({ maxHeaderBlockSize: options.maxHeaderBlockSize })
    this.#maxDataFrame = options.maxDataFrameSize ?? DEFAULT_MAX_DATA_FRAME_SIZE
    if (!Number.isInteger(this.#maxDataFrame) || this.#maxDataFrame < 1) {
      throw new RangeError('maxDataFrameSize must be a positive integer')
    }
    if (this.#maxDataFrame > MAX_FRAME_LENGTH) this.#maxDataFrame = MAX_FRAME_LENGTH
    this.#maxStreams = options.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS
    this.#hwm = options.streamHighWaterMark ?? DEFAULT_STREAM_HIGH_WATER_MARK
    this.#closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS
    this.#host = {
      reply: (s, h) => this.#sendReply(s, h),
      writeData: (s, c, f, cb) => this.#writeData(s, c, f, cb),
      reset: (s, status) => this.#sendReset(s, status),
      read: (s) => this.#onStreamRead(s),
      destroyed: (s) => this.#onStreamDestroyed(s),
    }

    transport.on('data', this.#onTransportData)
    transport.on('end', this.#onTransportEnd)
    transport.on('error', this.#onTransportError)
    transport.on('close', this.#onTransportClose)
    transport.on('drain', this.#onTransportDrain)
    const head = options.head
    if (transport.destroyed) {
      process.nextTick(this.#onTransportClose)
    } else {
      if (head !== undefined && head.length > 0) {
        process.nextTick(() => this.#onTransportData(head))
      }
      transport.resume()
    }
  }

  /** Highest client stream id accepted so far (what a GOAWAY from us names). */
  get lastGoodStreamId(): number {
    return this.#lastGoodStreamIdValue
  }

  /** Number of open (not yet finished both ways) streams. */
  get streamCount(): number {
    return this.#streams.size
  }

  /** True once the session ended (after `'close'`). */
  get closed(): boolean {
    return this.#state === 'closed'
  }

  /** True while the session accepts new streams. */
  get accepting(): boolean {
    return this.#state === 'open' && !this.#goawayReceived
  }

  /** SPDY bytes read from the transport. */
  get bytesRead(): number {
    return this.#bytesReadValue
  }

  /** SPDY bytes written to the transport (including queued ones). */
  get bytesWritten(): number {
    return this.#bytesWrittenValue
  }

  /**
   * Sends a PING (even id) and calls back with the round-trip time in ms, or with an
   * error if the session closes first. The caller owns any timeout.
   */
  ping(cb: (err: Error | null, rttMs?: number) => void): void {
    if (this.#state !== 'open' && this.#state !== 'draining') {
      process.nextTick(cb, new Error('SPDY session is closed'))
      return
    }
    const id = this.#nextPingId
    this.#nextPingId = id >= 0xfffffffe ? 2 : id + 2
    this.#pings.set(id, { start: performance.now(), cb })
    this.#writeRaw(encodePing(id))
  }

  /**
   * Ends the session: GOAWAY (last good stream id, `status`), then the transport is
   * ended and destroyed if the peer has not closed within `closeTimeoutMs`. Open
   * streams are destroyed, unless `graceful` (see {@link SpdyCloseOptions}).
   * Before the client's first frame no GOAWAY is sent (it could not be read).
   */
  close(options: SpdyCloseOptions = {}): void {
    const status = options.status ?? GoawayStatus.OK
    if (options.graceful === true) {
      if (this.#state === 'open') {
        this.#state = 'draining'
        this.#drainStatus = status
        this.#maybeFinishDrain()
      }
      return
    }
    if (this.#state !== 'open' && this.#state !== 'draining') return
    this.#shutdown(status, undefined)
  }

  /** Destroys the transport and every stream at once. `'close'` follows with `error`. */
  destroy(error?: Error): void {
    if (this.#state === 'closed') return
    this.#closeError ??= error
    this.#state = 'closing'
    this.#abortStreams()
    this.#transport.destroy()
  }

  // -------------------------------------------------------------------------
  // Reading

  readonly #onTransportData = (chunk: Buffer): void => {
    if (this.#state === 'closed') return
    if (!Buffer.isBuffer(chunk)) {
      this.#protocolError(new SpdyProtocolError('transport delivered text, not bytes'))
      return
    }
    if (chunk.length === 0) return
    this.#bytesReadValue += chunk.length
    if (!this.#clientSpoke) {
      this.#clientSpoke = true
      const prelude = this.#prelude
      this.#prelude = []
      for (const buf of prelude) this.#transportWrite(buf)
    }
    this.#parser.push(chunk)
    this.#pump()
  }

  /** Parses and handles frames until blocked or out of bytes. */
  #pump(): void {
    if (this.#pumping) return
    this.#pumping = true
    try {
      while (this.#state !== 'closed' && !this.#decoding && this.#congested.size === 0) {
        const frame = this.#parser.next()
        if (frame === null) break
        this.#handleFrame(frame)
      }
    } catch (err) {
      // A parser fault is a protocol error; anything else thrown below us (a stream
      // consumer's 'data' listener) is contained to this session.
      this.#protocolError(
        err instanceof SpdyProtocolError
          ? err
          : new SpdyProtocolError(
              `internal error: ${err instanceof Error ? err.message : String(err)}`,
              GoawayStatus.INTERNAL_ERROR,
            ),
      )
    } finally {
      this.#pumping = false
    }
    this.#updateFlow()
  }

  #updateFlow(): void {
    if (this.#state === 'closed') return
    const wantBytes = !this.#decoding && this.#congested.size === 0
    if (wantBytes && this.#transportPaused) {
      this.#transportPaused = false
      this.#transport.resume()
    } else if (!wantBytes && !this.#transportPaused) {
      this.#transportPaused = true
      this.#transport.pause()
    }
  }

  #handleFrame(frame: SpdyFrame): void {
    if (frame.kind === 'data') {
      this.#handleData(frame)
      return
    }
    this.#handleControl(frame)
  }

  #handleData(piece: DataPiece): void {
    const stream = this.#streams.get(piece.streamId)
    // DATA for a stream we no longer have (reset, finished, refused) is dropped, as
    // spdystream does; frames may still be in flight when we reset.
    if (stream === undefined) return
    const st = stream[kState]
    if (st.remoteFin) {
      if (piece.data.length > 0 || piece.fin) {
        this.#resetStream(stream, RstStatus.STREAM_ALREADY_CLOSED)
      }
      return
    }
    if (piece.data.length > 0 && !stream.push(piece.data)) {
      // (A 'data' listener may have destroyed the stream or the session meanwhile.)
      if (this.#streams.get(stream.id) === stream && this.#state !== 'closing') {
        this.#congested.add(stream)
      }
    }
    if (piece.fin) {
      st.remoteFin = true
      stream.push(null)
      this.#maybeRetire(stream)
    }
  }

  #handleControl(frame: ControlFrame): void {
    switch (frame.kind) {
      case 'syn_stream':
        this.#decodeThen(frame.headerBlock, (err, headers) =>
          this.#onSynStream(frame, err, headers),
        )
        return
      case 'syn_reply':
      case 'headers':
        // We never open streams and never act on HEADERS, but the block must still go
        // through the inflate to keep it in step with the client's deflate.
        this.#decodeThen(frame.headerBlock, () => {})
        return
      case 'rst_stream': {
        const stream = this.#streams.get(frame.streamId)
        if (stream === undefined) return
        const st = stream[kState]
        st.rstReceived = frame.status
        this.#streams.delete(stream.id)
        this.#congested.delete(stream)
        stream.emit('reset', { status: frame.status } satisfies SpdyStreamResetInfo)
        stream.destroy()
        this.#maybeFinishDrain()
        return
      }
      case 'ping':
        if (frame.id % 2 === 1) {
          // The client's ping: echo it (kubectl pings every 5 s, or 10 s in the tunnel).
          this.#writeRaw(encodePing(frame.id))
        } else {
          const pending = this.#pings.get(frame.id)
          if (pending !== undefined) {
            this.#pings.delete(frame.id)
            pending.cb(null, performance.now() - pending.start)
          }
        }
        return
      case 'goaway':
        if (!this.#goawayReceived) {
          this.#goawayReceived = true
          this.emit('goaway', { lastGoodStreamId: frame.lastGoodStreamId, status: frame.status })
          this.#maybeFinishDrain()
        }
        return
      case 'settings':
      case 'window_update':
      case 'unknown':
        // No flow control (docs/kubernetes-protocols.md#no-flow-control); unknown types
        // are ignored per SPDY/3.
        return
    }
  }

  /** Stops parsing until `block` is inflated (header blocks are strictly ordered). */
  #decodeThen(
    block: Buffer,
    then: (err: Error | null, headers: SpdyHeaders | undefined) => void,
  ): void {
    this.#decoding = true
    this.#codec.decode(block, (err, headers) => {
      this.#decoding = false
      if (this.#state === 'closed') return
      if (err !== null && this.#codec.error !== undefined) {
        // The zlib stream itself is broken (or a block was too large): fatal.
        this.#protocolError(err)
        return
      }
      try {
        then(err, headers)
      } catch (e) {
        this.#protocolError(
          new SpdyProtocolError(
            `internal error: ${e instanceof Error ? e.message : String(e)}`,
            GoawayStatus.INTERNAL_ERROR,
          ),
        )
        return
      }
      this.#pump()
    })
  }

  #onSynStream(frame: SynStreamFrame, err: Error | null, headers: SpdyHeaders | undefined): void {
    if (this.#state === 'closing' || this.#state === 'closed') return
    const id = frame.streamId
    if (id % 2 === 0 || id <= this.#lastClientStreamId) {
      // spdystream answers a decreasing (or server-parity) id with PROTOCOL_ERROR; a
      // reused id also invalidates the stream that holds it.
      const existing = this.#streams.get(id)
      if (existing !== undefined) this.#resetStream(existing, RstStatus.PROTOCOL_ERROR)
      else this.#writeRaw(encodeRstStream(id, RstStatus.PROTOCOL_ERROR))
      return
    }
    this.#lastClientStreamId = id
    if (err !== null || headers === undefined) {
      this.#writeRaw(encodeRstStream(id, RstStatus.PROTOCOL_ERROR))
      return
    }
    if (
      this.#state !== 'open' ||
      this.#goawayReceived ||
      (frame.flags & FLAG_UNIDIRECTIONAL) !== 0 ||
      this.#streams.size >= this.#maxStreams ||
      this.listenerCount('stream') === 0
    ) {
      this.#writeRaw(encodeRstStream(id, RstStatus.REFUSED_STREAM))
      return
    }
    const stream = new SpdyStream(this.#host, id, headers, frame.priority, this.#hwm)
    this.#streams.set(id, stream)
    this.#lastGoodStreamIdValue = id
    if ((frame.flags & FLAG_FIN) !== 0) {
      stream[kState].remoteFin = true
      stream.push(null)
    }
    this.emit('stream', stream)
  }

  #onStreamRead(stream: SpdyStream): void {
    if (this.#congested.delete(stream) && this.#congested.size === 0) this.#pump()
  }

  // -------------------------------------------------------------------------
  // Writing

  /** Writes one whole frame, or holds it until the client has spoken. */
  #writeRaw(frame: Buffer): void {
    if (!this.#canWrite()) return
    this.#bytesWrittenValue += frame.length
    if (!this.#clientSpoke) {
      this.#prelude.push(frame)
      return
    }
    this.#transportWrite(frame)
  }

  #transportWrite(buf: Buffer): void {
    this.#transport.write(buf)
  }

  #canWrite(): boolean {
    return (this.#state === 'open' || this.#state === 'draining') && this.#transport.writable
  }

  #sendReply(stream: SpdyStream, headers: HeaderInput): void {
    // Compressed in call order, written in completion order = call order.
    this.#codec.encode(headers, (err, block) => {
      if (this.#state === 'closed' || this.#state === 'closing') return
      if (err !== null || block === undefined) {
        this.#protocolError(
          new SpdyProtocolError(
            `header compression failed: ${err?.message ?? 'no output'}`,
            GoawayStatus.INTERNAL_ERROR,
          ),
        )
        return
      }
      const st = stream[kState]
      // Written even when the stream is gone by now: the client's inflate expects
      // this block next (spdystream drops replies for streams it no longer has).
      this.#writeRaw(encodeSynReply(stream.id, block))
      st.reply = 'sent'
      const pending = st.pending
      st.pending = []
      if (!stream.destroyed) {
        for (const p of pending) this.#writeData(stream, p.chunk, false, p.cb)
        const fin = st.pendingFin
        st.pendingFin = undefined
        if (fin !== undefined) this.#writeData(stream, EMPTY, true, fin)
      }
      if (st.pendingRst !== undefined) {
        this.#writeRaw(encodeRstStream(stream.id, st.pendingRst))
        st.pendingRst = undefined
      }
    })
  }

  #writeData(stream: SpdyStream, chunk: Buffer, fin: boolean, cb: WriteCallback): void {
    const st = stream[kState]
    if (!this.#canWrite() || st.rstSent || st.rstReceived !== undefined) {
      // The stream is being torn down; its 'close' follows. Erroring the write would
      // only turn that into an 'error' event someone may not listen to.
      cb()
      return
    }
    const t = this.#transport
    const max = this.#maxDataFrame
    const total = chunk.length
    this.#bytesWrittenValue += total + FRAME_HEADER_SIZE * Math.max(1, Math.ceil(total / max))
    if (total <= SMALL_PAYLOAD) {
      t.write(encodeDataFrame(stream.id, chunk, fin))
    } else {
      // Header and payload go out together through writev, without copying the payload.
      t.cork()
      for (let off = 0; off < total; off += max) {
        const n = Math.min(max, total - off)
        const last = off + n >= total
        t.write(encodeDataHeader(stream.id, n, fin && last))
        t.write(n === total ? chunk : chunk.subarray(off, off + n))
      }
      t.uncork()
    }
    if (fin) {
      st.localFin = true
      this.#maybeRetire(stream)
    }
    if (t.writableNeedDrain) this.#drainWaiters.push(cb)
    else cb()
  }

  readonly #onTransportDrain = (): void => {
    const waiters = this.#drainWaiters
    this.#drainWaiters = []
    for (const cb of waiters) cb()
  }

  #sendReset(stream: SpdyStream, status: number): void {
    const st = stream[kState]
    if (this.#streams.get(stream.id) === stream) this.#streams.delete(stream.id)
    const wasCongested = this.#congested.delete(stream)
    if (st.reply === 'pending') st.pendingRst = status
    else this.#writeRaw(encodeRstStream(stream.id, status))
    this.#maybeFinishDrain()
    if (wasCongested && this.#congested.size === 0) this.#schedulePump()
  }

  /** Resets a stream from the session side (protocol faults on one stream). */
  #resetStream(stream: SpdyStream, status: number): void {
    stream.reset(status)
  }

  #onStreamDestroyed(stream: SpdyStream): void {
    const st = stream[kState]
    st.pending = []
    st.pendingFin = undefined
    const wasCongested = this.#congested.delete(stream)
    if (this.#streams.get(stream.id) === stream) {
      this.#streams.delete(stream.id)
      // Destroyed by its user before finishing both ways: tell the client.
      if (
        !st.rstSent &&
        st.rstReceived === undefined &&
        !(st.localFin && st.remoteFin) &&
        this.#canWrite()
      ) {
        st.rstSent = true
        if (st.reply === 'pending') st.pendingRst = RstStatus.CANCEL
        else this.#writeRaw(encodeRstStream(stream.id, RstStatus.CANCEL))
      }
      this.#maybeFinishDrain()
    }
    if (wasCongested && this.#congested.size === 0) this.#schedulePump()
  }

  #schedulePump(): void {
    process.nextTick(() => this.#pump())
  }

  #maybeRetire(stream: SpdyStream): void {
    const st = stream[kState]
    if (st.localFin && st.remoteFin && this.#streams.get(stream.id) === stream) {
      this.#streams.delete(stream.id)
      this.#maybeFinishDrain()
    }
  }

  #maybeFinishDrain(): void {
    if (this.#streams.size > 0) return
    if (this.#state === 'draining') {
      this.#shutdown(this.#drainStatus, undefined)
    } else if (this.#state === 'open' && this.#goawayReceived) {
      // The client said goodbye and nothing is left: end our side too.
      this.#state = 'closing'
      this.#endTransport()
    }
  }

  // -------------------------------------------------------------------------
  // Ending

  #protocolError(err: Error): void {
    if (this.#state === 'closed') return
    this.#closeError ??= err
    if (this.#state === 'closing') return
    const status = err instanceof SpdyProtocolError ? err.goawayStatus : GoawayStatus.INTERNAL_ERROR
    this.#shutdown(status, err)
  }

  /** GOAWAY (if the client can read it), abort streams, end the transport. */
  #shutdown(status: number, err: Error | undefined): void {
    this.#closeError ??= err
    if (this.#clientSpoke) this.#writeRaw(encodeGoaway(this.#lastGoodStreamIdValue, status))
    this.#prelude = []
    this.#state = 'closing'
    this.#abortStreams()
    this.#endTransport()
  }

  #endTransport(): void {
    if (!this.#transport.writableEnded) this.#transport.end()
    if (this.#closeTimer === undefined && this.#state !== 'closed') {
      this.#closeTimer = setTimeout(() => {
        this.#closeTimer = undefined
        this.#transport.destroy()
      }, this.#closeTimeoutMs)
    }
    // Keep reading (and discarding) so the peer's close reaches us.
    this.#congested.clear()
    this.#decoding = false
    if (this.#transportPaused) {
      this.#transportPaused = false
      this.#transport.resume()
    }
  }

  #abortStreams(): void {
    const streams = [...this.#streams.values()]
    this.#streams.clear()
    this.#congested.clear()
    for (const s of streams) s.destroy()
  }

  readonly #onTransportEnd = (): void => {
    if (this.#state === 'closed') return
    if (!this.#parser.atFrameBoundary && !this.#parser.failed) {
      this.#closeError ??= new SpdyProtocolError('connection ended inside a frame')
    }
    if (this.#state !== 'closing') {
      this.#state = 'closing'
      this.#abortStreams()
      this.#endTransport()
    }
  }

  readonly #onTransportError = (err: Error): void => {
    if (this.#state === 'closed') return
    this.#closeError ??= err
    this.#state = 'closing'
    this.#abortStreams()
    this.#transport.destroy()
  }

  readonly #onTransportClose = (): void => {
    if (this.#state === 'closed') return
    this.#state = 'closed'
    if (this.#closeTimer !== undefined) {
      clearTimeout(this.#closeTimer)
      this.#closeTimer = undefined
    }
    const t = this.#transport
    t.off('data', this.#onTransportData)
    t.off('end', this.#onTransportEnd)
    t.off('close', this.#onTransportClose)
    t.off('drain', this.#onTransportDrain)
    // 'error' stays: a transport may still report one after 'close' in odd cases,
    // and an unhandled one would crash the process.
    this.#abortStreams()
    this.#codec.close()
    this.#drainWaiters = []
    this.#prelude = []
    this.#parser = new FrameParser()
    const pings = [...this.#pings.values()]
    this.#pings.clear()
    const closedErr = new Error('SPDY session closed')
    for (const p of pings) process.nextTick(p.cb, closedErr)
    this.emit('close', this.#closeError)
  }
}
