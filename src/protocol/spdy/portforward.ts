/**
 * Kubernetes port-forward on top of a {@link SpdySession} (protocols A and B,
 * docs/kubernetes-protocols.md#port-forward-over-spdy): validates each stream's
 * headers, replies at once, pairs the error and data streams of one forwarded TCP
 * connection by `requestid`, and hands the gateway one {@link SpdyForwardRequest} per
 * pair. It never dials anything: the caller plugs its own relay onto `request.data`.
 *
 * Rules kept here (docs/kubernetes-protocols.md#port-forward-over-spdy):
 * - every valid SYN_STREAM gets its SYN_REPLY immediately, the error stream's before
 *   the data stream exists (kubectl waits for it, 30 s);
 * - a stream with no valid `port` (1–65535) or `streamtype` (`error`/`data`) is
 *   reset with RST_STREAM CANCEL and never replied to, as the kubelet does;
 * - a pair not complete within `streamCreationTimeoutMs` (default 30 s) gets
 *   "timed out waiting for streams" on its error stream;
 * - the error stream is ALWAYS finished (FIN), or kubectl never closes the local
 *   socket; the normal end is error-stream FIN, then data-stream FIN.
 *
 * @module
 */
import type { Duplex } from 'node:stream'
import { RstStatus } from './frames.js'
import type { SpdySession, SpdyStream } from './session.js'

/** The SPDY subprotocol (`X-Stream-Protocol-Version`) of port-forward. */
export const PORT_FORWARD_PROTOCOL = 'portforward.k8s.io'
/** Stream header naming the stream's role. */
export const STREAM_TYPE_HEADER = 'streamtype'
/** Stream header with the remote port. */
export const STREAM_PORT_HEADER = 'port'
/** Stream header pairing the error and data streams of one connection. */
export const REQUEST_ID_HEADER = 'requestid'
/** `streamtype` of the stream that carries error text (server → client). */
export const STREAM_TYPE_ERROR = 'error'
/** `streamtype` of the stream that carries the TCP bytes. */
export const STREAM_TYPE_DATA = 'data'
/** The kubelet's default `streamCreationTimeout`. */
export const DEFAULT_STREAM_CREATION_TIMEOUT_MS = 30_000

/**
 * One forwarded TCP connection from kubectl. The relay contract:
 *
 * - **client → pod**: read `data`; its `'end'` is the client's half-close (DATA FIN):
 *   half-close toward the pod and keep relaying the pod's bytes
 *   (docs/kubernetes-protocols.md#one-forwarded-connection).
 * - **pod → client**: write to `data` (backpressure as with any Writable); when the
 *   pod's side ends, call {@link finish}. Keep reading `data` until its `'end'` (the
 *   client may still be sending); if the pod connection is gone for good, drain it
 *   with `data.resume()` or call {@link reset}. **An unread `data` stream stops the
 *   whole session** once its buffer is full: there is no SPDY flow control, only
 *   TCP's, so spdystream and this session stop reading the connection (head-of-line
 *   blocking, docs/kubernetes-protocols.md#no-flow-control).
 * - **failure** (the pod refused, the agent failed): call {@link fail} with one
 *   human-readable line, as the kubelet does. kubectl ≥ 1.23 then ends its whole
 *   session (every other forwarded connection too,
 *   docs/kubernetes-protocols.md#the-error-stream), so use it only for real
 *   per-connection failures. Before any byte was relayed this is the right answer
 *   to "connection refused".
 * - **abort** (admin kill, limits): call {@link reset}.
 * - `data` emits `'close'` when the client side is gone for any reason (both
 *   directions finished, client RST, session lost): stop relaying and close the pod
 *   connection if it is still open. Whatever happens, the error stream gets its FIN.
 *
 * All three methods are idempotent and safe after the session died.
 */
export interface SpdyForwardRequest {
  /** The remote port, from the data stream's `port` header. */
  readonly port: number
  /** The client's `requestid` (or one made up, as the kubelet does, for old clients). */
  readonly requestId: string
  /** SPDY stream id of the data stream (for logs). */
  readonly dataStreamId: number
  /** SPDY stream id of the error stream (for logs). */
  readonly errorStreamId: number
  /** The TCP connection's bytes; see the relay contract above. */
  readonly data: Duplex
  /** True once fail/finish/reset ran or the data stream closed. */
  readonly settled: boolean
  /**
   * Writes `message` on the error stream, then FINs the error stream and the data
   * stream. Client bytes still arriving on `data` are discarded from then on.
   */
  fail(message: string): void
  /** Normal end: FIN on the error stream, then FIN on the data stream after queued data. */
  finish(): void
  /** Abort: RST_STREAM CANCEL on the data stream, FIN on the error stream. */
  reset(): void
}

