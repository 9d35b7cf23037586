/**
 * The Kubernetes SPDY port-forward protocols (A: SPDY/3.1 upgrade, B: SPDY in a
 * WebSocket): the public surface of src/protocol/spdy. See docs/spdy.md.
 *
 * @module
 */
export { SPDY3_DICTIONARY, SPDY3_DICTIONARY_ID } from './dictionary.js'
// Frames: everything of frames.ts is public (its encoders, parser, constants and types).
export * from './frames.js'
export {
  DEFAULT_MAX_HEADER_BLOCK_SIZE,
  HeaderCodec,
  parseHeaderBlock,
  serializeHeaderBlock,
} from './header-codec.js'
export type { HeaderCodecOptions, HeaderInput, SpdyHeaders } from './header-codec.js'
export {
  DEFAULT_CLOSE_TIMEOUT_MS,
  DEFAULT_MAX_CONCURRENT_STREAMS,
  DEFAULT_MAX_DATA_FRAME_SIZE,
  DEFAULT_STREAM_HIGH_WATER_MARK,
  SpdySession,
  SpdyStream,
} from './session.js'
export type {
  SpdyCloseOptions,
  SpdySessionEvents,
  SpdySessionOptions,
  SpdyStreamResetInfo,
} from './session.js'
export {
  DEFAULT_STREAM_CREATION_TIMEOUT_MS,
  PORT_FORWARD_PROTOCOL,
  REQUEST_ID_HEADER,
  STREAM_PORT_HEADER,
  STREAM_TYPE_DATA,
  STREAM_TYPE_ERROR,
  STREAM_TYPE_HEADER,
  parseStreamPort,
  servePortForward,
} from './portforward.js'
export type {
  PortForwardStreamIssue,
  SpdyForwardRequest,
  SpdyPortForwardOptions,
  SpdyPortForwardServer,
} from './portforward.js'
export {
  SPDY_TUNNEL_PROTOCOL,
  isSpdyUpgradeRequest,
  negotiateStreamProtocol,
  offersSpdyTunnel,
  spdyUpgradeResponse,
} from './upgrade.js'
export type { StreamProtocolChoice } from './upgrade.js'
