/**
 * The Kubernetes SPDY port-forward protocols (A: SPDY/3.1 upgrade, B: SPDY in a
 * WebSocket): the public surface of src/protocol/spdy. See docs/spdy.md.
 *
 * @module
 */
export { SPDY3_DICTIONARY, SPDY3_DICTIONARY_ID } from './dictionary.js'
export {
  DEFAULT_MAX_CONTROL_FRAME_SIZE,
  FLAG_FIN,
  FLAG_UNIDIRECTIONAL,
  FrameParser,
  FrameType,
  GoawayStatus,
  MAX_FRAME_LENGTH,
  RstStatus,
  SpdyProtocolError,
  encodeDataFrame,
  encodeDataHeader,
  encodeGoaway,
  encodePing,
  encodeRstStream,
  encodeSynReply,
  frameTypeName,
} from './frames.js'
export type { ControlFrame, DataPiece, FrameParserOptions, SpdyFrame } from './frames.js'
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