/** Why a stream or a pair was turned away (for logs and audit). */
export interface PortForwardStreamIssue {
  kind: 'rejected' | 'duplicate' | 'timeout'
  /** The stream concerned (for a timeout, the one that arrived). */
  streamId: number
  requestId?: string
  port?: number
  message: string
}

/** Options for {@link servePortForward}. */
export interface SpdyPortForwardOptions {
  /**
   * Called once per complete error+data pair. Exceptions are caught and turn into
   * `request.fail('internal error')` for that connection only.
   */
  onRequest: (request: SpdyForwardRequest) => void
  /** Called for each rejected stream, duplicate stream and pairing timeout. */
  onStreamIssue?: (issue: PortForwardStreamIssue) => void
  /** How long the first stream of a pair waits for its partner (default 30 s). */
  streamCreationTimeoutMs?: number
}

/** Handle returned by {@link servePortForward}. */
export interface SpdyPortForwardServer {
  /** Pairs still waiting for their partner stream. */
  readonly pendingPairs: number
  /** Stops listening to the session and drops pending pairs (their streams are reset). */
  close(): void
}

/** Parses a `port` header as the kubelet does (`strconv.ParseUint(s, 10, 16)`, > 0). */
export function parseStreamPort(value: string | undefined): number | undefined {
  if (value === undefined || !/^[0-9]{1,5}$/.test(value)) return undefined
  const n = Number(value)
  return n >= 1 && n <= 65535 ? n : undefined
}

interface Pair {
  requestId: string
  error: SpdyStream | undefined
  data: SpdyStream | undefined
  timer: NodeJS.Timeout | undefined
  request: ForwardRequest | undefined
}

class ForwardRequest implements SpdyForwardRequest {
  readonly port: number
  readonly requestId: string
  readonly dataStreamId: number
  readonly errorStreamId: number
  readonly data: Duplex
  readonly #errorStream: SpdyStream
  readonly #dataStream: SpdyStream
  #settledValue = false
  readonly #onSettled: () => void

