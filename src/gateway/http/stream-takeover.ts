/**
 * The raw HTTP/2 stream takeover. Native port-forward streams
 * (`POST /proxy/nodes/{node}/portForward/{ns}/{pod}`) are taken off the raw `node:http2`
 * server before Node's compatibility layer creates request and response objects for
 * Fastify: the hot path pays for none (docs/performance.md). Every other stream goes on
 * to Fastify, unless its header list is over `limits.maxHeaderSize` (Node does not
 * enforce the SETTINGS_MAX_HEADER_LIST_SIZE it advertises): that one gets a 431 `Status`
 * here, recorded as `request.denied`.
 *
 * @module
 */
import type { Http2SecureServer, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2'
import { appError } from '../../shared/errors.js'
import { respondStatus } from '../../shared/h2-util.js'
import type { ConnectionGuard } from '../connections.js'
import { NATIVE_PATH } from '../edge/native-h2.js'
import type { NativeH2Adapter } from '../edge/native-h2.js'
import { formatAddress } from '../forward/forwarder.js'
import type { Forwarder } from '../forward/forwarder.js'
import type { GatewayMetrics } from '../metrics.js'
import { headerListSize, headerTooLargeMessage } from './header-limit.js'

/** What the takeover hands streams to. */
export interface StreamTakeoverOptions {
  native: Pick<NativeH2Adapter, 'handle'>
  connections: Pick<ConnectionGuard, 'watch'>
  forwarder: Pick<Forwarder, 'requestDenied'>
  metrics: Pick<GatewayMetrics, 'limitHits'>
  maxHeaderBytes: number
}

/**
 * Replaces the server's `stream` listeners (Node's compatibility layer, which Fastify
 * uses) with one that takes native streams and refuses oversized headers, and passes
 * every other stream on to them. Call once, before the server listens.
 */
export function takeOverStreams(server: Http2SecureServer, options: StreamTakeoverOptions): void {
  const { native, connections, forwarder, metrics, maxHeaderBytes } = options
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
      if (size > maxHeaderBytes) {
        stream.on('error', () => undefined)
        metrics.limitHits.inc({ limit: 'header-size' })
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
          appError('PFG_ERR_LIMIT_HEADER_TOO_LARGE', headerTooLargeMessage(maxHeaderBytes, size)),
        )
        respondStatus(stream, err)
        return
      }
      for (const l of compat) l.call(server, stream, headers, flags, raw)
    },
  )
}
