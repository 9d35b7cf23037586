/**
 * The gateway's HTTP/1.1 upgrades: the `'upgrade'` listener on the TLS port (Node emits
 * it for HTTP/1.1 connections, including those that negotiated no ALPN, as kubectl's
 * upgrade connections do, docs/kubernetes-protocols.md#credentials-tls-and-alpn). It
 * serves Kubernetes port-forward on
 * - `/api/v1/namespaces/{ns}/pods/{pod}/portforward` (kube-apiserver's path),
 * - `/api/v1/nodes/{node}/proxy/portForward/{ns}/{pod}` (the node proxy subresource),
 * - `/proxy/nodes/{node}/portForward/{ns}/{pod}` (the native path),
 * in three protocols:
 * - `POST` (or `GET`) + `Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version: portforward.k8s.io`
 *   → `spdy` (spdy-adapter.ts);
 * - WebSocket offering `SPDY/3.1+portforward.k8s.io` → `ws-spdy` (the same adapter over
 *   the WebSocket's byte stream), unless `websocketTunnel` is off: then a non-101 answer
 *   makes kubectl fall back to SPDY (docs/kubernetes-protocols.md#fallback-to-spdy);
 * - WebSocket offering `v4.channel.k8s.io` / `v4.base64.channel.k8s.io` (or nothing)
 *   with `?ports=` → `ws-v4` / `ws-v4-base64` (ws-channel-adapter.ts).
 *
 * Before the 101 the request is authenticated and authorized for its target
 * ({@link Forwarder.admit}): a bad token gets 401, a forbidden target 403, an unknown
 * pod 404, a pod that is not running 400, each as a Kubernetes `Status` body that
 * kubectl prints. A WebSocket `GET` needs exactly the permission a SPDY `POST` does.
 * Every stream is checked again when it opens.
 *
 * @module
 */
import type { IncomingMessage } from 'node:http'
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocketServer } from 'ws'
import type { WebSocket } from 'ws'
import { PORT_FORWARD_PROTOCOL } from '../../protocol/spdy/portforward.js'
import {
  SPDY_TUNNEL_PROTOCOL,
  isSpdyUpgradeRequest,
  negotiateStreamProtocol,
  offersSpdyTunnel,
  spdyUpgradeResponse,
} from '../../protocol/spdy/upgrade.js'
import { buildStatus } from '../../protocol/status.js'
import type { ClientProtocol } from '../../protocol/audit-record.js'
import { createWebSocketByteStream } from '../../protocol/ws-stream.js'
import {
  parseOfferedProtocols,
  parsePortsQuery,
  selectChannelProtocol,
} from '../../protocol/ws-channel.js'
import type { ChannelEncoding } from '../../protocol/ws-channel.js'
import {
  AppError,
  appError,
  describeError,
  isAppError,
  newRef,
  publicError,
} from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { formatAddress } from '../forward/forwarder.js'
import { impersonationOf } from '../impersonation.js'
import type { ForwardService } from '../forward/service.js'
import { certificateOf } from './contract.js'
import type { EdgeConnection } from './contract.js'
import { serveSpdyPortForward } from './spdy-adapter.js'
import type { UpgradeTarget } from './spdy-adapter.js'
import { closeWebSocket, serveChannelPortForward } from './ws-channel-adapter.js'

/** `/api/v1/namespaces/{ns}/pods/{pod}/portforward` */
const POD_PATH = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/portforward$/
/** `/api/v1/nodes/{node}/proxy/portForward/{ns}/{pod}` */
const NODE_PROXY_PATH = /^\/api\/v1\/nodes\/([^/]+)\/proxy\/portForward\/([^/]+)\/([^/]+)$/
/** `/proxy/nodes/{node}/portForward/{ns}/{pod}` */
const NATIVE_UPGRADE_PATH = /^\/proxy\/nodes\/([^/]+)\/portForward\/([^/]+)\/([^/]+)$/

/**
 * The browser way to send a bearer token on a WebSocket (kube-apiserver's
 * `base64url.bearer.authorization.k8s.io.<token>` subprotocol): browsers cannot set
 * an Authorization header.
 */
export const BEARER_SUBPROTOCOL_PREFIX = 'base64url.bearer.authorization.k8s.io.'

/**
 * Largest WebSocket message accepted: the kubelet's limit (32 MiB), so that a client
 * library writing a large buffer in one call is served as the kubelet would serve it
 * (kubectl sends ≤ 32 KiB, client-node ≤ 64 KiB per write, but its users' writes may be
 * larger). Only authenticated upgrades get here. Memory: while a message is pushed into a
 * port's stream the WebSocket is paused, so a connection holds at most the message being
 * relayed and the one being received (docs/security.md, Limits).
 */
