/**
 * The types every module of the gateway's HTTP side shares: the Fastify instance of the
 * gateway (HTTP/2 secure server with HTTP/1.1 fallback) and the plugin shape its routes
 * are written in.
 *
 * @module
 */
import type { Http2SecureServer, Http2ServerRequest, Http2ServerResponse } from 'node:http2'
import type { FastifyInstance, FastifyPluginAsync, FastifyTypeProviderDefault } from 'fastify'
import type { Logger } from '../../shared/log.js'

/** The Fastify instance type of the gateway. */
export type GatewayApp = FastifyInstance<
  Http2SecureServer,
  Http2ServerRequest,
  Http2ServerResponse,
  Logger
>

/** A plugin of the gateway's Fastify app (routes, hooks) with its options. */
export type GatewayPlugin<Options extends object = Record<never, never>> = FastifyPluginAsync<
  Options,
  Http2SecureServer,
  FastifyTypeProviderDefault,
  Logger
>
