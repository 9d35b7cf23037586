/**
 * The node proxy: `/proxy/nodes/{node}/…` for everything that is not `portForward`.
 * Admins reach each agent's `/healthz`, `/readyz` and `/metrics` through the gateway, over the
 * same mutual-TLS HTTP/2 hop the streams use (the agent accepts no one else); every
 * other path is a 404 `Status`, and the whole prefix requires the admin role (the
 * gateway's authentication hook, auth.ts, `config.auth: 'admin'`).
 *
 * Built on `@fastify/http-proxy` (which uses `@fastify/reply-from`) with an undici
 * dispatcher that speaks HTTP/2 (`allowH2`; the agent offers only `h2`) and presents the
 * gateway's client certificate. reply-from's own `http2` mode is not used: it keeps one
 * session to one fixed base URL, and the upstream here is chosen per request from the
 * registry (`NodeInfo`: address, port and the TLS server name to verify).
 *
 * Nothing of the client's request but `accept` and `user-agent` reaches the agent: its
 * bearer token, cookies and any other header stay at the gateway. The agent gets exactly
 * the path that was checked (decoded, without a query): `/proxy/nodes/n/%68ealthz` is
 * checked as `/healthz`, so `/healthz` is what is forwarded, never the raw text.
 *
 * @module
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import httpProxy from '@fastify/http-proxy'
import { Agent, Client } from 'undici'
import type { Dispatcher } from 'undici'
import { assertObjectName } from '../../protocol/names.js'
import { buildStatus } from '../../protocol/status.js'
import { appError, describeError, newRef } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import type { NodeInfo, PodRegistry } from '../registry/types.js'
import type { GatewayPlugin } from './types.js'

/** The route prefix (a Fastify pattern). */
const NODE_PROXY_PREFIX = '/proxy/nodes/:node'

/** Agent paths an admin may reach (GET and HEAD). */
const NODE_PROXY_PATHS: readonly string[] = ['/healthz', '/readyz', '/metrics']

/** Request headers passed on to the agent; every other header stays at the gateway. */
const FORWARDED_HEADERS = ['accept', 'user-agent'] as const

/** What the node proxy needs. */
export interface NodeProxyOptions {
  registry: PodRegistry
  /** The agent hop's TLS material (config.agents): CA of the agents, gateway client cert. */
  tls: { ca: string | Buffer; cert: string | Buffer; key: string | Buffer }
  connectTimeoutMs: number
  /** Bound on the agent's answer (headers, then body); default 10 s. */
  requestTimeoutMs?: number
  logger: Logger
}

/** The agent's origin, `https://host:port` (IPv6 in brackets). */
function agentOrigin(node: NodeInfo): string {
  const host = node.address.includes(':') ? `[${node.address}]` : node.address
  return new URL(`https://${host}:${node.port}`).origin
}

const kNode = Symbol('pfgate.nodeProxy.node')
const kPath = Symbol('pfgate.nodeProxy.path')
type ProxiedRequest = FastifyRequest & { [kNode]?: NodeInfo; [kPath]?: string }

/** The node proxy's routes (admins only). The dispatcher closes with the app. */
export const nodeProxyRoutes: GatewayPlugin<NodeProxyOptions> = (app, options) =>
  registerNodeProxy(app as unknown as FastifyInstance, options)

async function registerNodeProxy(app: FastifyInstance, options: NodeProxyOptions): Promise<void> {
  const { registry, logger } = options
  const timeout = options.requestTimeoutMs ?? 10_000
  /** Node by origin: the TLS server name to verify for a new connection. */
  const byOrigin = new Map<string, NodeInfo>()
  const dispatcher = new Agent({
    factory: (origin: string | URL, opts: object): Dispatcher => {
      const key = new URL(String(origin)).origin
      const node = byOrigin.get(key)
      return new Client(origin, {
        ...(opts as Client.Options),
        allowH2: true,
        headersTimeout: timeout,
        bodyTimeout: timeout,
        connect: {
          ca: options.tls.ca,
          cert: options.tls.cert,
          key: options.tls.key,
          rejectUnauthorized: true,
          minVersion: 'TLSv1.2',
          timeout: options.connectTimeoutMs,
          ...(node !== undefined ? { servername: node.tlsServerName ?? node.name } : {}),
        },
      })
    },
  })
  app.addHook('onClose', async () => {
    await dispatcher.close().catch(() => undefined)
  })

  const nodeOf = (request: object): NodeInfo => {
    const node = (request as ProxiedRequest)[kNode]
    if (node === undefined) throw new TypeError('node proxy: preHandler did not run')
    return node
  }

  await app.register(httpProxy, {
    prefix: NODE_PROXY_PREFIX,
    upstream: '',
    httpMethods: ['GET', 'HEAD'],
    config: { auth: 'admin' },
    disableRequestLogging: true,
    // The agent's bodies are small; no need to parse or buffer the client's (GET) body.
    proxyPayloads: false,
    undici: dispatcher as unknown as { request: Dispatcher['request'] },
    preHandler(request, _reply, done) {
      try {
        const params = request.params as { node: string; '*'?: string }
        const name = decodeURIComponent(params.node)
        assertObjectName('node', name)
        const path = `/${params['*'] ?? ''}`
        if (!NODE_PROXY_PATHS.includes(path)) {
          throw appError(
            'PFG_ERR_ROUTE_NOT_FOUND',
            `the node proxy serves only ${NODE_PROXY_PATHS.join(' and ')} (not ${path})`,
          )
        }
        const node = registry.getNode(name)
        if (node === undefined) {
          throw appError('PFG_ERR_ROUTE_NOT_FOUND', `nodes "${name}" not found`)
        }
        byOrigin.set(agentOrigin(node), node)
        ;(request as ProxiedRequest)[kNode] = node
        ;(request as ProxiedRequest)[kPath] = path
        done()
      } catch (err) {
        done(err as Error)
      }
    },
    // Forward the path the preHandler checked, not the (raw, maybe percent-encoded) one
    // http-proxy derives from the URL, and no query.
    handler: (request, reply, _dest, replyOptions) => {
      const path = (request as ProxiedRequest)[kPath]
      if (path === undefined) throw new TypeError('node proxy: preHandler did not run')
      return reply.from(path, { ...replyOptions, queryString: () => '' })
    },
    replyOptions: {
      getUpstream: (request) => agentOrigin(nodeOf(request)),
      rewriteRequestHeaders: (request, headers) => {
        const out: Record<string, string> = {}
        if (typeof headers.host === 'string') out.host = headers.host
        for (const h of FORWARDED_HEADERS) {
          const v = request.headers[h]
          if (typeof v === 'string') out[h] = v
        }
        return out
      },
      onError: (reply, { error }) => {
        const node = nodeOf(reply.request)
        const ref = newRef()
        logger.warn(
          {
            node: node.name,
            err: describeError((error as Error & { cause?: unknown }).cause ?? error),
            ref,
          },
          'node proxy: agent request failed',
        )
        const message = `node agent ${node.name} cannot be reached (ref ${ref})`
        void reply
          .code(502)
          .type('application/json')
          .send(buildStatus(502, message, 'PFG_ERR_RELAY_AGENT_UNAVAILABLE'))
      },
    },
  })
}
