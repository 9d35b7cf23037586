/**
 * Relay endpoints for the two kinds of byte stream pfgate joins: HTTP/2 streams
 * and TCP sockets. Each maps an abort reason to its wire signal: an RST_STREAM code
 * (rstCodeFor below; docs/protocol.md has the table) or a TCP RST.
 *
 * @module
 */
import type { Http2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import { RST } from '../protocol/reset-codes.js'
import type { AbortReason } from '../protocol/stream-end.js'
import type { RelayEndpoint } from './duplex-relay.js'

/**
 * The RST code for an abort. `peerFailureCode` is the code to use when the peer failed
 * without a code of its own; `passThrough`, when given, lists the peer codes propagated
 * as they are (any other becomes `peerFailureCode`).
 */
export function rstCodeFor(
  reason: AbortReason,
  peerRstCode: number | undefined,
  peerFailureCode: number,
  passThrough?: readonly number[],
): number {
  switch (reason) {
    case 'peer-reset':
      // NO_ERROR before both sides ended is no reset of the peer's own (Node closes the
      // streams of a session destroyed without a code with it): the peer's side failed.
      if (peerRstCode === undefined || peerRstCode === RST.NO_ERROR) return peerFailureCode
      if (passThrough !== undefined && !passThrough.includes(peerRstCode)) return peerFailureCode
      return peerRstCode
    case 'admin':
    case 'gateway':
      return RST.CANCEL
    case 'limit':
      return RST.ENHANCE_YOUR_CALM
    case 'internal':
      return RST.INTERNAL_ERROR
  }
}

/**
 * Resets an HTTP/2 stream with `code` and nothing else. Node's `stream.close(code)`
 * first ends the writable side, which can put an END_STREAM on the wire before the
 * RST_STREAM: the peer would read a clean EOF, half-close its own peer, and only then
 * learn of the reset. Replacing this instance's `_final` (the Writable hook that sends
 * END_STREAM) with a no-op keeps the reset a reset; already-queued DATA still goes first.
 */
export function resetStream(stream: Http2Stream, code: number): void {
  if (stream.destroyed || stream.closed) return
  if (!stream.writableEnded) {
    ;(stream as Http2Stream & { _final: (cb: (err?: Error | null) => void) => void })._final = (
      cb,
    ) => cb()
  }
  stream.close(code)
}

/**
 * An HTTP/2 stream endpoint. `peerFailureCode` is sent when the other side failed
 * without an RST code of its own (a socket error, a lost session), and instead of any
 * code the other side failed with that is not in `passThrough` (when given).
 */
export function h2Endpoint(
  stream: Http2Stream,
  peerFailureCode: number,
  passThrough?: readonly number[],
): RelayEndpoint {
  return new H2Endpoint(stream, peerFailureCode, passThrough)
}

/** A TCP socket endpoint: an abort is a TCP RST (the pod or local client sees ECONNRESET). */
export function socketEndpoint(socket: Socket): RelayEndpoint {
  return new SocketEndpoint(socket)
}

// Classes rather than object literals with closures: one small object per endpoint,
// the methods shared (memory per idle stream, docs/performance.md).

class H2Endpoint implements RelayEndpoint {
  readonly stream: Http2Stream
  readonly #peerFailureCode: number
  readonly #passThrough: readonly number[] | undefined

  constructor(stream: Http2Stream, peerFailureCode: number, passThrough?: readonly number[]) {
    this.stream = stream
    this.#peerFailureCode = peerFailureCode
    this.#passThrough = passThrough
  }

  abort(reason: AbortReason, peerRstCode?: number): void {
    resetStream(
      this.stream,
      rstCodeFor(reason, peerRstCode, this.#peerFailureCode, this.#passThrough),
    )
  }

  /**
   * An EOF on a stream that is already closed by a reset (rstCode ≠ NO_ERROR) or while our
   * side was still open (`aborted`: the session died) is not an END_STREAM. Node ends our
   * writable side itself when a stream closes, so `writableEnded` cannot tell.
   */
  eofIsAbort(): boolean {
    const s = this.stream
    return s.closed && (s.aborted || (s.rstCode ?? RST.NO_ERROR) !== RST.NO_ERROR)
  }
}

class SocketEndpoint implements RelayEndpoint {
  readonly stream: Socket

  constructor(socket: Socket) {
    this.stream = socket
  }

  abort(): void {
    const s = this.stream
    if (s.destroyed) return
    // After end(), libuv refuses uv_tcp_close_reset (a shutdown is in progress), and
    // Node's resetAndDestroy() then drops the handle without closing it: the process
    // can no longer exit (it spins in Environment::CleanupHandles). Our FIN is already
    // on the wire then, so a plain close is all that is left to do.
    if (s.writableEnded) s.destroy()
    else s.resetAndDestroy()
  }
}
