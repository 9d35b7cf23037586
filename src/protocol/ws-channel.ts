/**
 * The WebSocket channel protocol of port-forward, `v4.channel.k8s.io` (binary) and
 * `v4.base64.channel.k8s.io` (text): pure encode/decode, subprotocol selection and
 * the `?ports=` query (docs/kubernetes-protocols.md#channel-protocol). No sockets here.
 *
 * - Port *i* (in query order) uses channel 2i for data and 2i+1 for errors.
 * - Binary: each message is `[channel byte][payload]`.
 * - Base64: each message is text, `<'0' + channel><base64(payload)>`.
 * - Straight after the handshake the server sends, on both channels of every port,
 *   the port as 2 bytes little-endian ({@link portPrefixMessages}); client-node
 *   drops the first 2 payload bytes of each channel's first message unchecked, and
 *   the Python client insists on a 3-byte first message with the right port.
 * - There is no half-close and no close-channel message (that is v5, which
 *   port-forward must never select).
 *
 * @module
 */
import { appError } from '../shared/errors.js'

/** Binary channel subprotocol. */
export const V4_CHANNEL_PROTOCOL = 'v4.channel.k8s.io'
/** Text (base64) channel subprotocol. */
export const V4_BASE64_CHANNEL_PROTOCOL = 'v4.base64.channel.k8s.io'
/** Channel numbers are one byte and each port takes two: at most 128 ports. */
export const MAX_CHANNEL_PORTS = 128

/** How payloads travel. */
export type ChannelEncoding = 'binary' | 'base64'

/** The outcome of {@link selectChannelProtocol}. */
export interface ChannelProtocolChoice {
  /** The subprotocol to echo in `Sec-WebSocket-Protocol`; '' means send none. */
  protocol: string
  encoding: ChannelEncoding
}

/** One decoded client message. */
export interface ChannelMessage {
  channel: number
  payload: Buffer
}

/**
 * Splits `Sec-WebSocket-Protocol` (one header or several, comma-separated) into the
 * offered names, in client order, trimmed, empties dropped.
 */
export function parseOfferedProtocols(header: string | readonly string[] | undefined): string[] {
  if (header === undefined) return []
  const lines = typeof header === 'string' ? [header] : header
  const out: string[] = []
  for (const line of lines) {
    for (const part of line.split(',')) {
      const name = part.trim()
      if (name.length > 0) out.push(name)
    }
  }
  return out
}

/**
 * Picks the subprotocol as the kubelet does: the first offered name (client order)
 * that is `v4.channel.k8s.io` or `v4.base64.channel.k8s.io`; with nothing offered,
 * binary with no subprotocol. Returns undefined when names were offered but none
 * is supported (the kubelet answers 403). Never selects v5 or older versions.
 *
 * @example
 * ```ts
 * selectChannelProtocol('v5.channel.k8s.io,v4.channel.k8s.io,channel.k8s.io')
 * // → { protocol: 'v4.channel.k8s.io', encoding: 'binary' }
 * ```
 */
export function selectChannelProtocol(
  header: string | readonly string[] | undefined,
): ChannelProtocolChoice | undefined {
  const offered = parseOfferedProtocols(header)
  if (offered.length === 0) return { protocol: '', encoding: 'binary' }
  for (const name of offered) {
    if (name === V4_CHANNEL_PROTOCOL) return { protocol: name, encoding: 'binary' }
    if (name === V4_BASE64_CHANNEL_PROTOCOL) return { protocol: name, encoding: 'base64' }
  }
  return undefined
}

/**
 * Reads the forwarded ports from a query: `ports` (the apiserver's name) and `port`
 * (the kubelet's), each repeatable and comma-separated, in order. Every value must
 * be a decimal 1..65535 without sign, spaces or leading zeros; duplicates are kept
 * (two connections to one port). At least one and at most {@link MAX_CHANNEL_PORTS}.
 *
 * @throws AppError `PFG_ERR_ROUTE_BAD_PORT` naming the bad value.
 */
