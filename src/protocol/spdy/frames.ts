/**
 * SPDY/3 framing (docs/kubernetes-protocols.md#spdy-framing): an incremental frame
 * parser over a byte stream and encoders for the frames a port-forward server sends.
 *
 * The parser is pull-based: {@link FrameParser.push} appends transport chunks and
 * {@link FrameParser.next} returns one item at a time, so the session can stop
 * between frames (while a header block is being inflated, or while a stream's
 * reader is full) without losing or re-buffering anything. DATA payloads are never
 * buffered: they come out as zero-copy pieces of the transport's chunks, so a
 * 16 MiB DATA frame costs no more memory than a 16 KiB one. Control frames are
 * buffered whole and capped ({@link DEFAULT_MAX_CONTROL_FRAME_SIZE}).
 *
 * Every malformed frame throws a {@link SpdyProtocolError}; the session answers it
 * with GOAWAY PROTOCOL_ERROR and closes (it is never a crash). After a throw the
 * parser stays failed.
 *
 * The encoders cover what a server may send: SYN_REPLY, DATA, RST_STREAM, PING and
 * GOAWAY. There is deliberately no SETTINGS, WINDOW_UPDATE, HEADERS, NOOP or
 * CREDENTIAL encoder here: spdystream (kubectl, the kubelet) dies on unknown control
 * types and blocks a worker on HEADERS (docs/kubernetes-protocols.md#control-frames).
 *
 * @module
 */
import { AppError } from '../../shared/errors.js'

/** The SPDY version this module speaks. */
export const SPDY_VERSION = 3

/** Control frame types (docs/kubernetes-protocols.md#control-frames). */
export const FrameType = {
  SYN_STREAM: 1,
  SYN_REPLY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  NOOP: 5,
  PING: 6,
  GOAWAY: 7,
  HEADERS: 8,
  WINDOW_UPDATE: 9,
  CREDENTIAL: 10,
} as const

/** FIN: the sender's last frame on the stream (DATA, SYN_STREAM, SYN_REPLY, HEADERS). */
export const FLAG_FIN = 0x01
/** SYN_STREAM only: the recipient must not send on the stream. */
export const FLAG_UNIDIRECTIONAL = 0x02

/** RST_STREAM status codes. */
export const RstStatus = {
  PROTOCOL_ERROR: 1,
  INVALID_STREAM: 2,
  REFUSED_STREAM: 3,
  UNSUPPORTED_VERSION: 4,
  CANCEL: 5,
  INTERNAL_ERROR: 6,
  FLOW_CONTROL_ERROR: 7,
  STREAM_IN_USE: 8,
  STREAM_ALREADY_CLOSED: 9,
  INVALID_CREDENTIALS: 10,
  FRAME_TOO_LARGE: 11,
} as const

/** GOAWAY status codes. */
export const GoawayStatus = {
  OK: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
} as const

/** Every frame starts with 8 bytes. */
export const FRAME_HEADER_SIZE = 8
/** The 24-bit length field's maximum (DATA payloads may be this long). */
export const MAX_FRAME_LENGTH = 0xffffff
/** Default cap on a control frame's payload; kubectl's are well under 1 KiB. */
export const DEFAULT_MAX_CONTROL_FRAME_SIZE = 64 * 1024
/** Largest stream or ping id (31 bits for ids, the top bit is reserved). */
export const MAX_STREAM_ID = 0x7fffffff

/**
 * A session-fatal SPDY protocol fault: a malformed frame or header block. The
 * session answers it with GOAWAY (status {@link SpdyProtocolError.goawayStatus}) and
 * closes. Its `code` is the registry's closest code for a malformed wire message.
 */
export class SpdyProtocolError extends AppError {
  /** The GOAWAY status the session sends for this fault. */
  readonly goawayStatus: number

  constructor(message: string, goawayStatus: number = GoawayStatus.PROTOCOL_ERROR) {
    super('PFG_ERR_PROTO_BAD_HEADER', `SPDY protocol error: ${message}`)
    this.name = 'SpdyProtocolError'
    this.goawayStatus = goawayStatus
  }
}

