/**
 * The gateway application, wired: one TLS port with ALPN `h2` and `http/1.1`. Native
 * port-forward streams are taken off the raw HTTP/2 server before Fastify
 * (http/stream-takeover.ts → edge/native-h2.ts), HTTP/1.1 upgrades go to the upgrade
 * handler (edge/upgrade.ts), and everything else is a Fastify route, registered here as
 * plugins: the error handling and the authentication hook first (they apply to every
 * route), then the routes (health, the Kubernetes API facade, port-forward paths without
 * their protocol, the node proxy, the admin API, the admin console). A new set of routes is one more plugin
 * in the list below (docs/architecture.md, "Where things go").
 *
 * `buildGateway` does not listen; main.ts does (fastify's app/listen split).
 *
 * @module
 */
import type { Server as HttpServer } from 'node:http'
import type { Http2Session, ServerHttp2Stream } from 'node:http2'
import { authInput } from './auth/authenticator.js'
import type { Authenticator } from './auth/authenticator.js'
import type { Authorizer } from './authz/authorizer.js'
import { ConnectionGuard, relayed } from './connections.js'
import { adminAuditRoutes } from './console/admin-audit.js'
import { gatewayConsoleBackend } from './console/gateway-backend.js'
import { CONSOLE_PREFIX, consolePlugin } from './console/plugin.js'
import type { ConnectionLimits } from './connections.js'
import { NativeH2Adapter } from './edge/native-h2.js'
import { UpgradeHandler } from './edge/upgrade.js'
import type { AuditPort, Forwarder } from './forward/forwarder.js'
import { adminRoutes } from './http/admin.js'
import { authentication } from './http/auth.js'
import { ClientSessions } from './http/client-sessions.js'
import { errorHandling } from './http/errors.js'
import { forwardPathRoutes } from './http/forward-paths.js'
import { healthRoutes } from './http/health.js'
import { nodeProxyRoutes } from './http/node-proxy.js'
import { createGatewayApp, listenMetrics, shutdown } from './http/server.js'
import { takeOverStreams } from './http/stream-takeover.js'
import type { GatewayApp } from './http/types.js'
import { kubeApiRoutes } from './kube/routes.js'
import { kubeTargetRoutes } from './kube/targets.js'
import type { GatewayMetrics } from './metrics.js'
import type { AgentPool } from './relay/agent-pool.js'
import type { PodRegistry } from './registry/types.js'
import { agentReadinessProblem } from './cluster-view.js'
import type { ClusterView } from './cluster-view.js'
import type { Logger } from '../shared/log.js'

/** Everything the gateway is made of. */
export interface GatewayDeps {
  tls: { cert: string | Buffer; key: string | Buffer; clientCa?: Buffer }
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
  /** The Kubernetes-compatible surface (default: the WebSocket tunnel is on). */
  kubernetes?: { websocketTunnel: boolean }
  /** Replicas and reverse agents: one admin view, agents in readiness (cluster-view.ts). */
  cluster?: ClusterView
  /** The admin console under /console/ (none: its paths are 404s); the trail it searches. */
  console?: { auditFile: string | undefined }
}

/** A built gateway. */
export interface Gateway {
  readonly app: GatewayApp
  /** Listens on the TLS port (and the metrics port when given). */
  listen(
    port: number,
    host: string,
    metrics?: { port: number; host: string } | null,
  ): Promise<{ port: number; metricsPort?: number }>
  /** Graceful shutdown: GOAWAY, drain up to `graceMs`, then end the rest. */
  close(graceMs: number): Promise<void>
}

/** Builds the gateway (not listening). */
export async function buildGateway(deps: GatewayDeps): Promise<Gateway> {
  const { logger, forwarder } = deps
  const app = createGatewayApp(deps)
  const server = app.server
  const budget = deps.budget
  const connections = new ConnectionGuard(server, {
    limits: deps.limits,
    metrics: deps.metrics,
    logger,
    ...(budget !== undefined ? { onAuthenticated: (s: Http2Session) => budget.register(s) } : {}),
  })
  const clients = new ClientSessions(server, {
    keepaliveMs: deps.limits.clientKeepaliveMs,
    logger,
    // Its streams end, then its connection.
    onUnresponsive: (session, why) => {
      const socket = session.socket
      native.unresponsive(session, why)
      session.destroy()
      connections.destroy(socket)
    },
  })
  const native = new NativeH2Adapter(forwarder, logger, connections, clients)
  takeOverStreams(server, {
    native,
    connections,
    forwarder,
    metrics: deps.metrics,
    maxHeaderBytes: deps.maxHeaderBytes,
  })
  // Kubernetes port-forward upgrades (SPDY, WebSocket) on HTTP/1.1 connections.
  const upgrades = new UpgradeHandler({
    forwarder,
    logger,
    websocketTunnel: deps.kubernetes?.websocketTunnel ?? true,
    onAuthenticated: (socket) => connections.authenticated(socket),
    keepaliveMs: deps.limits.clientKeepaliveMs,
  })
  server.on('upgrade', upgrades.listener)

  // Fastify: these two apply to every route registered after them.
  await app.register(errorHandling, { forwarder })
  await app.register(authentication, {
    authenticate: (request) =>
      deps.authenticator.authenticate(authInput(request.headers.authorization, request.socket)),
    authorizer: deps.authorizer,
    onAuthenticated: (socket) => connections.authenticated(socket),
  })
  // Routes.
  await app.register(healthRoutes, {
    registry: deps.registry,
    audit: deps.audit,
    forwarder,
    agentsProblem: () => agentReadinessProblem(deps.cluster, deps.registry),
  })
  await app.register(kubeApiRoutes, { registry: deps.registry, authorizer: deps.authorizer })
  await app.register(kubeTargetRoutes, { registry: deps.registry, authorizer: deps.authorizer })
  await app.register(forwardPathRoutes)
  if (deps.nodeProxy !== undefined) {
    await app.register(nodeProxyRoutes, { registry: deps.registry, ...deps.nodeProxy, logger })
  }
  await app.register(adminRoutes, { forwarder, cluster: deps.cluster })
  if (deps.console !== undefined) {
    // The admin console (console/: its own login, CSRF and headers) and its audit search
    // for API clients; both on one backend over the gateway's parts.
    const backend = gatewayConsoleBackend({ ...deps, auditFile: deps.console.auditFile })
    await app.register(adminAuditRoutes, { backend })
    await app.register(consolePlugin, {
      prefix: CONSOLE_PREFIX,
      backend,
      connection: {
        authenticated: (request) => connections.authenticated(request.raw.socket),
        longLived: (request) => {
          const stream = (request.raw as { stream?: ServerHttp2Stream }).stream
          if (stream !== undefined) relayed(stream)
        },
      },
    })
  }
  await app.ready()

  let metricsServer: HttpServer | undefined
  return {
    app,
    async listen(port, host, metrics) {
      await app.listen({ port, host })
      const addr = server.address()
      const result: { port: number; metricsPort?: number } = {
        port: typeof addr === 'object' && addr !== null ? addr.port : port,
      }
      if (metrics !== undefined && metrics !== null) {
        metricsServer = await listenMetrics(deps.metrics, metrics.port, metrics.host)
        const ma = metricsServer.address()
        if (typeof ma === 'object' && ma !== null) result.metricsPort = ma.port
      }
      return result
    },
    async close(graceMs) {
      await shutdown(
        { app, edges: [native, upgrades], forwarder, agents: deps.agents, connections },
        graceMs,
      )
      const m = metricsServer
      if (m !== undefined) await new Promise<void>((resolve) => m.close(() => resolve()))
    },
  }
}
