/**
 * The gateway's client connections as TCP and TLS sockets, whatever they carry (HTTP/2,
 * HTTP/1.1, an upgraded SPDY or WebSocket connection): what bounds a client before it
 * has authenticated, and what shutdown needs to end connections that do not cooperate.
 * docs/security.md (Limits) has each bound, its default and why.
 *
 * - **Unauthenticated connections per source** (`limits.connectionsPerSource`): a
 *   connection counts until one of its requests authenticates; over the cap, a new one
 *   from the same address (an IPv6 address's /64) is closed at accept, before TLS.
 * - **Stream allowance** (`limits.unauthenticatedStreams`): an HTTP/2 connection starts
 *   with that SETTINGS_MAX_CONCURRENT_STREAMS and a {@link PREAUTH_STREAM_WINDOW}
 *   per-stream window; nghttp2 refuses streams beyond it before any of our code runs.
 *   The first request that authenticates raises both (streamsPerConnection + the
 *   allowance; the full window).
 * - **Request deadline** (`limits.requestTimeout`): every HTTP/2 stream that is not a
 *   relayed forward (an API request, a refused forward, a forward still opening) is reset
 *   (ENHANCE_YOUR_CALM) if it is still open at the deadline: a request that never sends
 *   END_STREAM, a body that trickles, a response the client never reads.
 * - **Shutdown**: Node's HTTP/2 session, once closed with GOAWAY, ends its socket and
 *   then waits for the peer to close; a peer that stopped reading, or vanished, kept
 *   `server.close()` waiting for minutes. At the drain deadline
 *   {@link ConnectionGuard.destroyAll} destroys every socket.
 *
 * @module
 */
import type { Http2Session, ServerHttp2Stream, Settings } from 'node:http2'
import type { Socket } from 'node:net'
import type { Server as TlsServer, TLSSocket } from 'node:tls'
import { RST } from '../protocol/reset-codes.js'
import { STREAM_WINDOW } from '../protocol/h2-settings.js'
import type { Logger } from '../shared/log.js'
import { resetStream } from '../shared/relay-endpoints.js'
import { denialSourceKey as sourceKey } from './audit/denial-limiter.js'
import type { GatewayConfig } from './config.js'
import type { GatewayMetrics } from './metrics.js'

/**
 * Per-stream receive window of an HTTP/2 connection that has authenticated nothing: what
 * one unauthenticated stream may make the gateway buffer. Requests need no body before
 * they authenticate (the window is raised with the allowance).
 */
export const PREAUTH_STREAM_WINDOW = 4 * 1024

/**
 * What nghttp2 and Node account per open stream against `maxSessionMemory` (measured:
 * the default 10 MB holds about 12,300 answered streams), rounded up.
 */
const SESSION_MEMORY_PER_STREAM = 1024
/** Room in `maxSessionMemory` for queued DATA, HPACK tables, PINGs and SETTINGS. */
const SESSION_MEMORY_HEADROOM_MB = 32

/** The limits the guard applies. */
export type ConnectionLimits = Pick<
  GatewayConfig['limits'],
  | 'streamsPerConnection'
  | 'unauthenticatedStreams'
  | 'connectionsPerSource'
  | 'requestTimeoutMs'
  | 'handshakeTimeoutMs'
>

/** SETTINGS_MAX_CONCURRENT_STREAMS once a connection has authenticated. */
export function authenticatedMaxStreams(limits: ConnectionLimits): number {
  return limits.streamsPerConnection + limits.unauthenticatedStreams
}

/**
 * `maxSessionMemory` (MB) for client connections: room for every stream a connection may
 * have open, plus headroom. Not more: it is what one connection may make nghttp2 hold.
 */
export function clientSessionMemoryMb(limits: ConnectionLimits): number {
  const streams = authenticatedMaxStreams(limits)
  return (
    Math.ceil((streams * SESSION_MEMORY_PER_STREAM) / (1024 * 1024)) + SESSION_MEMORY_HEADROOM_MB
  )
}

/** The HTTP/2 SETTINGS a client connection starts with (before it has authenticated). */
export function preauthSettings(limits: ConnectionLimits): Settings {
  return {
    maxConcurrentStreams: limits.unauthenticatedStreams,
    initialWindowSize: PREAUTH_STREAM_WINDOW,
  }
}

/** One client connection. */
interface Conn {
  readonly source: string
  readonly raw: Socket
  tls: TLSSocket | undefined
  authenticated: boolean
  session: Http2Session | undefined
}

const kDeadline = Symbol('pfgate.gateway.requestDeadline')
type WatchedStream = ServerHttp2Stream & { [kDeadline]?: NodeJS.Timeout }

/** A 'close' listener shared by every watched stream (no closure per stream). */
function clearDeadline(this: WatchedStream): void {
  clearTimeout(this[kDeadline])
}

/**
 * Ends the request deadline of a stream that became a relayed forward (after its 200 it
 * lives under the stream limits: idle timeout, lifetime, the buffer budget).
 */
export function relayed(stream: ServerHttp2Stream): void {
  const s = stream as WatchedStream
  clearTimeout(s[kDeadline])
  s[kDeadline] = undefined
}

/** Every client connection of one gateway server, from accept to close. */
export class ConnectionGuard {
  readonly #limits: ConnectionLimits
  readonly #metrics: GatewayMetrics
  readonly #logger: Logger
  /** By `address|port` of the TCP connection. */
  readonly #conns = new Map<string, Conn>()
  /** Unauthenticated connections per source. */
  readonly #unauthenticated = new Map<string, number>()
  /** Accepted TCP sockets (before and after their TLS handshake). */
  readonly #raw = new Set<Socket>()
  /** TLS sockets whose handshake completed. */
  readonly #tls = new Set<TLSSocket>()

