/**
 * Small HTTP/2 helpers shared by the gateway, the agent and the CLI.
 *
 * @module
 */
import type { ServerHttp2Stream } from 'node:http2'
import type { TLSSocket } from 'node:tls'
import { buildStatus } from '../protocol/status.js'
import type { AppError } from './errors.js'
import { isAppError } from './errors.js'

/**
 * Answers a stream that has not responded yet with a Kubernetes `Status` error body.
 * Safe to call on a stream the peer already reset.
 */
export function respondStatus(
  stream: ServerHttp2Stream,
  err: AppError | Error,
  extraHeaders = {},
): void {
  if (stream.destroyed || stream.closed || stream.headersSent) {
    if (!stream.destroyed) stream.close()
    return
  }
  const app = isAppError(err) ? err : undefined
  const code = app?.statusCode ?? 500
  const message = app !== undefined ? app.message : 'internal error'
  const body = JSON.stringify(buildStatus(code, message, app?.code))
  try {
    stream.respond({
      ':status': code,
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      ...extraHeaders,
    })
    stream.end(body)
  } catch {
    stream.destroy()
  }
}

/**
 * The identities a TLS peer certificate carries: every URI SAN, every DNS SAN as
 * `DNS:<name>`, and the subject CN as `CN=<name>`.
 */
export function peerIdentities(socket: TLSSocket): string[] {
  const cert = socket.getPeerCertificate()
  if (cert === null || Object.keys(cert).length === 0) return []
  const ids: string[] = []
  const cn = cert.subject?.CN
  if (typeof cn === 'string') ids.push(`CN=${cn}`)
  for (const part of (cert.subjectaltname ?? '').split(', ')) {
    if (part.startsWith('URI:')) ids.push(part.slice(4))
    else if (part.startsWith('DNS:')) ids.push(part)
  }
  return ids
}
