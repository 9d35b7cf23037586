/**
 * The edge contract: what every client-protocol adapter (native HTTP/2, SPDY, the SPDY
 * WebSocket tunnel, WebSocket channels) is to the rest of the gateway, and the one sequence
 * they all run per forwarded connection.
 *
 * An adapter depends on the {@link ForwardService} (src/gateway/forward/service.ts), never on
 * the concrete forwarder, and is tested against a fake one (test/gateway/edge/). A served
 * connection is an {@link EdgeConnection}: the gateway's shutdown drains it, then destroys
 * what is left at the drain deadline.
 *
 * @module
 */
import type { ServerHttp2Stream } from 'node:http2'
import type { PeerCertificate } from 'node:tls'
import type { RelayEndpoint } from '../../shared/duplex-relay.js'
import type { AppError } from '../../shared/errors.js'
import { verifiedClientCertificate } from '../auth/authenticator.js'
import type { ForwardRequest, ForwardService, OpenedForward } from '../forward/service.js'
import type { ClientSession } from '../forward/stream-table.js'

/** A served client connection, as shutdown and admin kills see it. */
export interface EdgeConnection {
  /** Refuses new streams; open ones go on (the connection closes once they are done). */
  drain(): void
  /** Ends everything now. */
  destroy(): void
}

/**
 * The connection's verified client certificate (x509 identity source), as a spread for
 * the session's info.
 */
export function certificateOf(socket: unknown): { clientCertificate?: PeerCertificate } {
  const clientCertificate = verifiedClientCertificate(socket)
  return clientCertificate !== undefined ? { clientCertificate } : {}
}

/** What the client is told when it left between asking and the stream's 200. */
export const CLIENT_LEFT = 'client went away before the stream opened'

/** The client side of a UDP flow (native HTTP/2 only): its stream, answered 200 with trailers to come. */
export interface UdpClientEnd {
  readonly udpStream: ServerHttp2Stream
}

/** One forwarded connection's client side, in an adapter's own terms. */
export interface EdgeStream {
  /** Emits `'close'` when the client goes away (the open in progress is then abandoned). */
  readonly watch: {
    once(event: 'close', f: () => void): unknown
    off(event: 'close', f: () => void): unknown
  }
  /** True when the client has gone (or can take nothing more). */
  gone(): boolean
  /**
   * Tells the client the stream is open (200, the port's prefix...) and returns its relay
   * endpoint (a UDP flow's: its stream), or undefined when the client could not be told (it
   * left: the open is cancelled).
   */
  accept(opened: OpenedForward): RelayEndpoint | UdpClientEnd | undefined
  /** Tells the client the open failed (`err`: what the forward service threw). */
  refuse(err: unknown): void
  /** The client left before the 200: anything of the adapter's to release (after the cancel). */
  abandoned?(): void
}

/**
 * The sequence every adapter runs for one forwarded connection: open it; if the client
 * left meanwhile, cancel it (recorded as `client-gone`); else tell the client and start the
 * relay; or, when the open failed, refuse.
 */
export function forwardStream(
  service: ForwardService,
  req: Omit<ForwardRequest, 'signal'>,
  edge: EdgeStream,
): void {
  const ac = new AbortController()
  const onGone = (): void => ac.abort()
  edge.watch.once('close', onGone)
  service.open({ ...req, signal: ac.signal }).then(
    (opened) => {
      edge.watch.off('close', onGone)
      const endpoint = edge.gone() ? undefined : edge.accept(opened)
      if (endpoint === undefined) {
        opened.cancel(CLIENT_LEFT)
        edge.abandoned?.()
        return
      }
      if ('udpStream' in endpoint) opened.startUdp(endpoint.udpStream)
      else opened.start(endpoint)
    },
    (err: unknown) => {
      edge.watch.off('close', onGone)
      edge.refuse(err)
    },
  )
}

/**
 * The request for one stream of an upgraded connection (SPDY, WebSocket channels): every
 * stream goes to the upgrade's target and is authenticated again with the upgrade's
 * Authorization.
 */
export function upgradeStreamRequest(
  session: ClientSession,
  authorization: string | string[] | undefined,
  target: { namespace: string; pod: string; node?: string },
  port: number | AppError,
): Omit<ForwardRequest, 'signal'> {
  return {
    session,
    authorization,
    namespace: target.namespace,
    pod: target.pod,
    ...(target.node !== undefined ? { node: target.node } : {}),
    port,
  }
}
