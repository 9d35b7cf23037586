/**
 * Edge adapter for the native HTTP/2 stream contract (docs/protocol.md): one
 * HTTP/2 stream per forwarded TCP connection on
 * `POST /proxy/nodes/{node}/portForward/{ns}/{pod}` with a `port` header.
 * Handled on the raw `node:http2` stream, before Fastify's compatibility layer:
 * the hot path pays for no request/reply objects (docs/performance.md).
 *
 * @module
 */
import type {
  Http2Session,
  IncomingHttpHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2'
import { constants as h2c } from 'node:http2'
import { PORT_HEADER, STREAM_ID_HEADER } from '../../protocol/constants.js'
import { PROTOCOL_HEADER, UDP_PROTOCOL } from '../../protocol/udp-frames.js'
import { parsePortHeader } from '../../protocol/names.js'
import { isPortName, kindOfResource } from '../../protocol/targets.js'
import { RST } from '../../protocol/reset-codes.js'
import { appError, describeError, isAppError } from '../../shared/errors.js'
import type { AppError } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { respondStatus } from '../../shared/h2-util.js'
import { h2Endpoint } from '../../shared/relay-endpoints.js'
import { relayed } from '../connections.js'
import { certificateOf, forwardStream } from './contract.js'
import type { EdgeConnection } from './contract.js'
import type { ConnectionGuard } from '../connections.js'
import { formatAddress } from '../forward/forwarder.js'
import { impersonationOf } from '../impersonation.js'
import type { ForwardService } from '../forward/service.js'
import type { ClientSession } from '../forward/stream-table.js'

/**
 * `/proxy/nodes/{node}/portForward/{ns}/{pod}` (groups 1-3), or
 * `/proxy/namespaces/{ns}/{resource}/{name}/portForward` (groups 4-6: a pod, service or
 * workload the gateway resolves per stream; docs/protocol.md). No query, no trailing parts.
 */
export const NATIVE_PATH =
  /^\/proxy\/(?:nodes\/([^/?#]+)\/portForward\/([^/?#]+)\/([^/?#]+)|namespaces\/([^/?#]+)\/(pods|services|deployments|replicasets|statefulsets)\/([^/?#]+)\/portForward)$/

const kSession = Symbol('pfgate.gateway.clientSession')
type TaggedSession = ServerHttp2Session & { [kSession]?: ClientSession }

function decode(part: string): string | AppError {
  try {
    return decodeURIComponent(part)
  } catch {
    return appError('PFG_ERR_ROUTE_BAD_NAME', `invalid percent-encoding in ${JSON.stringify(part)}`)
  }
}

/** An 'error' listener that only keeps an error from being unhandled. */
function ignoreError(): void {}

/** The agent stream's RST codes a native client gets as they are. */
const PASS_TO_CLIENT = [RST.CONNECT_ERROR]

/**
 * Handles native streams for one gateway. As an {@link EdgeConnection} it is the HTTP/2
 * sessions its streams arrive on (`sessions`: the server's client sessions,
 * http/client-sessions.ts): drain sends them GOAWAY, destroy ends them.
 */
export class NativeH2Adapter implements EdgeConnection {
  readonly #forwarder: ForwardService
  readonly #logger: Logger
  readonly #connections: ConnectionGuard | undefined
  readonly #sessions: EdgeConnection | undefined

  constructor(
    forwarder: ForwardService,
    logger: Logger,
    connections?: ConnectionGuard,
    sessions?: EdgeConnection,
  ) {
    this.#forwarder = forwarder
    this.#logger = logger
    this.#connections = connections
    this.#sessions = sessions
  }

  /** Shutdown, step 1: GOAWAY to every client session; open streams go on. */
  drain(): void {
    this.#sessions?.drain()
  }

  /** Shutdown, step 2 (the drain deadline): ends every client session. */
  destroy(): void {
    this.#sessions?.destroy()
  }

  /** The ClientSession of an HTTP/2 session, created on its first native stream. */
  #session(h2: TaggedSession, headers: IncomingHttpHeaders): ClientSession {
    let s = h2[kSession]
    if (s === undefined) {
      const socket = h2.socket
      const ua = headers['user-agent']
      s = this.#forwarder.newSession({
        protocol: 'native-h2',
        sourceAddress: formatAddress(socket.remoteAddress, socket.remotePort),
        ...(ua !== undefined ? { userAgent: ua } : {}),
        ...certificateOf(socket),
        terminate: () => {
          if (!h2.destroyed) h2.destroy(undefined, h2c.NGHTTP2_CANCEL)
        },
      })
      h2[kSession] = s
      const session = s
      h2.once('close', () => this.#forwarder.endSession(session))
    }
    return s
  }

  /**
   * The client of `h2` stopped answering PINGs: its forwarded streams end with an audit
   * record saying so (the caller destroys the connection).
   */
  unresponsive(h2: Http2Session, why: string): void {
    const s = (h2 as TaggedSession)[kSession]
    if (s !== undefined) this.#forwarder.clientUnresponsive(s, why)
  }

  /**
   * Handles one stream whose path matched {@link NATIVE_PATH}. `headerBytes` is the size
   * of its header list (the forwarder enforces `limits.maxHeaderSize` with it).
   */
  handle(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    m: RegExpExecArray,
    headerBytes?: number,
  ): void {
    // Reported through the relay or the forwarder; a stream error never crashes the gateway.
    // Module-level, so the listener does not keep this call's scope (headers...) alive.
    stream.on('error', ignoreError)
    const byName = m[4] !== undefined
    const node = byName ? undefined : decode(m[1] as string)
    const namespace = decode((byName ? m[4] : m[2]) as string)
    const kind = byName ? kindOfResource(m[5] as string) : 'pod'
    const name = decode((byName ? m[6] : m[3]) as string)
    let port: number | AppError
    let portName: string | undefined
    try {
      port = parsePortHeader(headers[PORT_HEADER])
    } catch (err) {
      port = err as AppError
      // A service or workload (and a pod by name) may name its port (`http`).
      const h = headers[PORT_HEADER]
      if (byName && kind !== 'pod' && typeof h === 'string' && isPortName(h)) portName = h
    }
    if (typeof namespace !== 'string' || typeof name !== 'string' || isAppError(node)) {
      // Malformed escapes: reject as a bad name, still only after authentication.
      port = [node, namespace, name].find((x): x is AppError => isAppError(x)) as AppError
      portName = undefined
    }
    const marker = headers[PROTOCOL_HEADER]
    const udp = marker === UDP_PROTOCOL
    if (marker !== undefined && !udp && typeof port === 'number') {
      port = appError('PFG_ERR_PROTO_BAD_HEADER', `invalid ${PROTOCOL_HEADER} header`)
    }
    if (headers[':method'] !== 'POST') {
      // 405 too only after authentication: an anonymous client learns nothing (401 first).
      port = appError('PFG_ERR_ROUTE_METHOD_NOT_ALLOWED', 'port-forward streams use POST')
    }
    const impersonation = impersonationOf(headers)
    const h2 = stream.session as TaggedSession
    const session = this.#session(h2, headers)
    const ua = headers['user-agent']
    forwardStream(
      this.#forwarder,
      {
        session,
        authorization: headers.authorization,
        namespace: typeof namespace === 'string' ? namespace : '',
        pod: typeof name === 'string' && kind === 'pod' ? name : '',
        ...(typeof node === 'string' ? { node } : {}),
        port: portName !== undefined ? 0 : port,
        ...(kind !== undefined && kind !== 'pod' && typeof name === 'string'
          ? { target: { kind, name, port: portName ?? port } }
          : {}),
        ...(udp ? { transport: 'udp' as const } : {}),
        ...(ua !== undefined ? { userAgent: ua } : {}),
        ...(headerBytes !== undefined ? { headerBytes } : {}),
        ...(impersonation !== undefined ? { impersonation } : {}),
        onAuthenticated: () => this.#connections?.authenticated(h2.socket),
      },
      {
        watch: stream,
        gone: () => stream.destroyed || stream.closed,
        accept: (opened) => {
          try {
            stream.respond(
              { ':status': 200, [STREAM_ID_HEADER]: opened.streamId },
              // A UDP flow ends with trailers (why, drops: docs/protocol.md).
              udp ? { waitForTrailers: true } : {},
            )
          } catch (err) {
            this.#logger.debug({ err: describeError(err) }, 'respond failed')
            return undefined
          }
          // Toward the client (docs/protocol.md): the pod's reset is CONNECT_ERROR; any other
          // failure of the agent's side is INTERNAL_ERROR, whatever code Node gave the agent
          // stream (it closes the streams of a lost connection with CANCEL).
          relayed(stream)
          return udp
            ? { udpStream: stream }
            : h2Endpoint(stream, RST.INTERNAL_ERROR, PASS_TO_CLIENT)
        },
        refuse: (err) => {
          const e = isAppError(err) ? err : appError('PFG_ERR_GATEWAY_INTERNAL', 'internal error')
          const extra: Record<string, string> =
            e.statusCode === 401
              ? { 'www-authenticate': 'Bearer realm="pfgate"' }
              : e.code === 'PFG_ERR_ROUTE_METHOD_NOT_ALLOWED'
                ? { allow: 'POST' }
                : {}
          respondStatus(stream, e, extra)
        },
      },
    )
  }
}
