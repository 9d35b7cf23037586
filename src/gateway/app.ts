/**
 * The gateway application: one TLS port with ALPN `h2` and `http/1.1`.
 * Native port-forward streams are taken off the raw HTTP/2 server before
 * Fastify's compatibility layer (edge/native-h2.ts); everything else — health,
 * readiness, the Kubernetes API facade, the admin API — is a Fastify route with
 * one authentication hook and Kubernetes `Status` errors.
 *
 * `buildGateway` does not listen; main.ts does (fastify's app/listen split).
 *
 * @module
 */
import { createServer as createHttpServer } from 'node:http'
import type { Server as HttpServer } from 'node:http'
import type {
  Http2SecureServer,
  Http2ServerRequest,
  Http2ServerResponse,
  Http2Session,
  IncomingHttpHeaders,
  ServerHttp2Stream,
} from 'node:http2'
import Fastify, { LogController } from 'fastify'
import type { FastifyInstance } from 'fastify'
import { buildStatus } from '../protocol/status.js'
import { h2SessionOptions, widenConnectionWindow } from '../protocol/h2-settings.js'
import { assertNamespace, assertObjectName } from '../protocol/names.js'
import {
  appError,
  describeError,
  hidesDetail,
  isAppError,
  newRef,
  publicError,
} from '../shared/errors.js'
import type { AppError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import type { Authenticator, Identity } from './auth/authenticator.js'
import type { Authorizer } from './authz/authorizer.js'
import { formatAddress, shownUserAgent } from './forwarder.js'
import type { AuditPort, Forwarder } from './forwarder.js'
import type { GatewayMetrics } from './metrics.js'
import type { AgentPool } from './relay/agent-pool.js'
import type { PodRegistry } from './registry/types.js'
import { NATIVE_PATH, NativeH2Adapter } from './edge/native-h2.js'
import {
  advertisedHeaderListSize,
  createClientErrorHandler,
  headerListSize,
  headerTooLargeMessage,
} from './header-limit.js'
import { impersonationOf, impersonationRefused } from './impersonation.js'
import { registerNodeProxy } from './node-proxy.js'
import { registerTargetRoutes } from './kube-targets.js'
import { keepAlive } from '../shared/keepalive.js'
import { ConnectionGuard, clientSessionMemoryMb, preauthSettings } from './connections.js'
import type { ConnectionLimits } from './connections.js'
import { respondStatus } from '../shared/h2-util.js'
import { UpgradeHandler } from './edge/upgrade.js'
import {
  aggregatedDiscovery,
  aggregatedDiscoveryContentType,
  aggregatedDiscoveryVersion,
  apiGroupList,
  apiVersions,
  coreV1Resources,
  podObject,
} from './kube-api.js'
import { matchesLabels, parseLabelSelector, podList, podTable, wantsTable } from './kube-list.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route: anyone, any authenticated user, or admins. */
    auth?: 'public' | 'user' | 'admin'
  }
  interface FastifyRequest {
    identity?: Identity
  }
}

/** Everything the gateway is made of. */
export interface GatewayDeps {
  tls: { cert: string | Buffer; key: string | Buffer }
  logger: Logger
  registry: PodRegistry
  authenticator: Authenticator
  authorizer: Authorizer
  agents: AgentPool
  audit: AuditPort
  metrics: GatewayMetrics
  forwarder: Forwarder
  maxHeaderBytes: number
  /** Bounds on client connections (src/gateway/connections.ts) and their PING interval. */
  limits: ConnectionLimits & { clientKeepaliveMs: number }
  /** Sets authenticated connections' stream windows (src/gateway/buffer-budget.ts). */
  budget?: { register(session: Http2Session): void }
  /** The agent hop's mTLS material, for the admin node proxy (none: its paths are 404s). */
  nodeProxy?: {
    tls: { ca: string | Buffer; cert: string | Buffer; key: string | Buffer }
    connectTimeoutMs: number
  }
  /** Reported by `/version` (kubectl's gcloud dispatcher picks a kubectl from it). */
  version?: { major: string; minor: string; gitVersion: string }
  /** The Kubernetes-compatible surface (default: the WebSocket tunnel is on). */
  kubernetes?: { websocketTunnel: boolean }
}

