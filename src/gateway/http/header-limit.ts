/**
 * The request header size limit (`limits.maxHeaderSize`), on both of the gateway's
 * HTTP versions.
 *
 * - HTTP/2: Node advertises SETTINGS_MAX_HEADER_LIST_SIZE but, as a server, does not
 *   enforce it below its own ~64 KiB stop (compliant clients refuse to send more than
 *   advertised; others are not stopped). So the gateway advertises up to twice the limit
 *   ({@link advertisedHeaderListSize}), measures every request's header list itself
 *   (RFC 9113 §6.5.2: name + value + 32 octets per field) and answers 431 with a
 *   Kubernetes `Status`. On the native port-forward path the forwarder does it, so the
 *   refusal is also a `stream.denied` audit record (reason `limit:header-size`).
 * - HTTP/1.1 (kubectl's upgrades, the API): Node's parser stops at the server's
 *   `maxHeaderSize` before any request exists (`HPE_HEADER_OVERFLOW`); the client error
 *   handler here answers 431 with a `Status` body and closes the connection. No request
 *   was parsed, so there is no target to audit: a log line and the metric record it.
 *
 * Either way `pfgate_limit_hits_total{limit="header-size"}` counts it.
 *
 * @module
 */
import type { Socket } from 'node:net'
import { buildStatus } from '../../protocol/status.js'
import type { Logger } from '../../shared/log.js'
import type { GatewayMetrics } from '../metrics.js'
import { formatAddress } from '../forward/forwarder.js'

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
}

/** Per-field overhead in the HTTP/2 header list size (RFC 9113 §6.5.2). */
const FIELD_OVERHEAD = 32

/** The size of a header list given Node's flat raw array `[name, value, name, value, …]`. */
export function headerListSize(raw: readonly string[]): number {
  let n = 0
  for (let i = 0; i + 1 < raw.length; i += 2) {
    n += Buffer.byteLength(raw[i] as string) + Buffer.byteLength(raw[i + 1] as string)
    n += FIELD_OVERHEAD
  }
  return n
}

/**
 * The SETTINGS_MAX_HEADER_LIST_SIZE the gateway advertises for a limit: up to twice the
 * limit (within Node's own 64 KiB stop), so that a compliant client whose headers are a
 * little too large sends them and gets the gateway's 431 `Status`, rather than an
 * unexplained local refusal from its own HTTP/2 stack.
 */
export function advertisedHeaderListSize(limit: number): number {
  return Math.max(limit, Math.min(2 * limit, 65_536))
}

/** The message clients get with a 431. */
export function headerTooLargeMessage(limit: number, size?: number): string {
  return size === undefined
    ? `request headers too large (limit ${limit} bytes)`
    : `request headers too large (${size} bytes; limit ${limit})`
}

/**
 * A Fastify `clientErrorHandler` (HTTP/1.1 parse errors): 431 with a `Status` body for a
 * header overflow (counted and logged), 408 for a request timeout, 400 otherwise, as
 * Fastify's default does but with Kubernetes bodies.
 */
export function createClientErrorHandler(
  limit: number,
  metrics: GatewayMetrics,
  logger: Logger,
): (err: Error & { code?: string }, socket: Socket) => void {
  return (err, socket) => {
    if (err.code === 'ECONNRESET' || socket.destroyed) return
    let status = 400
    let message = 'bad request'
    let code: string | undefined
    if (err.code === 'HPE_HEADER_OVERFLOW') {
      status = 431
      message = headerTooLargeMessage(limit)
      code = 'PFG_ERR_LIMIT_HEADER_TOO_LARGE'
      metrics.limitHits.inc({ limit: 'header-size' })
      logger.info(
        { source: formatAddress(socket.remoteAddress, socket.remotePort), limit, code },
        'request refused: headers too large (HTTP/1.1)',
      )
    } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      status = 408
      message = 'request timeout'
    }
    if (!socket.writable) {
      socket.destroy()
      return
    }
    const body = JSON.stringify(buildStatus(status, message, code))
    // end(), not write()+destroy(): the answer must reach the client before the close.
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Bad Request'}\r\n` +
        `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
        `connection: close\r\n\r\n${body}`,
    )
    setTimeout(() => socket.destroy(), 1000).unref()
  }
}