export const MAX_WS_MESSAGE = 32 * 1024 * 1024

/** How long a refused upgrade's connection may linger after the answer. */
const REJECT_LINGER_MS = 5000

/** The port-forward target in an upgrade path, or undefined when the path is not one. */
export function parsePortForwardPath(pathname: string): UpgradeTarget | AppError | undefined {
  const decode = (s: string): string => decodeURIComponent(s)
  try {
    let m = POD_PATH.exec(pathname)
    if (m !== null) return { namespace: decode(m[1] as string), pod: decode(m[2] as string) }
    m = NODE_PROXY_PATH.exec(pathname) ?? NATIVE_UPGRADE_PATH.exec(pathname)
    if (m !== null) {
      return {
        node: decode(m[1] as string),
        namespace: decode(m[2] as string),
        pod: decode(m[3] as string),
      }
    }
  } catch {
    return appError('PFG_ERR_ROUTE_BAD_NAME', `invalid percent-encoding in ${pathname}`)
  }
  return undefined
}

/** The token of a `base64url.bearer.authorization.k8s.io.` subprotocol, as a header value. */
export function bearerFromSubprotocols(header: string | string[] | undefined): string | undefined {
  for (const p of parseOfferedProtocols(header)) {
    if (p.startsWith(BEARER_SUBPROTOCOL_PREFIX)) {
      const token = Buffer.from(p.slice(BEARER_SUBPROTOCOL_PREFIX.length), 'base64url').toString()
      if (token.length > 0) return `Bearer ${token}`
    }
  }
  return undefined
}

/** Writes a complete non-101 answer with a Kubernetes `Status` body and ends the socket. */
export function rejectUpgrade(
  socket: Duplex,
  err: AppError,
  extraHeaders: Record<string, string> = {},
): void {
  if (socket.destroyed) return
  const body = JSON.stringify(buildStatus(err.statusCode, err.message, err.code))
  const extra = Object.entries(extraHeaders)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')
  socket.end(
    `HTTP/1.1 ${err.statusCode} ${STATUS_CODES[err.statusCode] ?? 'Error'}\r\n` +
      'Content-Type: application/json\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      extra +
      'Connection: close\r\n\r\n' +
      body,
  )
  // A client that never closes its side does not keep the socket.
  const timer = setTimeout(() => socket.destroy(), REJECT_LINGER_MS)
  socket.once('close', () => clearTimeout(timer))
}

/** What {@link UpgradeHandler} needs. */
export interface UpgradeHandlerOptions {
  forwarder: ForwardService
  logger: Logger
  /** Accept the SPDY-over-WebSocket tunnel (default true); off makes kubectl fall back. */
  websocketTunnel?: boolean
  /** Called with the connection's socket once its upgrade request has authenticated. */
  onAuthenticated?: (socket: Socket) => void
  /** PING interval of upgraded connections (SPDY PING, WebSocket ping); 0 disables. */
  keepaliveMs?: number
}

/** What an upgrade request asks for, once its headers were checked. */
type Choice =
  | { protocol: 'spdy'; stream: string }
  | { protocol: 'ws-spdy' }
  | {
      protocol: 'ws-v4' | 'ws-v4-base64'
      subprotocol: string
      encoding: ChannelEncoding
      ports: number[] | AppError
    }

/** The `'upgrade'` listener of one gateway. */
export class UpgradeHandler implements EdgeConnection {
  readonly #forwarder: ForwardService
  readonly #logger: Logger
  readonly #tunnel: boolean
  readonly #onAuthenticated: ((socket: Socket) => void) | undefined
  readonly #keepaliveMs: number
  readonly #wss: WebSocketServer
  /** The subprotocol to answer for a request (the tunnel's is added in 'headers'). */
  readonly #subprotocol = new WeakMap<IncomingMessage, string>()
  readonly #live = new Set<EdgeConnection>()
  /** Sockets between the request and the 101 (closed at shutdown). */
  readonly #pending = new Set<Duplex>()
  #draining = false