/**
 * A piece of a DATA frame's payload. One wire frame may come out as several pieces
 * (the payload split wherever the transport split it); `fin` is true only on the
 * last piece of a frame that carried FIN. A zero-length frame is one empty piece.
 */
export interface DataPiece {
  kind: 'data'
  streamId: number
  /** A view into the transport's chunk (no copy); may be empty. */
  data: Buffer
  /** True on the last piece of a frame with the FIN flag. */
  fin: boolean
  /** True on the last piece of its frame (with or without FIN). */
  last: boolean
}

/** SYN_STREAM: the client opens a stream. */
export interface SynStreamFrame {
  kind: 'syn_stream'
  flags: number
  streamId: number
  associatedStreamId: number
  /** 0 (highest) .. 7. */
  priority: number
  slot: number
  /** The compressed header block (feed it to the connection's HeaderCodec, in order). */
  headerBlock: Buffer
}

/** SYN_REPLY (a server never expects one; it is parsed so the header codec stays in step). */
export interface SynReplyFrame {
  kind: 'syn_reply'
  flags: number
  streamId: number
  headerBlock: Buffer
}

/** RST_STREAM. */
export interface RstStreamFrame {
  kind: 'rst_stream'
  streamId: number
  status: number
}

/** One SETTINGS entry. */
export interface SettingsEntry {
  flags: number
  id: number
  value: number
}

/** SETTINGS (parsed and ignored: docs/kubernetes-protocols.md#no-flow-control). */
export interface SettingsFrame {
  kind: 'settings'
  flags: number
  entries: SettingsEntry[]
}

/** PING: odd ids are the client's, even ids ours. */
export interface PingFrame {
  kind: 'ping'
  id: number
}

/** GOAWAY. */
export interface GoawayFrame {
  kind: 'goaway'
  lastGoodStreamId: number
  status: number
}

/** HEADERS (parsed so the header codec stays in step; never sent). */
export interface HeadersFrame {
  kind: 'headers'
  flags: number
  streamId: number
  headerBlock: Buffer
}

/** WINDOW_UPDATE (parsed and ignored). */
export interface WindowUpdateFrame {
  kind: 'window_update'
  streamId: number
  delta: number
}

/** A control frame of a type we do not use (NOOP, CREDENTIAL, future types): skipped. */
export interface UnknownControlFrame {
  kind: 'unknown'
  type: number
  flags: number
  length: number
}

/** A parsed control frame. */
export type ControlFrame =
  | SynStreamFrame
  | SynReplyFrame
  | RstStreamFrame
  | SettingsFrame
  | PingFrame
  | GoawayFrame
  | HeadersFrame
  | WindowUpdateFrame
  | UnknownControlFrame

/** What {@link FrameParser.next} returns. */
export type SpdyFrame = DataPiece | ControlFrame

/** Options for {@link FrameParser}. */
export interface FrameParserOptions {
  /** Largest control-frame payload accepted (default {@link DEFAULT_MAX_CONTROL_FRAME_SIZE}). */
  maxControlFrameSize?: number
}

const EMPTY = Buffer.alloc(0)

/**
 * Incremental SPDY/3 frame parser. Feed it with {@link push}; drain it with
 * {@link next} until it returns null (more bytes needed).
 *
 * @example
 * ```ts
 * const parser = new FrameParser()
 * socket.on('data', (chunk) => {
 *   parser.push(chunk)
 *   for (let f = parser.next(); f !== null; f = parser.next()) handle(f)
 * })
 * ```
 */
export class FrameParser {
  readonly #maxControl: number
  #chunks: Buffer[] = []
  /** Bytes consumed from chunks[0]. */
  #offset = 0
  #available = 0
  /** >= 0 while inside a DATA payload: bytes of it still to come. */
  #dataRemaining = -1
  #dataStreamId = 0
  #dataFin = false
  readonly #scratch = Buffer.alloc(FRAME_HEADER_SIZE)
  #failure: SpdyProtocolError | undefined

