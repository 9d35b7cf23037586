/**
 * Edge adapter for Kubernetes' SPDY port-forward (protocols A and B of
 * docs/kubernetes-protocols.md): a {@link SpdySession} over the upgraded TLS socket
 * (SPDY/3.1, kubectl ≤ 1.30, the fallback of later ones, every client-go program) or
 * over the byte stream of a WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.31),
 * with the port-forward layer on top. Each error+data stream pair is one forwarded TCP
 * connection: {@link Forwarder.open}, then a relay between the data stream and the
 * agent stream.
 *
 * Error semantics are the kubelet's (docs/kubernetes-protocols.md#the-error-stream,
 * docs/kubernetes-protocols.md#the-kubelets-side):
 * - a refused open (pod port refused, forbidden, pod not running, limits...) writes
 *   one line on the error stream, then FINs it and the data stream; kubectl ≥ 1.23
 *   then ends its whole session, kubectl 1.20 only logs the line;
 * - after the open, an abnormal end (agent or pod reset, admin, limit, shutdown) is
 *   RST_STREAM CANCEL on the data stream and a FIN on the error stream, never error
 *   text (which would end every other connection of the kubectl session too);
 * - a normal end is a FIN on the error stream, then on the data stream; the error
 *   stream always gets its FIN.
 *
 * @module
 */
import type { Duplex } from 'node:stream'
import { SpdySession } from '../../protocol/spdy/session.js'
import { servePortForward } from '../../protocol/spdy/portforward.js'
import type { SpdyForwardRequest } from '../../protocol/spdy/portforward.js'
import type { RelayEndpoint } from '../../shared/duplex-relay.js'
import { describeError, isAppError } from '../../shared/errors.js'
import { keepAlive } from '../../shared/keepalive.js'
import type { Logger } from '../../shared/log.js'
import type { ForwardService } from '../forward/service.js'
import type { ClientSession } from '../forward/stream-table.js'
import { forwardStream, upgradeStreamRequest } from './contract.js'
import type { EdgeConnection } from './contract.js'

/** The target every stream of a session forwards to (from the upgrade's path). */
export interface UpgradeTarget {
  namespace: string
  pod: string
  /** The node named in the path, if any (checked against the registry, never trusted). */
  node?: string
}

/** What {@link serveSpdyPortForward} needs. */
export interface SpdyServeOptions {
  forwarder: ForwardService
  logger: Logger
  /** The ClientSession created for this upgrade (its protocol is `spdy` or `ws-spdy`). */
  session: ClientSession
  /** The upgrade request's Authorization header (every stream is authenticated with it). */
  authorization: string | string[] | undefined
  target: UpgradeTarget
  /** Bytes that followed the upgrade request (protocol A only). */
  head?: Buffer
  /**
   * PING interval (0: none). A client that does not answer within it is gone: its streams
   * end (audited `client-unresponsive`) and so does the session. kubectl answers PINGs.
   */
  keepaliveMs?: number
  /** Called once when the SPDY session has ended (after endSession). */
  onClose?: () => void
}

/** A served SPDY connection, for the gateway's shutdown and admin kills. */
export interface SpdyConnection extends EdgeConnection {
  readonly spdy: SpdySession
}

/** A relay endpoint for a forwarded connection's data stream: any abort is a reset. */
export function spdyEndpoint(req: SpdyForwardRequest): RelayEndpoint {
  return {
    stream: req.data,
    abort() {
      // RST CANCEL on the data stream, FIN on the error stream (no text: it would end
      // the client's whole kubectl session, docs/kubernetes-protocols.md#the-error-stream).
      req.reset()
    },
  }
}

/** The line written on the error stream for a refused stream (kubectl prints it). */
export function errorStreamText(err: unknown): string {
  return isAppError(err) ? err.message : 'internal error'
}

/**
 * Serves port-forward over `transport` (already upgraded: the 101 or the WebSocket
 * handshake has been written). The session ends when the transport closes.
 */
export function serveSpdyPortForward(transport: Duplex, options: SpdyServeOptions): SpdyConnection {
  const { forwarder, logger, session, target } = options
  const spdy = new SpdySession(transport, options.head !== undefined ? { head: options.head } : {})
  const log = logger.child({ session: session.id, protocol: session.protocol })

  const onRequest = (req: SpdyForwardRequest): void => {
    forwardStream(
      forwarder,
      upgradeStreamRequest(session, options.authorization, target, req.port),
      {
        watch: req.data,
        gone: () => req.settled || req.data.destroyed,
        accept: (opened) => {
          // The kubelet's closing order
          // (docs/kubernetes-protocols.md#the-kubelets-side): when the pod's side ends,
          // the error stream's FIN, then the data stream's (after its queued bytes).
          // Registered before the relay's own listener; an EOF that is really a lost
          // agent stream is left to the relay (a reset).
          const up = opened.upstream
          up.once('end', () => {
            if (!(up.closed && !up.writableEnded)) req.finish()
          })
          return spdyEndpoint(req)
        },
        // The kubelet's answer to a stream it cannot forward: one line, then FINs.
        refuse: (err) => req.fail(errorStreamText(err)),
      },
    )
  }

  const pf = servePortForward(spdy, {
    onRequest,
    onStreamIssue: (issue) => log.debug({ issue }, 'port-forward stream turned away'),
  })
  const stopPings = keepAlive(spdy, options.keepaliveMs ?? 0, (why) => {
    if (spdy.closed) return
    forwarder.clientUnresponsive(session, why)
    spdy.destroy()
  })
  spdy.once('close', (err) => {
    stopPings()
    pf.close()
    if (err !== undefined) log.info({ err: describeError(err) }, 'SPDY session ended with an error')
    forwarder.endSession(session)
    options.onClose?.()
  })
  return {
    spdy,
    drain: () => spdy.close({ graceful: true }),
    destroy: () => spdy.destroy(),
  }
}
