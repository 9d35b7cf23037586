/**
 * The authentication hook of every Fastify route. A route says who may call it in its
 * config (`config: { auth: 'public' | 'user' | 'admin' }`); a route without one (and any
 * unknown path) requires an authenticated user: default deny. The hook authenticates the
 * request (`authenticate`: today the bearer token, docs/security.md), tells the
 * connection guard that the connection has authenticated something, refuses
 * impersonation headers and checks the admin role; refusals are thrown, and the error
 * handler (errors.ts) records and answers them. Routes read `request.identity`.
 *
 * Native streams and upgrades do not pass here: the forwarder authenticates them itself
 * (docs/architecture.md).
 *
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http2'
import type { Socket } from 'node:net'
import fp from 'fastify-plugin'
import { appError, isAppError } from '../../shared/errors.js'
import type { Identity } from '../auth/authenticator.js'
import type { Authorizer } from '../authz/authorizer.js'
import { impersonationOf, impersonationRefused } from '../impersonation.js'
import type { GatewayPlugin } from './types.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route: anyone, any authenticated user, or admins. */
    auth?: RouteAuth
  }
  interface FastifyRequest {
    /** Who the request is, once the hook has authenticated it (not on `public` routes). */
    identity?: Identity
  }
}

/** Who may call a route. */
export type RouteAuth = 'public' | 'user' | 'admin'

/** What an identity source may read of a request: its headers and its (TLS) socket. */
export interface AuthRequest {
  headers: IncomingHttpHeaders
  socket: Socket
}

/** What the hook needs. */
export interface AuthOptions {
  /** Who the request is; throws an AppError (401) when it cannot say. */
  authenticate(request: AuthRequest): Promise<Identity>
  authorizer: Pick<Authorizer, 'isAdmin'>
  /** Told of each authenticated request's connection (the connection guard lifts its bounds). */
  onAuthenticated(socket: { remoteAddress?: string; remotePort?: number }): void
}

/** The identity of a request on a `user` or `admin` route (the hook has set it). */
export function identityOf(request: { identity?: Identity }): Identity {
  return request.identity as Identity
}

const plugin: GatewayPlugin<AuthOptions> = async (app, options) => {
  app.decorateRequest('identity', undefined)
  app.addHook('onRequest', async (request) => {
    // Routes without a config (404s) still require a user: default deny.
    const mode = request.routeOptions.config.auth ?? 'user'
    if (mode === 'public') return
    try {
      request.identity = await options.authenticate(request)
      options.onAuthenticated(request.raw.socket)
    } catch (err) {
      throw isAppError(err) ? err : appError('PFG_ERR_AUTH_INVALID', 'Unauthorized')
    }
    const impersonation = impersonationOf(request.headers)
    if (impersonation !== undefined) throw impersonationRefused(request.identity, impersonation)
    if (mode === 'admin' && !options.authorizer.isAdmin(request.identity)) {
      throw appError('PFG_ERR_AUTH_FORBIDDEN', `user "${request.identity.user}" is not an admin`)
    }
  })
}

/** Registers the authentication hook on the whole app (not encapsulated). */
export const authentication = fp(plugin)