/** The Fastify instance type of the gateway (HTTP/2 secure server with HTTP/1.1 fallback). */
export type GatewayApp = FastifyInstance<
  Http2SecureServer,
  Http2ServerRequest,
  Http2ServerResponse,
  Logger
>

/** A built gateway. */
export interface Gateway {
  readonly app: GatewayApp
  readonly server: Http2SecureServer
  /** Listens on the TLS port (and the metrics port when given). */
  listen(
    port: number,
    host: string,
    metrics?: { port: number; host: string } | null,
  ): Promise<{ port: number; metricsPort?: number }>
  /** Graceful shutdown: GOAWAY, drain up to `graceMs`, then end the rest. */
  close(graceMs: number): Promise<void>
}

/** How long shutdown waits, after the last connection closed, for its audit records. */
const SETTLE_MS = 500

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}

/** The Kubernetes version the gateway reports (kubectl ≥ 1.31 then uses the WebSocket tunnel). */
export const DEFAULT_VERSION = { major: '1', minor: '33', gitVersion: 'v1.33.0-pfgate' }

/** The part of a Fastify reply `sendStatus` uses (any server flavour). */
interface ReplyLike {
  code(status: number): ReplyLike
  headers(values: Record<string, string>): ReplyLike
  type(contentType: string): ReplyLike
  send(payload: unknown): unknown
}

/** The part of a Fastify request a refusal's record is made of (any server flavour). */
interface RefusedRequest {
  method: string
  url: string
  params: unknown
  socket: unknown
  headers: IncomingHttpHeaders
  identity?: Identity
}

function sendStatus(reply: ReplyLike, err: AppError, extra: Record<string, string> = {}): unknown {
  return reply
    .code(err.statusCode)
    .headers(extra)
    .type('application/json')
    .send(buildStatus(err.statusCode, err.message, err.code))
}

