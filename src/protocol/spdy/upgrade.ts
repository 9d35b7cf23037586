/**
 * The HTTP/1.1 side of protocols A and B: recognising a SPDY upgrade or a SPDY
 * tunnel offer, negotiating `X-Stream-Protocol-Version`, and the 101 response text
 * (docs/kubernetes-protocols.md#spdy-upgrade-handshake,
 * docs/kubernetes-protocols.md#tunnel-handshake). Pure functions over header values.
 *
 * @module
 */
import { PORT_FORWARD_PROTOCOL } from './portforward.js'

/** The WebSocket subprotocol of the SPDY tunnel (kubectl ≥ 1.31). */
export const SPDY_TUNNEL_PROTOCOL = `SPDY/3.1+${PORT_FORWARD_PROTOCOL}`

type HeaderValue = string | readonly string[] | undefined

function values(header: HeaderValue): string[] {
  if (header === undefined) return []
  const lines = typeof header === 'string' ? [header] : header
  return lines
    .flatMap((l) => l.split(','))
    .map((v) => v.trim())
    .filter((v) => v.length > 0)
}

function contains(header: HeaderValue, token: string): boolean {
  return values(header).some((v) => v.toLowerCase() === token)
}

/**
 * True when a request asks for the SPDY upgrade: `Connection` contains `upgrade`
 * and `Upgrade` contains `SPDY/3.1` (case-insensitive, comma lists allowed). The
 * kubelet answers 400 otherwise.
 */
export function isSpdyUpgradeRequest(headers: {
  connection?: HeaderValue
  upgrade?: HeaderValue
}): boolean {
  return contains(headers.connection, 'upgrade') && contains(headers.upgrade, 'spdy/3.1')
}

/**
 * True when a WebSocket request offers the SPDY tunnel subprotocol
 * (`Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io`). Answering such a request
 * with any non-101 status makes kubectl fall back to the SPDY upgrade
 * (docs/kubernetes-protocols.md#fallback-to-spdy).
 */
export function offersSpdyTunnel(secWebSocketProtocol: HeaderValue): boolean {
  return values(secWebSocketProtocol).includes(SPDY_TUNNEL_PROTOCOL)
}

/** Outcome of {@link negotiateStreamProtocol}. */
export type StreamProtocolChoice =
  { ok: true; protocol: string } | { ok: false; status: 400 | 403; message: string }

/**
 * Negotiates `X-Stream-Protocol-Version` (repeatable, comma-separated) as the
 * kubelet does: the first offered protocol we support. No header at all: the
 * kubelet does not upgrade (the client sees a non-101), so answer 400. No overlap:
 * 403 with `X-Accepted-Stream-Protocol-Versions: portforward.k8s.io`.
 */
export function negotiateStreamProtocol(header: HeaderValue): StreamProtocolChoice {
  const offered = values(header)
  if (offered.length === 0) {
    return { ok: false, status: 400, message: 'X-Stream-Protocol-Version is required' }
  }
  if (offered.includes(PORT_FORWARD_PROTOCOL)) return { ok: true, protocol: PORT_FORWARD_PROTOCOL }
  return {
    ok: false,
    status: 403,
    message: `unable to upgrade: unable to negotiate protocol: client supports ${JSON.stringify(offered)}, server supports ["${PORT_FORWARD_PROTOCOL}"]`,
  }
}

/**
 * The complete 101 response for the SPDY upgrade, to write on the raw socket. It
 * carries `X-Stream-Protocol-Version`, which kubectl ≥ 1.30 requires
 * (docs/kubernetes-protocols.md#the-spdy-101). Write nothing after it: the session
 * speaks only once the client has.
 */
export function spdyUpgradeResponse(protocol: string = PORT_FORWARD_PROTOCOL): string {
  return (
    'HTTP/1.1 101 Switching Protocols\r\n' +
    'Connection: Upgrade\r\n' +
    'Upgrade: SPDY/3.1\r\n' +
    `X-Stream-Protocol-Version: ${protocol}\r\n` +
    `Date: ${new Date().toUTCString()}\r\n` +
    '\r\n'
  )
}