export function parsePortsQuery(query: URLSearchParams | string): number[] {
  const params = typeof query === 'string' ? new URLSearchParams(query) : query
  const ports: number[] = []
  for (const name of ['ports', 'port']) {
    for (const value of params.getAll(name)) {
      for (const part of value.split(',')) {
        const port = /^[1-9][0-9]{0,4}$/.test(part) ? Number(part) : NaN
        if (!(port <= 65535)) {
          throw appError(
            'PFG_ERR_ROUTE_BAD_PORT',
            `invalid port ${JSON.stringify(part)} in query parameter "${name}": must be an integer from 1 to 65535`,
          )
        }
        ports.push(port)
      }
    }
  }
  if (ports.length === 0) {
    throw appError('PFG_ERR_ROUTE_BAD_PORT', 'query parameter "ports" is required')
  }
  if (ports.length > MAX_CHANNEL_PORTS) {
    throw appError(
      'PFG_ERR_ROUTE_BAD_PORT',
      `too many ports (${ports.length}); at most ${MAX_CHANNEL_PORTS} per connection`,
    )
  }
  return ports
}

/** Data channel of the port at `portIndex`. */
export function dataChannel(portIndex: number): number {
  return portIndex * 2
}

/** Error channel of the port at `portIndex`. */
export function errorChannel(portIndex: number): number {
  return portIndex * 2 + 1
}

/** Which port and role a channel number stands for, or undefined if out of range. */
export function channelRole(
  channel: number,
  portCount: number,
): { portIndex: number; kind: 'data' | 'error' } | undefined {
  if (!Number.isInteger(channel) || channel < 0 || channel >= portCount * 2) return undefined
  return { portIndex: channel >> 1, kind: (channel & 1) === 0 ? 'data' : 'error' }
}

function checkChannel(channel: number): void {
  if (!Number.isInteger(channel) || channel < 0 || channel > 255) {
    throw new RangeError(`channel must be 0..255, got ${channel}`)
  }
}

/**
 * Encodes one server message: a Buffer `[channel][payload]` (binary) or a string
 * `'0'+channel` + base64 (base64). Send Buffers as binary and strings as text.
 * The binary form copies the payload; to avoid that, send a 1-byte channel frame
 * and the payload as two fragments of one WebSocket message.
 */
export function encodeChannelMessage(
  channel: number,
  payload: Uint8Array,
  encoding: ChannelEncoding,
): Buffer | string {
  checkChannel(channel)
  if (encoding === 'base64') {
    return String.fromCharCode(48 + channel) + Buffer.from(payload).toString('base64')
  }
  const out = Buffer.allocUnsafe(1 + payload.length)
  out[0] = channel
  out.set(payload, 1)
  return out
}

/** The 2-byte little-endian port announcement payload. */
export function encodePortPrefix(port: number): Buffer {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`port must be 1..65535, got ${port}`)
  }
  const out = Buffer.allocUnsafe(2)
  out.writeUInt16LE(port)
  return out
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/**
 * Decodes one client message. Returns undefined for an empty message (the kubelet
 * skips those). The channel is not range-checked here: see {@link channelRole}
 * (the kubelet ignores unknown channels and anything on error channels).
 *
 * @throws AppError `PFG_ERR_PROTO_BAD_HEADER` when the message type does not match
 *   the encoding (text in binary mode or the reverse) or the base64 is invalid.
 */
export function decodeChannelMessage(
  data: Buffer | string,
  isBinary: boolean,
  encoding: ChannelEncoding,
): ChannelMessage | undefined {
  if (encoding === 'binary') {
    if (!isBinary || typeof data === 'string') {
      throw appError('PFG_ERR_PROTO_BAD_HEADER', 'text message on a binary channel connection')
    }
    if (data.length === 0) return undefined
    return { channel: data[0]!, payload: data.subarray(1) }
  }
  if (isBinary) {
    throw appError('PFG_ERR_PROTO_BAD_HEADER', 'binary message on a base64 channel connection')
  }
  const text = typeof data === 'string' ? data : data.toString('utf8')
  if (text.length === 0) return undefined
  const channel = text.charCodeAt(0) - 48
  if (channel < 0 || channel > 255) {
    throw appError('PFG_ERR_PROTO_BAD_HEADER', 'invalid channel character in base64 message')
  }
  const body = text.slice(1)
  if (!BASE64.test(body)) {
    throw appError('PFG_ERR_PROTO_BAD_HEADER', 'invalid base64 in channel message')
  }
  return { channel, payload: Buffer.from(body, 'base64') }
}