  readonly #onAuthenticated: ((session: Http2Session) => void) | undefined

  constructor(
    server: TlsServer,
    options: {
      limits: ConnectionLimits
      metrics: GatewayMetrics
      logger: Logger
      /** Called with an HTTP/2 connection once it authenticated (the buffer budget). */
      onAuthenticated?: (session: Http2Session) => void
    },
  ) {
    this.#limits = options.limits
    this.#metrics = options.metrics
    this.#logger = options.logger
    this.#onAuthenticated = options.onAuthenticated
    server.on('connection', (socket: Socket) => this.#accept(socket))
    server.on('secureConnection', (socket: TLSSocket) => {
      this.#tls.add(socket)
      socket.once('close', () => this.#tls.delete(socket))
      const conn = this.#conns.get(connKey(socket))
      if (conn !== undefined) conn.tls = socket
    })
    server.on('session', (session: Http2Session) => {
      const conn = this.#conns.get(connKey(session.socket))
      if (conn !== undefined) conn.session = session
    })
    options.metrics.setSources({
      connections: () => {
        let unauthenticated = 0
        for (const n of this.#unauthenticated.values()) unauthenticated += n
        return { authenticated: this.#conns.size - unauthenticated, unauthenticated }
      },
    })
  }

  /** Open connections (accepted TCP sockets not yet closed). */
  get size(): number {
    return this.#raw.size
  }

  /** Connections from `address`'s source that have authenticated nothing. */
  unauthenticated(address: string): number {
    return this.#unauthenticated.get(sourceKey(address)) ?? 0
  }

  #accept(socket: Socket): void {
    if (socket.remoteAddress === undefined) {
      // Already gone (reset before the accept was handled).
      socket.destroy()
      return
    }
    const source = sourceKey(socket.remoteAddress)
    const cap = this.#limits.connectionsPerSource
    const count = this.#unauthenticated.get(source) ?? 0
    if (cap > 0 && count >= cap) {
      this.#metrics.limitHits.inc({ limit: 'connections-per-source' })
      this.#logger.debug({ source, limit: cap }, 'connection refused: too many from this source')
      socket.destroy()
      return
    }
    const key = connKey(socket)
    const conn: Conn = {
      source,
      raw: socket,
      tls: undefined,
      authenticated: false,
      session: undefined,
    }
    this.#conns.set(key, conn)
    this.#unauthenticated.set(source, count + 1)
    this.#raw.add(socket)
    socket.once('close', () => {
      this.#raw.delete(socket)
      if (this.#conns.get(key) === conn) this.#conns.delete(key)
      if (!conn.authenticated) this.#uncount(source)
    })
  }

  #uncount(source: string): void {
    const n = (this.#unauthenticated.get(source) ?? 1) - 1
    if (n <= 0) this.#unauthenticated.delete(source)
    else this.#unauthenticated.set(source, n)
  }

  /**
   * A request on the connection of `socket` (a TLS socket, or an HTTP/2 session's socket)
   * authenticated: the connection leaves its source's count, and an HTTP/2 connection gets
   * its full stream allowance, and its window from the buffer budget (`onAuthenticated`).
   */
  authenticated(socket: { remoteAddress?: string; remotePort?: number } | undefined): void {
    if (socket === undefined) return
    const conn = this.#conns.get(connKey(socket))
    if (conn === undefined || conn.authenticated) return
    conn.authenticated = true
    this.#uncount(conn.source)
    const session = conn.session
    if (session === undefined || session.destroyed || session.closed) return
    try {
      session.settings({ maxConcurrentStreams: authenticatedMaxStreams(this.#limits) })
    } catch (err) {
      // Too many SETTINGS unacknowledged: the peer keeps the small allowance.
      this.#logger.debug({ err: String(err) }, 'could not raise the stream allowance')
    }
    if (this.#onAuthenticated !== undefined) this.#onAuthenticated(session)
    else {
      try {
        session.settings({ initialWindowSize: STREAM_WINDOW })
      } catch {
        // as above
      }
    }
  }

  /** Arms the request deadline of a new HTTP/2 stream (see {@link relayed}). */
  watch(stream: ServerHttp2Stream): void {
    const s = stream as WatchedStream
    const timer = setTimeout(this.#expire, this.#limits.requestTimeoutMs, s)
    timer.unref()
    s[kDeadline] = timer
    s.on('close', clearDeadline)
  }

  readonly #expire = (stream: WatchedStream): void => {
    if (stream.destroyed || stream.closed) return
    this.#metrics.limitHits.inc({ limit: 'request-timeout' })
    resetStream(stream, RST.ENHANCE_YOUR_CALM)
  }

  /**
   * Destroys one connection's sockets now (`socket`: its TLS socket, or an HTTP/2
   * session's). A session's own destroy() only ends the socket and waits for its writes
   * to flush, which a dead peer never lets happen.
   */
  destroy(socket: { remoteAddress?: string; remotePort?: number }): void {
    const conn = this.#conns.get(connKey(socket))
    conn?.tls?.destroy()
    conn?.raw.destroy()
  }

  /** Destroys every connection now (shutdown, at the drain deadline). */
  destroyAll(): void {
    for (const s of [...this.#tls]) s.destroy()
    for (const s of [...this.#raw]) s.destroy()
  }
}

function connKey(socket: { remoteAddress?: string; remotePort?: number }): string {
  return `${socket.remoteAddress ?? ''}|${socket.remotePort ?? ''}`
}