  constructor(options: UpgradeHandlerOptions) {
    this.#forwarder = options.forwarder
    this.#logger = options.logger
    this.#tunnel = options.websocketTunnel ?? true
    this.#onAuthenticated = options.onAuthenticated
    this.#keepaliveMs = options.keepaliveMs ?? 0
    this.#wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      perMessageDeflate: false,
      maxPayload: MAX_WS_MESSAGE,
      handleProtocols: (_offered, req) => this.#subprotocol.get(req) ?? false,
    })
    this.#wss.on('headers', (headers, req) => {
      // ws checks Sec-WebSocket-Protocol against the token grammar, which `/` is not part
      // of, so the tunnel's header was removed before handleUpgrade and is answered here
      // (docs/kubernetes-protocols.md#the-subprotocol-and-the-ws-package).
      const p = this.#subprotocol.get(req)
      if (p === SPDY_TUNNEL_PROTOCOL) headers.push(`Sec-WebSocket-Protocol: ${p}`)
    })
  }

  /** Upgraded connections being served. */
  get size(): number {
    return this.#live.size
  }

  /** The `'upgrade'` listener. Never throws; every outcome is an answer on the socket. */
  readonly listener = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', (err) => this.#logger.debug({ err: describeError(err) }, 'upgrade socket'))
    this.#handle(req, socket, head).catch((err: unknown) => {
      // The client gets a generic message and a ref; the log line has the details.
      const ref = newRef()
      this.#logger.error({ err: describeError(err), ref }, 'upgrade failed')
      rejectUpgrade(socket, publicError(err, ref))
    })
  }

  /** Shutdown, step 1: refuse new upgrades and new SPDY streams; open streams go on. */
  drain(): void {
    this.#draining = true
    for (const s of this.#live) s.drain()
  }

  /** Shutdown, step 2 (the drain deadline): end every upgraded connection. */
  destroy(): void {
    this.#draining = true
    for (const s of [...this.#live]) s.destroy()
    for (const s of this.#pending) s.destroy()
  }

  #choose(req: IncomingMessage, query: URLSearchParams): Choice | AppError {
    const h = req.headers
    if ((h.upgrade ?? '').toLowerCase() === 'websocket') {
      if (req.method !== 'GET') {
        return appError('PFG_ERR_ROUTE_METHOD_NOT_ALLOWED', 'a WebSocket upgrade uses GET')
      }
      const offer = h['sec-websocket-protocol']
      if (offersSpdyTunnel(offer)) {
        if (!this.#tunnel) {
          // Any non-101 makes kubectl ≥ 1.31 retry with the SPDY upgrade
          // (docs/kubernetes-protocols.md#fallback-to-spdy).
          return appError(
            'PFG_ERR_PROTO_UNSUPPORTED',
            `the ${SPDY_TUNNEL_PROTOCOL} WebSocket tunnel is disabled on this gateway; use the SPDY/3.1 upgrade`,
          )
        }
        return { protocol: 'ws-spdy' }
      }
      // The bearer-token subprotocol is a credential, not a protocol choice.
      const offered = parseOfferedProtocols(offer).filter(
        (p) => !p.startsWith(BEARER_SUBPROTOCOL_PREFIX),
      )
      const choice = selectChannelProtocol(offered)
      if (choice === undefined) {
        return appError(
          'PFG_ERR_PROTO_UNSUPPORTED',
          `unsupported WebSocket subprotocol(s) ${JSON.stringify(offered)}; port-forward speaks v4.channel.k8s.io, v4.base64.channel.k8s.io and ${SPDY_TUNNEL_PROTOCOL}`,
        )
      }
      let ports: number[] | AppError
      try {
        ports = parsePortsQuery(query)
      } catch (err) {
        ports = isAppError(err) ? err : appError('PFG_ERR_ROUTE_BAD_PORT', 'invalid ports')
      }
      return {
        protocol: choice.encoding === 'binary' ? 'ws-v4' : 'ws-v4-base64',
        subprotocol: choice.protocol,
        encoding: choice.encoding,
        ports,
      }
    }
    if (isSpdyUpgradeRequest(h)) {
      if (req.method !== 'POST' && req.method !== 'GET') {
        return appError('PFG_ERR_ROUTE_METHOD_NOT_ALLOWED', 'a SPDY upgrade uses POST')
      }
      const n = negotiateStreamProtocol(h['x-stream-protocol-version'])
      if (!n.ok) {
        return n.status === 403
          ? appError('PFG_ERR_PROTO_UNSUPPORTED', n.message)
          : appError('PFG_ERR_PROTO_BAD_HEADER', n.message)
      }
      return { protocol: 'spdy', stream: n.protocol }
    }
    return appError(
      'PFG_ERR_PROTO_UPGRADE_REQUIRED',
      `unsupported upgrade ${JSON.stringify(h.upgrade ?? '')}: port-forward speaks SPDY/3.1 and WebSocket`,
    )
  }

  async #handle(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://gateway.invalid')
    const target = parsePortForwardPath(url.pathname)
    if (target === undefined) {
      rejectUpgrade(
        socket,
        appError(
          'PFG_ERR_ROUTE_NOT_FOUND',
          `the server could not find the requested resource (${req.method ?? ''} ${url.pathname})`,
        ),
      )
      return
    }
    if (target instanceof AppError) {
      rejectUpgrade(socket, target)
      return
    }
    if (this.#draining) {
      rejectUpgrade(socket, appError('PFG_ERR_RELAY_DRAINING', 'the gateway is shutting down'))
      return
    }
    const choice = this.#choose(req, url.searchParams)
    if (choice instanceof AppError) {
      const extra: Record<string, string> =
        choice.code === 'PFG_ERR_PROTO_UNSUPPORTED' && isSpdyUpgradeRequest(req.headers)
          ? { 'X-Accepted-Stream-Protocol-Versions': PORT_FORWARD_PROTOCOL }
          : {}
      rejectUpgrade(socket, choice, extra)
      return
    }
    const authorization =
      req.headers.authorization ??
      (choice.protocol === 'spdy'
        ? undefined
        : bearerFromSubprotocols(req.headers['sec-websocket-protocol']))
    const tcp = socket as Socket
    const userAgent = req.headers['user-agent']
    let served: EdgeConnection | undefined
    const session = this.#forwarder.newSession({
      protocol: choice.protocol satisfies ClientProtocol,
      sourceAddress: formatAddress(tcp.remoteAddress, tcp.remotePort),
      ...(userAgent !== undefined ? { userAgent } : {}),
      ...certificateOf(tcp),
      terminate: () => (served !== undefined ? served.destroy() : socket.destroy()),
    })

    // Authenticate and authorize before answering 101.
    this.#pending.add(socket)
    try {
      const impersonation = impersonationOf(req.headers)
      await this.#forwarder.admit({
        session,
        authorization,
        ...(impersonation !== undefined ? { impersonation } : {}),
        ...target,
        ...(choice.protocol === 'ws-v4' || choice.protocol === 'ws-v4-base64'
          ? { ports: choice.ports }
          : {}),
      })
    } catch (err) {
      this.#pending.delete(socket)
      const e = isAppError(err) ? err : appError('PFG_ERR_GATEWAY_INTERNAL', 'internal error')
      rejectUpgrade(
        socket,
        e,
        e.statusCode === 401 ? { 'WWW-Authenticate': 'Bearer realm="pfgate"' } : {},
      )
      this.#forwarder.endSession(session)
      return
    }
    this.#pending.delete(socket)
    this.#onAuthenticated?.(tcp)
    if (socket.destroyed || this.#draining) {
      if (!socket.destroyed) {
        rejectUpgrade(socket, appError('PFG_ERR_RELAY_DRAINING', 'the gateway is shutting down'))
      }
      this.#forwarder.endSession(session)
      return
    }
    // Upgraded connections may idle for hours between streams; find dead peers.
    tcp.setKeepAlive?.(true, 30_000)
    tcp.setNoDelay?.(true)

    const base = {
      forwarder: this.#forwarder,
      logger: this.#logger,
      session,
      authorization,
      target,
      keepaliveMs: this.#keepaliveMs,
    }
    const track = (s: EdgeConnection): (() => void) => {
      this.#live.add(s)
      return () => this.#live.delete(s)
    }

    if (choice.protocol === 'spdy') {
      // The 101, then nothing until the client's first frame (the session holds its writes).
      socket.write(spdyUpgradeResponse(choice.stream))
      let untrack = (): void => {}
      const conn = serveSpdyPortForward(socket, {
        ...base,
        head,
        onClose: () => untrack(),
      })
      served = conn
      untrack = track(conn)
      return
    }

    if (choice.protocol === 'ws-spdy') {
      delete req.headers['sec-websocket-protocol']
      this.#subprotocol.set(req, SPDY_TUNNEL_PROTOCOL)
    } else {
      if (choice.subprotocol !== '') this.#subprotocol.set(req, choice.subprotocol)
      // No (supported) offer besides, maybe, the bearer token: answer no subprotocol.
      else delete req.headers['sec-websocket-protocol']
    }
    // ws answers 400 itself if the handshake headers are wrong; the session ends with the socket.
    const onEarlyClose = (): void => {
      if (served === undefined) this.#forwarder.endSession(session)
    }
    socket.once('close', onEarlyClose)
    this.#wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      socket.off('close', onEarlyClose)
      let untrack = (): void => {}
      if (choice.protocol === 'ws-spdy') {
        const conn = serveSpdyPortForward(createWebSocketByteStream(ws), {
          ...base,
          onClose: () => {
            untrack()
            // The session ended its byte stream (close 1000) or lost it: the WebSocket goes
            // too, within a bounded time.
            closeWebSocket(ws, 1000)
          },
        })
        served = {
          drain: () => conn.drain(),
          destroy: () => {
            conn.destroy()
            ws.terminate()
          },
        }
      } else {
        served = serveChannelPortForward(ws, {
          ...base,
          ports: choice.ports as number[],
          encoding: choice.encoding,
          onClose: () => untrack(),
        })
      }
      untrack = track(served)
    })
  }
}