  constructor(options: FrameParserOptions = {}) {
    this.#maxControl = options.maxControlFrameSize ?? DEFAULT_MAX_CONTROL_FRAME_SIZE
    if (!Number.isInteger(this.#maxControl) || this.#maxControl < 8) {
      throw new RangeError('maxControlFrameSize must be an integer >= 8')
    }
  }

  /** Bytes received but not yet returned by {@link next}. */
  get bufferedBytes(): number {
    return this.#available
  }

  /** True when the parser stopped on a protocol error. */
  get failed(): boolean {
    return this.#failure !== undefined
  }

  /** True between frames (no partial frame buffered): a clean place for EOF. */
  get atFrameBoundary(): boolean {
    return this.#available === 0 && this.#dataRemaining < 0
  }

  /** Appends transport bytes. Empty chunks are fine (the WebSocket tunnel sends them). */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return
    this.#chunks.push(chunk)
    this.#available += chunk.length
  }

  /**
   * Returns the next frame or DATA piece, or null when more bytes are needed.
   * Throws {@link SpdyProtocolError} on a malformed frame (and on every later call).
   */
  next(): SpdyFrame | null {
    if (this.#failure !== undefined) throw this.#failure
    if (this.#dataRemaining >= 0) return this.#nextDataPiece()
    if (this.#available < FRAME_HEADER_SIZE) return null
    const h = this.#scratch
    this.#copyOut(h, FRAME_HEADER_SIZE)
    const length = (h[5]! << 16) | (h[6]! << 8) | h[7]!
    const flags = h[4]!
    if ((h[0]! & 0x80) === 0) {
      const streamId = h.readUInt32BE(0) & MAX_STREAM_ID
      if (streamId === 0) return this.#fail('DATA frame on stream 0')
      this.#skip(FRAME_HEADER_SIZE)
      this.#dataRemaining = length
      this.#dataStreamId = streamId
      this.#dataFin = (flags & FLAG_FIN) !== 0
      return this.#nextDataPiece()
    }
    const version = h.readUInt16BE(0) & 0x7fff
    if (version !== SPDY_VERSION) return this.#fail(`unsupported SPDY version ${version}`)
    if (length > this.#maxControl) {
      return this.#fail(
        `control frame of ${length} bytes exceeds the ${this.#maxControl}-byte limit`,
      )
    }
    if (this.#available < FRAME_HEADER_SIZE + length) return null
    const type = h.readUInt16BE(2)
    this.#skip(FRAME_HEADER_SIZE)
    const payload = this.#take(length)
    return this.#parseControl(type, flags, payload)
  }

  #nextDataPiece(): DataPiece | null {
    const remaining = this.#dataRemaining
    if (remaining === 0) {
      this.#dataRemaining = -1
      return {
        kind: 'data',
        streamId: this.#dataStreamId,
        data: EMPTY,
        fin: this.#dataFin,
        last: true,
      }
    }
    if (this.#available === 0) return null
    const first = this.#chunks[0]!
    const n = Math.min(remaining, first.length - this.#offset)
    const data = first.subarray(this.#offset, this.#offset + n)
    this.#skip(n)
    this.#dataRemaining = remaining - n
    const last = this.#dataRemaining === 0
    if (last) this.#dataRemaining = -1
    return { kind: 'data', streamId: this.#dataStreamId, data, fin: last && this.#dataFin, last }
  }

  #parseControl(type: number, flags: number, p: Buffer): ControlFrame {
    const len = p.length
    switch (type) {
      case FrameType.SYN_STREAM: {
        if (len < 10) return this.#fail(`SYN_STREAM too short (${len} bytes)`)
        const streamId = p.readUInt32BE(0) & MAX_STREAM_ID
        if (streamId === 0) return this.#fail('SYN_STREAM with stream id 0')
        return {
          kind: 'syn_stream',
          flags,
          streamId,
          associatedStreamId: p.readUInt32BE(4) & MAX_STREAM_ID,
          priority: p[8]! >> 5,
          slot: p[9]!,
          headerBlock: p.subarray(10),
        }
      }
      case FrameType.SYN_REPLY:
      case FrameType.HEADERS: {
        const name = type === FrameType.SYN_REPLY ? 'SYN_REPLY' : 'HEADERS'
        if (len < 4) return this.#fail(`${name} too short (${len} bytes)`)
        const streamId = p.readUInt32BE(0) & MAX_STREAM_ID
        if (streamId === 0) return this.#fail(`${name} with stream id 0`)
        const headerBlock = p.subarray(4)
        return type === FrameType.SYN_REPLY
          ? { kind: 'syn_reply', flags, streamId, headerBlock }
          : { kind: 'headers', flags, streamId, headerBlock }
      }
      case FrameType.RST_STREAM: {
        if (len !== 8) return this.#fail(`RST_STREAM length ${len}, expected 8`)
        const streamId = p.readUInt32BE(0) & MAX_STREAM_ID
        if (streamId === 0) return this.#fail('RST_STREAM with stream id 0')
        return { kind: 'rst_stream', streamId, status: p.readUInt32BE(4) }
      }
      case FrameType.SETTINGS: {
        if (len < 4) return this.#fail(`SETTINGS too short (${len} bytes)`)
        const count = p.readUInt32BE(0)
        if (count > (len - 4) / 8 || len !== 4 + count * 8) {
          return this.#fail(`SETTINGS length ${len} does not match ${count} entries`)
        }
        const entries: SettingsEntry[] = []
        for (let i = 0, o = 4; i < count; i++, o += 8) {
          entries.push({ flags: p[o]!, id: p.readUIntBE(o + 1, 3), value: p.readUInt32BE(o + 4) })
        }
        return { kind: 'settings', flags, entries }
      }
      case FrameType.PING:
        if (len !== 4) return this.#fail(`PING length ${len}, expected 4`)
        return { kind: 'ping', id: p.readUInt32BE(0) }
      case FrameType.GOAWAY:
        if (len !== 8) return this.#fail(`GOAWAY length ${len}, expected 8`)
        return {
          kind: 'goaway',
          lastGoodStreamId: p.readUInt32BE(0) & MAX_STREAM_ID,
          status: p.readUInt32BE(4),
        }
      case FrameType.WINDOW_UPDATE:
        if (len !== 8) return this.#fail(`WINDOW_UPDATE length ${len}, expected 8`)
        return {
          kind: 'window_update',
          streamId: p.readUInt32BE(0) & MAX_STREAM_ID,
          delta: p.readUInt32BE(4) & MAX_STREAM_ID,
        }
      default:
        // SPDY/3 says unknown control frames are ignored; we never echo them back.
        return { kind: 'unknown', type, flags, length: len }
    }
  }

  #fail(message: string): never {
    this.#failure = new SpdyProtocolError(message)
    // Drop what we hold: nothing after a framing error can be trusted.
    this.#chunks = []
    this.#offset = 0
    this.#available = 0
    throw this.#failure
  }

  /** Copies the first `n` buffered bytes into `target` without consuming them. */
  #copyOut(target: Buffer, n: number): void {
    let copied = 0
    let off = this.#offset
    for (let i = 0; copied < n; i++) {
      const c = this.#chunks[i]!
      copied += c.copy(target, copied, off, Math.min(c.length, off + n - copied))
      off = 0
    }
  }

  /** Consumes `n` bytes (n <= available). */
  #skip(n: number): void {
    this.#available -= n
    while (n > 0) {
      const c = this.#chunks[0]!
      const rest = c.length - this.#offset
      if (n < rest) {
        this.#offset += n
        return
      }
      n -= rest
      this.#chunks.shift()
      this.#offset = 0
    }
  }

  /** Consumes and returns `n` bytes: a view when they sit in one chunk, else a copy. */
  #take(n: number): Buffer {
    if (n === 0) return EMPTY
    const first = this.#chunks[0]!
    if (first.length - this.#offset >= n) {
      const out = first.subarray(this.#offset, this.#offset + n)
      this.#skip(n)
      return out
    }
    const out = Buffer.allocUnsafe(n)
    this.#copyOut(out, n)
    this.#skip(n)
    return out
  }
}

// ---------------------------------------------------------------------------
// Encoders (server → client)

function checkStreamId(id: number, what = 'stream id'): void {
  if (!Number.isInteger(id) || id < 1 || id > MAX_STREAM_ID) {
    throw new RangeError(`${what} must be an integer from 1 to 2^31-1, got ${id}`)
  }
}

function controlHeader(out: Buffer, type: number, flags: number, length: number): void {
  if (length > MAX_FRAME_LENGTH) throw new RangeError(`frame length ${length} exceeds 2^24-1`)
  out[0] = 0x80
  out[1] = SPDY_VERSION
  out.writeUInt16BE(type, 2)
  out.writeUInt32BE(length, 4)
  out[4] = flags
}

/**
 * SYN_REPLY for a client stream. `headerBlock` is the compressed block from the
 * connection's HeaderCodec; it must be written in the order it was compressed.
 */
export function encodeSynReply(streamId: number, headerBlock: Buffer, flags = 0): Buffer {
  checkStreamId(streamId)
  const out = Buffer.allocUnsafe(12 + headerBlock.length)
  controlHeader(out, FrameType.SYN_REPLY, flags & FLAG_FIN, 4 + headerBlock.length)
  out.writeUInt32BE(streamId, 8)
  headerBlock.copy(out, 12)
  return out
}

/** The 8-byte header of a DATA frame whose payload of `length` bytes follows it. */
export function encodeDataHeader(streamId: number, length: number, fin: boolean): Buffer {
  checkStreamId(streamId)
  if (!Number.isInteger(length) || length < 0 || length > MAX_FRAME_LENGTH) {
    throw new RangeError(`DATA length must be 0..2^24-1, got ${length}`)
  }
  const out = Buffer.allocUnsafe(FRAME_HEADER_SIZE)
  out.writeUInt32BE(streamId, 0)
  out.writeUInt32BE(length, 4)
  out[4] = fin ? FLAG_FIN : 0
  return out
}

/**
 * A whole DATA frame in one buffer (copies the payload: meant for small payloads;
 * for large ones write {@link encodeDataHeader} and then the payload itself).
 */
export function encodeDataFrame(streamId: number, payload: Buffer, fin: boolean): Buffer {
  const header = encodeDataHeader(streamId, payload.length, fin)
  const out = Buffer.allocUnsafe(FRAME_HEADER_SIZE + payload.length)
  header.copy(out, 0)
  payload.copy(out, FRAME_HEADER_SIZE)
  return out
}

/** RST_STREAM (length 8, flags 0). */
export function encodeRstStream(streamId: number, status: number): Buffer {
  checkStreamId(streamId)
  const out = Buffer.allocUnsafe(16)
  controlHeader(out, FrameType.RST_STREAM, 0, 8)
  out.writeUInt32BE(streamId, 8)
  out.writeUInt32BE(status >>> 0, 12)
  return out
}

/** PING (length 4, flags 0, id != 0). */
export function encodePing(id: number): Buffer {
  if (!Number.isInteger(id) || id < 1 || id > 0xffffffff) {
    throw new RangeError(`ping id must be 1..2^32-1, got ${id}`)
  }
  const out = Buffer.allocUnsafe(12)
  controlHeader(out, FrameType.PING, 0, 4)
  out.writeUInt32BE(id, 8)
  return out
}

/**
 * GOAWAY: length exactly 8 and flags 0, which spdystream insists on
 * (docs/kubernetes-protocols.md#control-frames).
 */
export function encodeGoaway(lastGoodStreamId: number, status: number): Buffer {
  if (!Number.isInteger(lastGoodStreamId) || lastGoodStreamId < 0) {
    throw new RangeError(`last-good stream id must be >= 0, got ${lastGoodStreamId}`)
  }
  const out = Buffer.allocUnsafe(16)
  controlHeader(out, FrameType.GOAWAY, 0, 8)
  out.writeUInt32BE(lastGoodStreamId & MAX_STREAM_ID, 8)
  out.writeUInt32BE(status >>> 0, 12)
  return out
}

/** A human name for a control frame type (for logs). */
export function frameTypeName(type: number): string {
  for (const [name, value] of Object.entries(FrameType)) if (value === type) return name
  return `TYPE_${type}`
}