/** Builds the gateway (not listening). */
export async function buildGateway(deps: GatewayDeps): Promise<Gateway> {
  const { logger, forwarder } = deps
  const app = Fastify({
    http2: true,
    https: {
      allowHTTP1: true,
      cert: deps.tls.cert,
      key: deps.tls.key,
      minVersion: 'TLSv1.2',
      handshakeTimeout: deps.limits.handshakeTimeoutMs,
      ...h2SessionOptions(),
      // What one client connection may make nghttp2 hold (the agent hop keeps its own).
      maxSessionMemory: clientSessionMemoryMb(deps.limits),
      // Advertise more than the limit: a compliant client whose headers are a little too
      // large then gets the gateway's clear 431 instead of a local ENHANCE_YOUR_CALM.
      // A small stream allowance and window until a request authenticates.
      settings: {
        ...h2SessionOptions().settings,
        ...preauthSettings(deps.limits),
        maxHeaderListSize: advertisedHeaderListSize(deps.maxHeaderBytes),
      },
    },
    loggerInstance: logger,
    // HTTP/1.1 parse errors, header overflow included: Kubernetes Status bodies (431).
    clientErrorHandler: createClientErrorHandler(deps.maxHeaderBytes, deps.metrics, logger),
    // Per-request lines would log every kubectl discovery call; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
  })
  const server = app.server
  // The HTTP/1.1 side (upgrades) reads these properties: its header-size limit, how long
  // a request may take (headers: at most a minute), how long an idle keep-alive lingers.
  const http1 = server as Http2SecureServer & {
    maxHeaderSize?: number
    requestTimeout?: number
    headersTimeout?: number
    keepAliveTimeout?: number
  }
  http1.maxHeaderSize = deps.maxHeaderBytes
  http1.requestTimeout = deps.limits.requestTimeoutMs
  http1.headersTimeout = Math.min(60_000, deps.limits.requestTimeoutMs)
  http1.keepAliveTimeout = 5000
  const budget = deps.budget
  const connections = new ConnectionGuard(server, {
    limits: deps.limits,
    metrics: deps.metrics,
    logger,
    ...(budget !== undefined ? { onAuthenticated: (s: Http2Session) => budget.register(s) } : {}),
  })
  const sessions = new Set<Http2Session>()
  server.on('session', (session: Http2Session) => {
    widenConnectionWindow(session)
    sessions.add(session)
    session.on('error', (err) => logger.debug({ err: describeError(err) }, 'client session error'))
    // A client whose link went down says nothing: PINGs find it, and its streams end.
    const socket = session.socket
    const stopPings = keepAlive(session, deps.limits.clientKeepaliveMs, (why) => {
      if (session.destroyed) return
      native.unresponsive(session, why)
      session.destroy()
      connections.destroy(socket)
    })
    session.once('close', () => {
      sessions.delete(session)
      stopPings()
    })
  })

  // Take native streams off the raw server before Node's compat layer (which Fastify uses).
  const native = new NativeH2Adapter(forwarder, logger, connections)
  const compat = server.listeners('stream') as ((...args: unknown[]) => void)[]
  server.removeAllListeners('stream')
  server.on(
    'stream',
    (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, raw: string[]) => {
      connections.watch(stream)
      const path = headers[':path']
      const m = path !== undefined ? NATIVE_PATH.exec(path) : null
      // Node does not enforce the SETTINGS_MAX_HEADER_LIST_SIZE it advertises: measure.
      const size = headerListSize(raw)
      if (m !== null) {
        native.handle(stream, headers, m, size)
        return
      }
      if (size > deps.maxHeaderBytes) {
        stream.on('error', () => undefined)
        deps.metrics.limitHits.inc({ limit: 'header-size' })
        const socket = stream.session?.socket
        const ua = headers['user-agent']
        // Recorded and logged within the denial flood budget.
        const err = forwarder.requestDenied(
          {
            method: String(headers[':method'] ?? ''),
            path: (path ?? '').split('?')[0] ?? '',
            sourceAddress: formatAddress(socket?.remoteAddress, socket?.remotePort),
            ...(typeof ua === 'string' ? { userAgent: ua } : {}),
          },
          appError(
            'PFG_ERR_LIMIT_HEADER_TOO_LARGE',
            headerTooLargeMessage(deps.maxHeaderBytes, size),
          ),
        )
        respondStatus(stream, err)
        return
      }
      for (const l of compat) l.call(server, stream, headers, flags, raw)
    },
  )

  // Kubernetes port-forward upgrades (SPDY, WebSocket) on HTTP/1.1 connections.
  const upgrades = new UpgradeHandler({
    forwarder,
    logger,
    websocketTunnel: deps.kubernetes?.websocketTunnel ?? true,
    onAuthenticated: (socket) => connections.authenticated(socket),
    keepaliveMs: deps.limits.clientKeepaliveMs,
  })
  server.on('upgrade', upgrades.listener)

  app.decorateRequest('identity', undefined)
  // Refusals are thrown: the error handler records them (request.denied) and answers.
  app.addHook('onRequest', async (request) => {
    // Routes without a config (404s) still require a user: default deny.
    const mode = request.routeOptions.config.auth ?? 'user'
    if (mode === 'public') return
    try {
      request.identity = await deps.authenticator.authenticate(request.headers.authorization)
      connections.authenticated(request.raw.socket)
    } catch (err) {
      throw isAppError(err) ? err : appError('PFG_ERR_AUTH_INVALID', 'Unauthorized')
    }
    const impersonation = impersonationOf(request.headers)
    if (impersonation !== undefined) throw impersonationRefused(request.identity, impersonation)
    if (mode === 'admin' && !deps.authorizer.isAdmin(request.identity)) {
      throw appError('PFG_ERR_AUTH_FORBIDDEN', `user "${request.identity.user}" is not an admin`)
    }
  })

  /** Records a refused request (request.denied, within the flood budget); what the client is told. */
  const refused = (request: RefusedRequest, err: AppError): AppError => {
    const params = (request.params ?? {}) as { ns?: unknown; pod?: unknown }
    const socket = request.socket as { remoteAddress?: string; remotePort?: number } | undefined
    const ua = request.headers['user-agent']
    return forwarder.requestDenied(
      {
        method: request.method,
        path: request.url.split('?')[0] ?? '',
        sourceAddress: formatAddress(socket?.remoteAddress, socket?.remotePort),
        ...(typeof ua === 'string' ? { userAgent: ua } : {}),
        ...(typeof params.ns === 'string' ? { namespace: params.ns } : {}),
        ...(typeof params.pod === 'string' ? { pod: params.pod } : {}),
        ...(request.identity !== undefined ? { identity: request.identity } : {}),
      },
      err,
    )
  }

  app.setErrorHandler((err, request, reply) => {
    if (isAppError(err)) {
      if (err.statusCode === 401) {
        return sendStatus(reply, refused(request, err), {
          'www-authenticate': 'Bearer realm="pfgate"',
        })
      }
      if (err.statusCode === 403) return sendStatus(reply, refused(request, err))
      if (hidesDetail(err)) {
        // The client gets a generic message and a ref; the log line has the details.
        const ref = newRef()
        request.log.error({ err: describeError(err), ref }, 'request failed')
        return sendStatus(reply, publicError(err, ref))
      }
      if (err.statusCode >= 500) request.log.error({ err: describeError(err) }, 'request failed')
      return sendStatus(reply, err)
    }
    const status = (err as { statusCode?: number }).statusCode ?? 500
    if (status >= 500) {
      const ref = newRef()
      request.log.error({ err: describeError(err), ref }, 'request failed')
      return reply
        .code(status)
        .type('application/json')
        .send(buildStatus(status, `internal error (ref ${ref})`))
    }
    return reply
      .code(status)
      .type('application/json')
      .send(buildStatus(status, (err as Error).message))
  })
  app.setNotFoundHandler({ preHandler: undefined }, (request, reply) => {
    return sendStatus(
      reply,
      appError(
        'PFG_ERR_ROUTE_NOT_FOUND',
        `the server could not find the requested resource (${request.method} ${request.url.split('?')[0] ?? ''})`,
      ),
    )
  })

  // --- health
  app.get('/healthz', { config: { auth: 'public' } }, async () => 'ok')
  app.get('/livez', { config: { auth: 'public' } }, async () => 'ok')
  app.get('/readyz', { config: { auth: 'public' } }, async (_req, reply) => {
    const problems: string[] = []
    if (!deps.registry.isReady()) problems.push('registry not synced')
    if (!deps.audit.healthy()) problems.push('audit sink unavailable')
    if (forwarder.draining) problems.push('shutting down')
    if (problems.length === 0) return 'ok'
    return reply
      .code(503)
      .type('application/json')
      .send(buildStatus(503, `not ready: ${problems.join(', ')}`, 'PFG_ERR_ROUTE_NOT_READY'))
  })
  app.get('/version', { config: { auth: 'public' } }, async () => {
    const v = deps.version ?? DEFAULT_VERSION
    return {
      major: v.major,
      minor: v.minor,
      gitVersion: v.gitVersion,
      gitCommit: 'pfgate',
      gitTreeState: 'clean',
      buildDate: '2026-01-01T00:00:00Z',
      goVersion: 'n/a (pfgate on node ' + process.version + ')',
      compiler: 'pfgate',
      platform: `${process.platform}/${process.arch}`,
    }
  })

  // --- Kubernetes API facade: the pod a client is about to forward to.
  app.get<{ Params: { ns: string; pod: string } }>(
    '/api/v1/namespaces/:ns/pods/:pod',
    async (request, reply) => {
      const { ns, pod } = request.params
      assertNamespace(ns)
      assertObjectName('pod', pod)
      const identity = request.identity as Identity
      // Default deny: a pod is visible only to those who may forward to it (no existence leak).
      if (!deps.authorizer.canAccessPod(identity, ns, pod)) {
        throw appError(
          'PFG_ERR_AUTH_FORBIDDEN',
          `pods "${pod}" is forbidden: user "${identity.user}" cannot get resource "pods" in namespace "${ns}"`,
        )
      }
      if (!deps.registry.isReady()) {
        throw appError(
          'PFG_ERR_ROUTE_NOT_READY',
          'the pod registry has not synced yet; retry shortly',
        )
      }
      const info = deps.registry.getPod(ns, pod)
      if (info === undefined) {
        return sendStatus(reply, appError('PFG_ERR_ROUTE_POD_NOT_FOUND', `pods "${pod}" not found`))
      }
      if (wantsTable(request.headers.accept)) {
        return reply.type('application/json').send(podTable([info], Date.now()))
      }
      return reply.type('application/json').send(podObject(info))
    },
  )

  // kubectl get pods [-n NS | -A] [-l SELECTOR]: the pods the user may forward to.
  for (const url of ['/api/v1/namespaces/:ns/pods', '/api/v1/pods']) {
    app.get<{ Params: { ns?: string }; Querystring: Record<string, string | undefined> }>(
      url,
      async (request, reply) => {
        const ns = request.params.ns
        if (ns !== undefined) assertNamespace(ns)
        const q = request.query
        if (q.watch === 'true' || q.watch === '1') {
          throw appError(
            'PFG_ERR_ROUTE_METHOD_NOT_ALLOWED',
            'the server does not allow this method on the requested resource (watch pods)',
          )
        }
        if (q.fieldSelector !== undefined && q.fieldSelector !== '') {
          throw appError(
            'PFG_ERR_ROUTE_BAD_QUERY',
            'field selectors are not supported on pods here',
          )
        }
        const selector = parseLabelSelector(q.labelSelector)
        if (!deps.registry.isReady()) {
          throw appError(
            'PFG_ERR_ROUTE_NOT_READY',
            'the pod registry has not synced yet; retry shortly',
          )
        }
        const identity = request.identity as Identity
        const pods = deps.registry
          .listPods()
          .filter(
            (p) =>
              (ns === undefined || p.namespace === ns) &&
              matchesLabels(p.labels, selector) &&
              deps.authorizer.canAccessPod(identity, p.namespace, p.name),
          )
          .sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name))
        return reply
          .type('application/json')
          .send(wantsTable(request.headers.accept) ? podTable(pods, Date.now()) : podList(pods))
      },
    )
  }

  // Discovery: legacy documents, or aggregated ones when the Accept header asks for them.
  for (const root of ['api', 'apis'] as const) {
    app.get(`/${root}`, async (request, reply) => {
      const v = aggregatedDiscoveryVersion(request.headers.accept)
      reply.header('vary', 'Accept')
      if (v !== undefined) {
        // A Buffer keeps the Content-Type verbatim (for a string Fastify would quote its
        // parameters and add a charset, unlike kube-apiserver).
        return reply
          .header('content-type', aggregatedDiscoveryContentType(v))
          .send(Buffer.from(JSON.stringify(aggregatedDiscovery(v, root))))
      }
      return reply
        .type('application/json')
        .send(root === 'api' ? apiVersions(request.headers.host ?? '') : apiGroupList())
    })
  }
  app.get('/api/v1', async (_request, reply) =>
    reply.type('application/json').send(coreV1Resources()),
  )
  app.route({
    method: ['POST', 'PUT', 'PATCH', 'DELETE'],
    url: '/api/v1/namespaces/:ns/pods/:pod',
    handler: async (request) => {
      throw appError(
        'PFG_ERR_ROUTE_METHOD_NOT_ALLOWED',
        `the server does not allow this method on the requested resource (${request.method} pods)`,
      )
    },
  })
  // Port-forward needs an upgrade (edge/upgrade.ts); a plain request is the apiserver's 400.
  for (const path of [
    '/api/v1/namespaces/:ns/pods/:pod/portforward',
    '/api/v1/nodes/:node/proxy/portForward/:ns/:pod',
  ]) {
    app.all(path, async () => {
      throw appError('PFG_ERR_PROTO_UPGRADE_REQUIRED', 'Upgrade request required')
    })
  }

  // The native path over HTTP/1.1 without an upgrade cannot carry a half-closable stream.
  app.all('/proxy/nodes/:node/portForward/:ns/:pod', async () => {
    throw appError(
      'PFG_ERR_PROTO_HTTP2_REQUIRED',
      'native port-forward needs HTTP/2 (or a SPDY/WebSocket upgrade on the Kubernetes paths)',
    )
  })

  // Services and apps/v1 workloads, for kubectl's own resolution of svc/ and deployment/.
  registerTargetRoutes(app as unknown as FastifyInstance, {
    registry: deps.registry,
    authorizer: deps.authorizer,
  })

  // --- Node proxy (admins: each agent's /healthz and /metrics over the mTLS hop)
  if (deps.nodeProxy !== undefined) {
    await registerNodeProxy(app as unknown as FastifyInstance, {
      registry: deps.registry,
      tls: deps.nodeProxy.tls,
      connectTimeoutMs: deps.nodeProxy.connectTimeoutMs,
      logger,
    })
  }

  // --- Admin API
  app.get('/admin/v1/sessions', { config: { auth: 'admin' } }, async () => ({
    items: forwarder.sessions().map((s) => ({
      id: s.id,
      // Every user that authenticated on the connection; `user`/`groups` when only one did.
      users: s.users,
      ...(s.identities.size === 1
        ? { user: s.users[0], groups: s.identities.get(s.users[0] as string) }
        : {}),
      protocol: s.protocol,
      sourceAddress: s.sourceAddress,
      ...(s.userAgent !== undefined ? { userAgent: shownUserAgent(s.userAgent) } : {}),
      openedAt: new Date(s.openedAt).toISOString(),
      streams: s.streams.size,
      bytesClientToPod:
        s.bytesClientToPod + [...s.streams].reduce((n, x) => n + (x.relay?.bytesAtoB ?? 0), 0),
      bytesPodToClient:
        s.bytesPodToClient + [...s.streams].reduce((n, x) => n + (x.relay?.bytesBtoA ?? 0), 0),
    })),
  }))
  app.get('/admin/v1/streams', { config: { auth: 'admin' } }, async () => ({
    items: forwarder.streams().map((s) => s.view()),
  }))
  /** The Status body of an admin action that worked. */
  const successStatus = (message: string): Record<string, unknown> => ({
    kind: 'Status',
    apiVersion: 'v1',
    status: 'Success',
    code: 200,
    message,
  })
  app.delete<{ Params: { id: string } }>(
    '/admin/v1/streams/:id',
    { config: { auth: 'admin' } },
    async (request) => {
      const admin = (request.identity as Identity).user
      if (!forwarder.killStream(request.params.id, admin)) {
        throw appError('PFG_ERR_ROUTE_NOT_FOUND', `no live stream "${request.params.id}"`)
      }
      request.log.info({ stream: request.params.id, admin }, 'admin ended a stream')
      return successStatus('stream ended')
    },
  )
  app.delete<{ Params: { id: string } }>(
    '/admin/v1/sessions/:id',
    { config: { auth: 'admin' } },
    async (request) => {
      const admin = (request.identity as Identity).user
      if (!forwarder.killSession(request.params.id, admin)) {
        throw appError('PFG_ERR_ROUTE_NOT_FOUND', `no live session "${request.params.id}"`)
      }
      request.log.info({ session: request.params.id, admin }, 'admin ended a session')
      return successStatus('session ended')
    },
  )

  await app.ready()

  let metricsServer: HttpServer | undefined
  return {
    app,
    server,
    async listen(port, host, metrics) {
      await app.listen({ port, host })
      const addr = server.address()
      const result: { port: number; metricsPort?: number } = {
        port: typeof addr === 'object' && addr !== null ? addr.port : port,
      }
      if (metrics !== undefined && metrics !== null) {
        metricsServer = createHttpServer((req, res) => {
          if (req.url !== '/metrics' || req.method !== 'GET') {
            res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
            return
          }
          deps.metrics.registry.metrics().then(
            (text) =>
              res.writeHead(200, { 'content-type': deps.metrics.registry.contentType }).end(text),
            () => res.writeHead(500).end(),
          )
        })
        await new Promise<void>((resolve, reject) => {
          metricsServer?.once('error', reject)
          metricsServer?.listen(metrics.port, metrics.host, () => resolve())
        })
        const ma = metricsServer.address()
        if (typeof ma === 'object' && ma !== null) result.metricsPort = ma.port
      }
      return result
    },
    async close(graceMs) {
      const deadline = Date.now() + graceMs
      // GOAWAY to every client: no new streams; in-flight ones continue until the deadline.
      for (const s of sessions) if (!s.closed && !s.destroyed) s.close()
      // Upgraded connections: no new upgrades or SPDY streams; open streams go on.
      upgrades.drain()
      const closing = app.close()
      await forwarder.drain(graceMs)
      upgrades.destroy()
      deps.agents.close(false)
      for (const s of sessions) s.destroy()
      // Connections still open (a peer that never reads or never closes its side, an
      // unfinished HTTP/1.1 request) may close by themselves until the deadline; then
      // their sockets are destroyed.
      await Promise.race([closing, sleep(Math.max(0, deadline - Date.now()))])
      connections.destroyAll()
      await closing
      // Every session.closed (and stream.closed) record is in before gateway.stopped.
      await Promise.race([forwarder.settle(), sleep(SETTLE_MS)])
      deps.agents.close(true)
      if (metricsServer !== undefined) {
        await new Promise<void>((resolve) => metricsServer?.close(() => resolve()))
      }
    },
  }
}