  constructor(
    port: number,
    requestId: string,
    errorStream: SpdyStream,
    dataStream: SpdyStream,
    onSettled: () => void,
  ) {
    this.port = port
    this.requestId = requestId
    this.#errorStream = errorStream
    this.#dataStream = dataStream
    this.data = dataStream
    this.dataStreamId = dataStream.id
    this.errorStreamId = errorStream.id
    this.#onSettled = onSettled
    // However the data stream ends (the relay called data.end() itself, the client
    // reset it, the session died), the error stream must still get its FIN.
    dataStream.once('finish', () => this.#settle())
    dataStream.once('close', () => this.#settle())
  }

  get settled(): boolean {
    return this.#settledValue
  }

  fail(message: string): void {
    if (this.#settledValue) return
    this.#settledValue = true
    const err = this.#errorStream
    if (!err.destroyed && !err.writableEnded) {
      if (message.length > 0) err.write(message)
      err.end()
    }
    // Nobody relays the client's bytes any more: drop them, so an unread data
    // stream never holds up the session (its reads stop for everyone,
    // docs/kubernetes-protocols.md#no-flow-control).
    const data = this.#dataStream
    if (!data.destroyed) {
      data.unpipe()
      data.resume()
    }
    endStream(data)
    this.#onSettled()
  }

  finish(): void {
    if (this.#settledValue) return
    this.#settledValue = true
    endStream(this.#errorStream)
    endStream(this.#dataStream)
    this.#onSettled()
  }

  reset(): void {
    if (this.#settledValue) return
    this.#settledValue = true
    this.#dataStream.reset(RstStatus.CANCEL)
    endStream(this.#errorStream)
    this.#onSettled()
  }

  #settle(): void {
    if (this.#settledValue) return
    this.#settledValue = true
    endStream(this.#errorStream)
    this.#onSettled()
  }
}

function endStream(stream: SpdyStream): void {
  if (!stream.destroyed && !stream.writableEnded) stream.end()
}

/**
 * Serves port-forward on `session`: every SYN_STREAM is validated and replied to,
 * and every complete pair becomes a {@link SpdyForwardRequest} given to
 * `options.onRequest`. Everything is released when the session closes.
 *
 * @example
 * ```ts
 * servePortForward(session, {
 *   onRequest: (req) => {
 *     const pod = net.connect(podPort(req.port))
 *     pod.on('connect', () => { req.data.pipe(pod); pod.pipe(req.data, { end: false }) })
 *     pod.on('end', () => req.finish())
 *     pod.on('error', (e) => req.fail(`error forwarding port ${req.port}: ${e.message}`))
 *     req.data.on('close', () => pod.destroy())
 *   },
 * })
 * ```
 */
export function servePortForward(
  session: SpdySession,
  options: SpdyPortForwardOptions,
): SpdyPortForwardServer {
  const timeoutMs = options.streamCreationTimeoutMs ?? DEFAULT_STREAM_CREATION_TIMEOUT_MS
  const pairs = new Map<string, Pair>()
  let closed = false

  const issue = (i: PortForwardStreamIssue): void => {
    try {
      options.onStreamIssue?.(i)
    } catch {
      // A logging callback must not break the session.
    }
  }

  const dropPair = (pair: Pair): void => {
    if (pair.timer !== undefined) clearTimeout(pair.timer)
    pair.timer = undefined
    if (pairs.get(pair.requestId) === pair) pairs.delete(pair.requestId)
  }

  /** A lone stream of an incomplete pair went away: release its partner. */
  const abandon = (pair: Pair): void => {
    dropPair(pair)
    if (pair.error !== undefined) endStream(pair.error)
    if (pair.data !== undefined && !pair.data.destroyed) pair.data.reset(RstStatus.CANCEL)
  }

  const onTimeout = (pair: Pair): void => {
    pair.timer = undefined
    if (pair.request !== undefined || pairs.get(pair.requestId) !== pair) return
    const message = `(request=${pair.requestId}) timed out waiting for streams`
    const lone = pair.error ?? pair.data
    issue({
      kind: 'timeout',
      streamId: lone?.id ?? 0,
      requestId: pair.requestId,
      message,
    })
    const err = pair.error
    if (err !== undefined && !err.destroyed && !err.writableEnded) err.write(message)
    abandon(pair)
  }

  const complete = (pair: Pair, error: SpdyStream, data: SpdyStream): void => {
    if (pair.timer !== undefined) clearTimeout(pair.timer)
    pair.timer = undefined
    // The kubelet forwards to the data stream's port (validated on arrival).
    const port = parseStreamPort(data.header(STREAM_PORT_HEADER)) ?? 0
    const request = new ForwardRequest(port, pair.requestId, error, data, () => dropPair(pair))
    pair.request = request
    try {
      options.onRequest(request)
    } catch {
      request.fail('internal error')
    }
  }

  const onStream = (stream: SpdyStream): void => {
    if (closed) {
      stream.reset(RstStatus.REFUSED_STREAM)
      return
    }
    const type = stream.header(STREAM_TYPE_HEADER)
    const portText = stream.header(STREAM_PORT_HEADER)
    const port = parseStreamPort(portText)
    if (port === undefined || (type !== STREAM_TYPE_ERROR && type !== STREAM_TYPE_DATA)) {
      stream.reset(RstStatus.CANCEL)
      issue({
        kind: 'rejected',
        streamId: stream.id,
        message:
          port === undefined
            ? `invalid ${STREAM_PORT_HEADER} header ${JSON.stringify(portText ?? null)}`
            : `invalid ${STREAM_TYPE_HEADER} header ${JSON.stringify(type ?? null)}`,
      })
      return
    }
    // Old clients send no requestid; the kubelet then derives one from the ids
    // (error stream id, or data stream id - 2: they are created back to back).
    const requestId =
      stream.header(REQUEST_ID_HEADER) ??
      String(type === STREAM_TYPE_ERROR ? stream.id : stream.id - 2)

    stream.reply()
    let pair = pairs.get(requestId)
    const slot = type === STREAM_TYPE_ERROR ? 'error' : 'data'
    if (pair !== undefined && pair[slot] !== undefined) {
      stream.reset(RstStatus.CANCEL)
      issue({
        kind: 'duplicate',
        streamId: stream.id,
        requestId,
        port,
        message: `${type} stream already assigned for request ${requestId}`,
      })
      return
    }
    if (pair === undefined) {
      const created: Pair = {
        requestId,
        error: undefined,
        data: undefined,
        timer: undefined,
        request: undefined,
      }
      created.timer = setTimeout(() => onTimeout(created), timeoutMs)
      pairs.set(requestId, created)
      pair = created
    }
    const owner = pair
    if (slot === 'error') {
      owner.error = stream
      // The client FINs its side at once and the kubelet ignores anything on it:
      // discard, so it can never hold up the session.
      stream.resume()
    } else {
      owner.data = stream
    }
    stream.once('close', () => {
      if (owner.request === undefined && pairs.get(owner.requestId) === owner) abandon(owner)
    })
    if (owner.error !== undefined && owner.data !== undefined) {
      complete(owner, owner.error, owner.data)
    }
  }

  const onClose = (): void => {
    shutdown()
  }

  const shutdown = (): void => {
    if (closed) return
    closed = true
    session.off('stream', onStream)
    session.off('close', onClose)
    for (const pair of [...pairs.values()]) {
      if (pair.request === undefined) abandon(pair)
      else dropPair(pair)
    }
  }

  session.on('stream', onStream)
  session.on('close', onClose)

  return {
    get pendingPairs() {
      let n = 0
      for (const p of pairs.values()) if (p.request === undefined) n++
      return n
    },
    close: shutdown,
  }
}
