/**
 * Every error of a Fastify route becomes a Kubernetes `Status` body: refusals (401 with
 * a `WWW-Authenticate` challenge, 403) are recorded as `request.denied` within the
 * denial flood budget, errors that hide their detail get a generic message and a ref
 * (the log line has the detail), other errors keep their message; unknown paths are a
 * 404 `Status`. Routes throw `AppError`s and never answer errors themselves.
 *
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http2'
import fp from 'fastify-plugin'
import { buildStatus } from '../../protocol/status.js'
import { appError, isAppError } from '../../shared/errors.js'
import { describeError, hidesDetail, newRef, publicError } from '../../shared/errors.js'
import type { AppError } from '../../shared/errors.js'
import type { Identity } from '../auth/authenticator.js'
import { formatAddress } from '../forward/forwarder.js'
import type { Forwarder } from '../forward/forwarder.js'
import type { GatewayPlugin } from './types.js'

/** The part of a Fastify reply `sendStatus` uses (any server flavour). */
interface ReplyLike {
  code(status: number): ReplyLike
  headers(values: Record<string, string>): ReplyLike
  type(contentType: string): ReplyLike
  send(payload: unknown): unknown
}

/** Answers `err` as a Kubernetes `Status` (with extra headers). */
export function sendStatus(
  reply: ReplyLike,
  err: AppError,
  extra: Record<string, string> = {},
): unknown {
  return reply
    .code(err.statusCode)
    .headers(extra)
    .type('application/json')
    .send(buildStatus(err.statusCode, err.message, err.code))
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

/** What the error handler needs: where refusals are recorded. */
export interface ErrorOptions {
  forwarder: Pick<Forwarder, 'requestDenied'>
}

const plugin: GatewayPlugin<ErrorOptions> = async (app, { forwarder }) => {
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
      // An identity source or RBAC could not ask its server: refused, recorded with its ref.
      if (err.code === 'PFG_ERR_AUTH_UNAVAILABLE') return sendStatus(reply, refused(request, err))
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
}

/** Registers the error and not-found handlers on the whole app (not encapsulated). */
export const errorHandling = fp(plugin)
