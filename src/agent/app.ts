/**
 * The node agent: an HTTP/2 server that only the gateway may use (mutual TLS with
 * the gateway's identity), speaking the native stream contract on
 * `POST /portForward/{ns}/{pod}` with a `port` header: 200 once the pod's port is
 * connected, then bytes both ways with half-close; errors as Kubernetes `Status`.
 * Also `GET /healthz`, `GET /readyz` (503 while the container runtime cannot be asked)
 * and `GET /metrics` (reached by admins through the gateway).
 *
 * @module
 */
import { createSecureServer, createServer, constants as h2c } from 'node:http2'
import type {
  Http2Server,
  Http2SecureServer,
  IncomingHttpHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2'
import type { TLSSocket } from 'node:tls'
import type { Socket } from 'node:net'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { appError, describeError, isAppError } from '../shared/errors.js'
import type { AppError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import { DuplexRelay } from '../shared/duplex-relay.js'
import { h2Endpoint, socketEndpoint } from '../shared/relay-endpoints.js'
import { peerIdentities, respondStatus } from '../shared/h2-util.js'
import { h2SessionOptions, widenConnectionWindow } from '../protocol/h2-settings.js'
import {
  GATEWAY_STREAM_ID_HEADER,
  NODE_NAME_HEADER,
  POD_UID_HEADER,
  PORT_HEADER,
  REPLICA_COUNT_HEADER,
  REPLICA_ID_HEADER,
  REVERSE_HELLO_PATH,
} from '../protocol/constants.js'
import { assertNamespace, assertObjectName, parsePortHeader } from '../protocol/names.js'
import { RST } from '../protocol/reset-codes.js'
import type { PodDialer, PodTarget } from './pod-dialer.js'

/** What the agent server needs. */
export interface AgentServerOptions {
  nodeName: string
  tls: { cert: string | Buffer; key: string | Buffer; clientCa: string | Buffer }
  /** Identities (URI SAN, `CN=x`, `DNS:x`) allowed to open streams. */
  allowedClients: readonly string[]
  dialer: PodDialer
  connectTimeoutMs: number
  logger: Logger
}

/**
 * The gateway's first request on a reverse connection (`POST /v1/reverse/hello`): the
 * replica's id and how many replicas there are. The answer: accept (200, with the node's
 * name) or decline (409, a replica this agent already holds a connection to).
 */
export type ReverseHello = (hello: { replicaId: string; replicas: number }) => boolean

/** A running agent. */
export interface AgentServer {
  readonly server: Http2SecureServer
  readonly metrics: Registry
  /** Live forwarded streams. */
  activeStreams(): number
  /**
   * Serves HTTP/2 on a TLS connection this agent dialed (reverse mode: the agent is the
   * TLS client and the HTTP/2 server). Returns the session; `hello` decides on the
   * gateway's hello request.
   */
  acceptReverse(socket: TLSSocket, hello: ReverseHello): ServerHttp2Session
  listen(port: number, host: string): Promise<{ port: number; host: string }>
  /** GOAWAY every session, wait up to `graceMs` for streams, then reset the rest. */
  close(graceMs: number): Promise<void>
}

const PF_PATH = /^\/portForward\/([^/?#]+)\/([^/?#]+)(?:\/([^/?#]+))?$/
/** A pod UID as the API server makes them (a UUID), loosely: bounded and plain. */
const POD_UID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

const kAuthorized = Symbol('pfgate.agent.authorized')

/** An 'error' listener that only keeps an error from being unhandled. */
function ignoreError(): void {}

const kHello = Symbol('pfgate.agent.reverseHello')

type AgentSession = ServerHttp2Session & {
  [kAuthorized]?: boolean
  [kHello]?: ReverseHello
  peer?: string
}

const REPLICA_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/

/** Builds the agent's HTTP/2 server (not listening yet). */
export function createAgentServer(options: AgentServerOptions): AgentServer {
  const { logger, dialer } = options
  const allowed = new Set(options.allowedClients)
  const sessions = new Set<AgentSession>()
  const relays = new Set<DuplexRelay>()
  const pending = new Set<AbortController>()

  const metrics = new Registry()
  metrics.setDefaultLabels({ node: options.nodeName })
  collectDefaultMetrics({ register: metrics, prefix: 'pfgate_agent_' })
  const mStreams = new Gauge({
    name: 'pfgate_agent_streams_active',
    help: 'Forwarded streams open on this agent',
    registers: [metrics],
    collect() {
      this.set(relays.size)
    },
  })
  const mOpened = new Counter({
    name: 'pfgate_agent_streams_total',
    help: 'Streams by outcome of the dial',
    labelNames: ['outcome'],
    registers: [metrics],
  })
  const mBytes = new Counter({
    name: 'pfgate_agent_bytes_total',
    help: 'Bytes relayed, by direction',
    labelNames: ['direction'],
    registers: [metrics],
  })
  const mDial = new Histogram({
    name: 'pfgate_agent_dial_seconds',
    help: 'Time to connect to the pod port',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5],
    registers: [metrics],
  })
  const mSessions = new Gauge({
    name: 'pfgate_agent_sessions',
    help: 'Gateway sessions connected',
    registers: [metrics],
    collect() {
      this.set(sessions.size)
    },
  })
  const mReady = new Gauge({
    name: 'pfgate_agent_ready',
    help: 'Whether the agent can resolve pods now (1: its container runtime answers)',
    registers: [metrics],
    async collect() {
      this.set((await readiness()).ready ? 1 : 0)
    },
  })
  void mStreams
  void mSessions
  void mReady

  const server = createSecureServer({
    ...h2SessionOptions(),
    cert: options.tls.cert,
    key: options.tls.key,
    ca: options.tls.clientCa,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    allowHTTP1: false,
  })

  // Reverse connections: the same handlers on a plain HTTP/2 server fed with TLS sockets
  // this agent dialed (the TLS layer is ours; the gateway's identity is checked the same way).
  const reverseServer: Http2Server = createServer({ ...h2SessionOptions() })

  const onSession = (session: AgentSession): void => {
    widenConnectionWindow(session)
    const socket = session.socket as TLSSocket
    const ids = peerIdentities(socket)
    session.peer = `${socket.remoteAddress}:${socket.remotePort}`
    session[kAuthorized] = socket.authorized && ids.some((id) => allowed.has(id))
    if (session[kAuthorized] !== true) {
      logger.warn(
        { peer: session.peer, identities: ids },
        'refusing session: client certificate is not the gateway',
      )
    } else {
      logger.debug({ peer: session.peer }, 'gateway session')
    }
    sessions.add(session)
    session.on('close', () => sessions.delete(session))
    session.on('error', (err) => logger.debug({ err: describeError(err) }, 'session error'))
    // Keep idle gateway sessions alive; the gateway pings too.
    session.setTimeout(0)
  }
  server.on('session', onSession)
  reverseServer.on('session', onSession)

  const onStream = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void => {
    // Reported through the relay or the response path; never crash on a stream error.
    // Module-level, so the listener does not keep this call's scope alive with the stream.
    stream.on('error', ignoreError)
    const session = stream.session as AgentSession | undefined
    if (session?.[kAuthorized] !== true) {
      respondStatus(
        stream,
        appError('PFG_ERR_AGENT_FORBIDDEN', 'only the gateway may use this agent'),
      )
      session?.close()
      return
    }
    const method = headers[':method']
    const path = headers[':path'] ?? ''
    if (path === REVERSE_HELLO_PATH && session[kHello] !== undefined) {
      if (method !== 'POST') return methodNotAllowed(stream)
      return answerHello(stream, headers, session[kHello])
    }
    if (path === '/healthz') {
      if (method !== 'GET' && method !== 'HEAD') return methodNotAllowed(stream)
      stream.respond({ ':status': 200, 'content-type': 'text/plain' })
      stream.end(method === 'HEAD' ? undefined : 'ok')
      return
    }
    if (path === '/readyz') {
      if (method !== 'GET' && method !== 'HEAD') return methodNotAllowed(stream)
      void readiness().then((r) => {
        if (stream.destroyed) return
        if (!r.ready) {
          respondStatus(stream, appError('PFG_ERR_AGENT_RUNTIME_UNAVAILABLE', r.detail))
          return
        }
        stream.respond({ ':status': 200, 'content-type': 'text/plain' })
        stream.end(method === 'HEAD' ? undefined : `ok: ${r.detail}\n`)
      })
      return
    }
    if (path === '/metrics') {
      if (method !== 'GET') return methodNotAllowed(stream)
      metrics.metrics().then(
        (text) => {
          if (stream.destroyed) return
          stream.respond({ ':status': 200, 'content-type': metrics.contentType })
          stream.end(text)
        },
        (err: unknown) => respondStatus(stream, err as Error),
      )
      return
    }
    const m = PF_PATH.exec(path)
    if (m === null) {
      respondStatus(stream, appError('PFG_ERR_ROUTE_NOT_FOUND', `no route for ${path}`))
      return
    }
    if (method !== 'POST') return methodNotAllowed(stream)
    void handlePortForward(stream, headers, m)
  }
  server.on('stream', onStream)
  reverseServer.on('stream', onStream)

  function answerHello(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    hello: ReverseHello,
  ): void {
    const replicaId = headers[REPLICA_ID_HEADER]
    const replicas = Number(headers[REPLICA_COUNT_HEADER])
    if (
      typeof replicaId !== 'string' ||
      !REPLICA_ID_RE.test(replicaId) ||
      !Number.isInteger(replicas) ||
      replicas < 1 ||
      replicas > 1024
    ) {
      respondStatus(stream, appError('PFG_ERR_PROTO_BAD_HEADER', 'invalid reverse hello'))
      return
    }
    const accepted = hello({ replicaId, replicas })
    stream.respond({ ':status': accepted ? 200 : 409, [NODE_NAME_HEADER]: options.nodeName })
    stream.end()
  }

  /** The dialer's readiness (the container runtime answers), never rejecting. */
  function readiness(): Promise<{ ready: boolean; detail: string }> {
    if (dialer.readiness === undefined)
      return Promise.resolve({ ready: true, detail: 'static dialer' })
    return dialer
      .readiness()
      .catch((err: unknown) => ({ ready: false, detail: describeError(err) }))
  }

  function methodNotAllowed(stream: ServerHttp2Stream): void {
    respondStatus(stream, appError('PFG_ERR_ROUTE_METHOD_NOT_ALLOWED', 'method not allowed'))
  }

  async function handlePortForward(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    m: RegExpExecArray,
  ): Promise<void> {
    let target: PodTarget
    let port: number
    try {
      const namespace = decodeURIComponent(m[1] as string)
      const name = decodeURIComponent(m[2] as string)
      assertNamespace(namespace)
      assertObjectName('pod', name)
      port = parsePortHeader(headers[PORT_HEADER])
      target = { namespace, name }
      const uid =
        headers[POD_UID_HEADER] ?? (m[3] !== undefined ? decodeURIComponent(m[3]) : undefined)
      if (uid !== undefined) {
        if (typeof uid !== 'string' || !POD_UID_RE.test(uid)) {
          throw appError('PFG_ERR_PROTO_BAD_HEADER', `invalid ${POD_UID_HEADER} header`)
        }
        target.uid = uid
      }
    } catch (err) {
      respondStatus(stream, err as AppError)
      return
    }
    const gatewayStreamId = headers[GATEWAY_STREAM_ID_HEADER]
    const abort = new AbortController()
    pending.add(abort)
    const onEarlyClose = (): void => abort.abort()
    stream.once('close', onEarlyClose)
    const started = performance.now()
    let socket: Socket
    try {
      socket = await dialer.dial(target, port, {
        signal: abort.signal,
        timeoutMs: options.connectTimeoutMs,
      })
    } catch (err) {
      mOpened.inc({ outcome: isAppError(err) ? err.code : 'error' })
      logger.info(
        {
          pod: `${target.namespace}/${target.name}`,
          port,
          stream: gatewayStreamId,
          err: describeError(err),
        },
        'dial failed',
      )
      respondStatus(stream, err as Error)
      return
    } finally {
      pending.delete(abort)
      stream.off('close', onEarlyClose)
    }
    mDial.observe((performance.now() - started) / 1000)
    if (stream.destroyed || stream.closed) {
      // The gateway gave up while we were dialling.
      socket.destroy()
      mOpened.inc({ outcome: 'cancelled' })
      return
    }
    mOpened.inc({ outcome: 'ok' })
    stream.respond({ ':status': 200 })
    // A pod failure after 200 resets the gateway's stream with CONNECT_ERROR (RFC 9113 §8.5).
    const relay = new DuplexRelay(h2Endpoint(stream, RST.CONNECT_ERROR), socketEndpoint(socket), {
      onDone(outcome) {
        relays.delete(relay)
        mBytes.inc({ direction: 'gateway_to_pod' }, outcome.bytesAtoB)
        mBytes.inc({ direction: 'pod_to_gateway' }, outcome.bytesBtoA)
        if (outcome.failure !== undefined) {
          logger.debug(
            {
              pod: `${target.namespace}/${target.name}`,
              port,
              stream: gatewayStreamId,
              failure: outcome.failure.side + ':' + outcome.failure.reason,
              err: outcome.failure.error ? describeError(outcome.failure.error) : undefined,
            },
            'stream ended abnormally',
          )
        }
      },
    })
    relays.add(relay)
  }

  return {
    server,
    metrics,
    activeStreams: () => relays.size,
    acceptReverse(socket, hello) {
      let created: AgentSession | undefined
      const capture = (s: AgentSession): void => {
        created = s
      }
      // The server creates the session synchronously while it handles 'connection'.
      reverseServer.once('session', capture)
      reverseServer.emit('connection', socket)
      reverseServer.off('session', capture)
      if (created === undefined) throw new Error('no HTTP/2 session on the reverse connection')
      created[kHello] = hello
      return created
    },
    listen(port, host) {
      return new Promise((resolve, reject) => {
        server.once('error', reject)
        server.listen(port, host, () => {
          server.off('error', reject)
          const addr = server.address()
          if (addr === null || typeof addr === 'string') return reject(new Error('no address'))
          resolve({ port: addr.port, host: addr.address })
        })
      })
    },
    async close(graceMs) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      for (const s of sessions) s.close()
      for (const a of pending) a.abort()
      const deadline = Date.now() + graceMs
      while (relays.size > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50))
      }
      for (const r of relays) r.abort('gateway')
      for (const s of sessions) s.destroy(undefined, h2c.NGHTTP2_CANCEL)
      await dialer.close()
      await closed
    },
  }
}
