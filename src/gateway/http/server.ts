/**
 * The gateway's server lifecycle: one TLS port with ALPN `h2` and `http/1.1` (a Fastify
 * app over Node's HTTP/2 secure server), bounded before anything authenticates; the
 * metrics listener (plain HTTP, its own port); and the graceful shutdown.
 *
 * @module
 */
import { createServer as createHttpServer } from 'node:http'
import type { Server as HttpServer } from 'node:http'
import type { Http2SecureServer } from 'node:http2'
import Fastify, { LogController } from 'fastify'
import { h2SessionOptions } from '../../protocol/h2-settings.js'
import type { Logger } from '../../shared/log.js'
import { clientSessionMemoryMb, preauthSettings } from '../connections.js'
import type { ConnectionGuard, ConnectionLimits } from '../connections.js'
import type { EdgeConnection } from '../edge/contract.js'
import type { Forwarder } from '../forward/forwarder.js'
import type { GatewayMetrics } from '../metrics.js'
import type { AgentPool } from '../relay/agent-pool.js'
import { advertisedHeaderListSize, createClientErrorHandler } from './header-limit.js'
import type { GatewayApp } from './types.js'

/** What the server is made with. */
export interface ServerOptions {
  /** `clientCa`: client certificates are asked for and verified against it (x509 identities). */
  tls: { cert: string | Buffer; key: string | Buffer; clientCa?: Buffer }
  logger: Logger
  metrics: GatewayMetrics
  maxHeaderBytes: number
  limits: ConnectionLimits
}

/** The gateway's Fastify app on its TLS server (not listening). */
export function createGatewayApp(options: ServerOptions): GatewayApp {
  const { limits, maxHeaderBytes, logger } = options
  const app = Fastify({
    http2: true,
    https: {
      allowHTTP1: true,
      cert: options.tls.cert,
      key: options.tls.key,
      // Ask for a certificate, accept connections without one (token clients); only one
      // the handshake verified against the client CA counts (socket.authorized).
      ...(options.tls.clientCa !== undefined
        ? { ca: options.tls.clientCa, requestCert: true, rejectUnauthorized: false }
        : {}),
      minVersion: 'TLSv1.2',
      handshakeTimeout: limits.handshakeTimeoutMs,
      ...h2SessionOptions(),
      // What one client connection may make nghttp2 hold (the agent hop keeps its own).
      maxSessionMemory: clientSessionMemoryMb(limits),
      // Advertise more than the limit: a compliant client whose headers are a little too
      // large then gets the gateway's clear 431 instead of a local ENHANCE_YOUR_CALM.
      // A small stream allowance and window until a request authenticates.
      settings: {
        ...h2SessionOptions().settings,
        ...preauthSettings(limits),
        maxHeaderListSize: advertisedHeaderListSize(maxHeaderBytes),
      },
    },
    loggerInstance: logger,
    // HTTP/1.1 parse errors, header overflow included: Kubernetes Status bodies (431).
    clientErrorHandler: createClientErrorHandler(maxHeaderBytes, options.metrics, logger),
    // Per-request lines would log every kubectl discovery call; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
  })
  // The HTTP/1.1 side (upgrades) reads these properties: its header-size limit, how long
  // a request may take (headers: at most a minute), how long an idle keep-alive lingers.
  const http1 = app.server as Http2SecureServer & {
    maxHeaderSize?: number
    requestTimeout?: number
    headersTimeout?: number
    keepAliveTimeout?: number
  }
  http1.maxHeaderSize = maxHeaderBytes
  http1.requestTimeout = limits.requestTimeoutMs
  http1.headersTimeout = Math.min(60_000, limits.requestTimeoutMs)
  http1.keepAliveTimeout = 5000
  return app
}

/** Serves `GET /metrics` (Prometheus text) on a plain HTTP port; everything else is 404. */
export async function listenMetrics(
  metrics: GatewayMetrics,
  port: number,
  host: string,
): Promise<HttpServer> {
  const server = createHttpServer((req, res) => {
    if (req.url !== '/metrics' || req.method !== 'GET') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
      return
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      () => res.writeHead(500).end(),
    )
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve())
  })
  return server
}

/** How long shutdown waits, after the last connection closed, for its audit records. */
const SETTLE_MS = 500

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}

/** What a shutdown ends, in order. */
export interface ShutdownParts {
  app: GatewayApp
  /**
   * The edge adapters' connections (native HTTP/2 sessions, upgraded connections), drained
   * first and destroyed at the deadline, in this order.
   */
  edges: readonly EdgeConnection[]
  forwarder: Pick<Forwarder, 'drain' | 'settle'>
  agents: Pick<AgentPool, 'close'>
  connections: Pick<ConnectionGuard, 'destroyAll'>
}

/** Graceful shutdown: GOAWAY, drain up to `graceMs`, then end the rest. */
export async function shutdown(parts: ShutdownParts, graceMs: number): Promise<void> {
  const { app, edges, forwarder, agents, connections } = parts
  const deadline = Date.now() + graceMs
  // No new streams (GOAWAY to HTTP/2 clients; no new upgrades or SPDY streams); in-flight
  // ones continue until the deadline.
  for (const edge of edges) edge.drain()
  const closing = app.close()
  await forwarder.drain(graceMs)
  for (const edge of edges) edge.destroy()
  agents.close(false)
  // Connections still open (a peer that never reads or never closes its side, an
  // unfinished HTTP/1.1 request) may close by themselves until the deadline; then
  // their sockets are destroyed.
  await Promise.race([closing, sleep(Math.max(0, deadline - Date.now()))])
  connections.destroyAll()
  await closing
  // Every session.closed (and stream.closed) record is in before gateway.stopped.
  await Promise.race([forwarder.settle(), sleep(SETTLE_MS)])
  agents.close(true)
}
