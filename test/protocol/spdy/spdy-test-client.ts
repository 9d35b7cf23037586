/**
 * A tiny SPDY/3 client for tests: plays kubectl's part (odd stream ids, level-9
 * header compression like Go's spdystream) over any byte Duplex, and records
 * every frame the server sends, in order. Test-only; the frame encoders a server
 * must never use (SYN_STREAM, SETTINGS, WINDOW_UPDATE, HEADERS, raw control
 * frames) live here rather than in src/.
 *
 * @module
 */
import { createHash } from 'node:crypto'
import type { Duplex } from 'node:stream'
import {
  FLAG_FIN,
  FrameParser,
  FrameType,
  SPDY_VERSION,
  encodeDataFrame,
  encodeDataHeader,
  encodeGoaway,
  encodePing,
  encodeRstStream,
} from '../../../src/protocol/spdy/frames.js'
import type { SpdyFrame } from '../../../src/protocol/spdy/frames.js'
import zlib from 'node:zlib'
import { SPDY3_DICTIONARY } from '../../../src/protocol/spdy/dictionary.js'
import { HeaderCodec, serializeHeaderBlock } from '../../../src/protocol/spdy/header-codec.js'
import type { HeaderInput, SpdyHeaders } from '../../../src/protocol/spdy/header-codec.js'

/** Any control frame, as raw bytes (any type, any flags, any payload). */
export function encodeControlFrame(
  type: number,
  flags: number,
  payload: Buffer,
  version = SPDY_VERSION,
): Buffer {
  const out = Buffer.alloc(8 + payload.length)
  out.writeUInt16BE(0x8000 | version, 0)
  out.writeUInt16BE(type, 2)
  out.writeUInt32BE(payload.length & 0xffffff, 4)
  out[4] = flags
  payload.copy(out, 8)
  return out
}

/** SYN_STREAM with an already compressed header block. */
export function encodeSynStream(
  streamId: number,
  headerBlock: Buffer,
  flags = 0,
  priority = 0,
  associatedStreamId = 0,
): Buffer {
  const p = Buffer.alloc(10 + headerBlock.length)
  p.writeUInt32BE(streamId, 0)
  p.writeUInt32BE(associatedStreamId, 4)
  p[8] = (priority & 7) << 5
  p[9] = 0
  headerBlock.copy(p, 10)
  return encodeControlFrame(FrameType.SYN_STREAM, flags, p)
}

/** SETTINGS with the given entries. */
export function encodeSettings(entries: { flags?: number; id: number; value: number }[]): Buffer {
  const p = Buffer.alloc(4 + entries.length * 8)
  p.writeUInt32BE(entries.length, 0)
  entries.forEach((e, i) => {
    const o = 4 + i * 8
    p.writeUInt32BE(e.id & 0xffffff, o)
    p[o] = e.flags ?? 0
    p.writeUInt32BE(e.value, o + 4)
  })
  return encodeControlFrame(FrameType.SETTINGS, 0, p)
}

/** WINDOW_UPDATE. */
export function encodeWindowUpdate(streamId: number, delta: number): Buffer {
  const p = Buffer.alloc(8)
  p.writeUInt32BE(streamId, 0)
  p.writeUInt32BE(delta, 4)
  return encodeControlFrame(FrameType.WINDOW_UPDATE, 0, p)
}

/** HEADERS with an already compressed block. */
export function encodeHeadersFrame(streamId: number, headerBlock: Buffer, flags = 0): Buffer {
  const p = Buffer.alloc(4 + headerBlock.length)
  p.writeUInt32BE(streamId, 0)
  headerBlock.copy(p, 4)
  return encodeControlFrame(FrameType.HEADERS, flags, p)
}

/** One frame the server sent (DATA pieces merged back into their frame). */
export type ServerFrame =
  | { kind: 'data'; streamId: number; length: number; fin: boolean }
  | { kind: 'syn_reply'; streamId: number; headers: SpdyHeaders | undefined; raw: Buffer }
  | { kind: 'rst_stream'; streamId: number; status: number }
  | { kind: 'ping'; id: number }
  | { kind: 'goaway'; lastGoodStreamId: number; status: number }
  | { kind: 'other'; type: string }

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void
  const promise = new Promise<T>((r) => (resolve = r))
  return { promise, resolve }
}

/** The client's view of one stream. */
export class ClientStream {
  readonly id: number
  private readonly client: SpdyTestClient
  readonly chunks: Buffer[] = []
  received = 0
  private readonly hash = createHash('sha256')
  keepData = true
  private readonly replyD = deferred<SpdyHeaders | undefined>()
  private readonly endD = deferred<void>()
  private readonly resetD = deferred<number>()
  /** Resolves with the SYN_REPLY headers. */
  readonly replied = this.replyD.promise
  /** Resolves when the server FINs the stream. */
  readonly ended = this.endD.promise
  /** Resolves with the status of a RST_STREAM from the server. */
  readonly wasReset = this.resetD.promise
  isReplied = false
  isEnded = false
  resetStatus: number | undefined
  /** Called for each payload piece as it arrives. */
  onData: ((data: Buffer) => void) | undefined

  constructor(client: SpdyTestClient, id: number) {
    this.client = client
    this.id = id
  }

  /** Sends DATA (split into frames of at most 32 KiB, like kubectl's io.Copy). */
  write(data: Buffer, fin = false): boolean {
    let ok = true
    if (data.length === 0) return this.client.writeRaw(encodeDataFrame(this.id, data, fin))
    for (let off = 0; off < data.length; off += 32 * 1024) {
      const piece = data.subarray(off, Math.min(data.length, off + 32 * 1024))
      const last = off + piece.length >= data.length
      ok = this.client.writeRaw(encodeDataHeader(this.id, piece.length, fin && last))
      ok = this.client.writeRaw(piece) && ok
    }
    return ok
  }

  /** DATA FIN (half-close). */
  end(): void {
    this.write(Buffer.alloc(0), true)
  }

  /** RST_STREAM. */
  reset(status = 5): void {
    this.client.writeRaw(encodeRstStream(this.id, status))
  }

  /** Everything received, as text. */
  text(): string {
    return Buffer.concat(this.chunks).toString('utf8')
  }

  /** sha256 of everything received (hex). */
  digest(): string {
    return this.hash.copy().digest('hex')
  }

  /** @internal */
  deliver(data: Buffer): void {
    this.received += data.length
    this.hash.update(data)
    if (this.keepData) this.chunks.push(Buffer.from(data))
    this.onData?.(data)
  }

  /** @internal */
  markReplied(h: SpdyHeaders | undefined): void {
    this.isReplied = true
    this.replyD.resolve(h)
  }

  /** @internal */
  markEnded(): void {
    this.isEnded = true
    this.endD.resolve()
  }

  /** @internal */
  markReset(status: number): void {
    this.resetStatus = status
    this.resetD.resolve(status)
  }
}

/**
 * The client end of a SPDY session over `transport` (already past the upgrade).
 */
export class SpdyTestClient {
  readonly transport: Duplex
  /** Every frame received from the server, in wire order. */
  readonly log: ServerFrame[] = []
  /** Every frame error (a protocol violation by the server). */
  readonly errors: Error[] = []
  private readonly parser = new FrameParser({ maxControlFrameSize: 1 << 24 })
  /** Inflates the server's header blocks. */
  private readonly codec = new HeaderCodec()
  /** Our own deflate, driven directly so tests can compress malformed blocks too. */
  private readonly deflate: zlib.Deflate
  private deflateChain: Promise<unknown> = Promise.resolve()
  private readonly streams = new Map<number, ClientStream>()
  private nextId = 1
  private decoding = false
  private dataLen = new Map<number, number>()
  private readonly pings = new Map<number, () => void>()
  private readonly goawayD = deferred<{ lastGoodStreamId: number; status: number }>()
  private readonly closeD = deferred<void>()
  /** Resolves on GOAWAY from the server. */
  readonly goaway = this.goawayD.promise
  /** Resolves when the transport closed. */
  readonly closed = this.closeD.promise
  /** Bytes received from the server before the first frame we sent (must be 0). */
  bytesBeforeFirstWrite = 0
  private wrote = false

  constructor(transport: Duplex, options: { deflateLevel?: number } = {}) {
    this.transport = transport
    this.deflate = zlib.createDeflate({
      dictionary: SPDY3_DICTIONARY,
      level: options.deflateLevel ?? 9,
    })
    this.deflate.on('error', (err: Error) => this.errors.push(err))
    transport.on('data', (chunk: Buffer) => {
      if (!this.wrote) this.bytesBeforeFirstWrite += chunk.length
      this.parser.push(chunk)
      this.pump()
    })
    transport.on('error', (err: Error) => this.errors.push(err))
    transport.on('close', () => {
      this.codec.close()
      this.deflate.close()
      this.closeD.resolve()
    })
  }

  /** Writes raw bytes. */
  writeRaw(buf: Buffer): boolean {
    this.wrote = true
    if (this.transport.destroyed || this.transport.writableEnded) return false
    return this.transport.write(buf)
  }

  /** Opens a stream; resolves once its SYN_STREAM is on the wire. */
  openStream(headers: HeaderInput, fin = false): Promise<ClientStream> {
    const id = this.nextId
    this.nextId += 2
    const stream = new ClientStream(this, id)
    this.streams.set(id, stream)
    const raw = serializeHeaderBlock(headers)
    // Compression and the SYN_STREAM write happen in one ordered step.
    return this.ordered(raw, (block) => {
      this.writeRaw(encodeSynStream(id, block, fin ? FLAG_FIN : 0))
      return stream
    })
  }

  /** Compresses headers in this connection's deflate (for hand-made frames; write them in order). */
  compress(headers: HeaderInput): Promise<Buffer> {
    return this.compressRaw(serializeHeaderBlock(headers))
  }

  /** Compresses an arbitrary (maybe malformed) uncompressed block. */
  compressRaw(raw: Buffer): Promise<Buffer> {
    return this.ordered(raw, (block) => block)
  }

  private ordered<T>(raw: Buffer, then: (block: Buffer) => T): Promise<T> {
    const step = this.deflateChain.then(
      () =>
        new Promise<T>((resolve) => {
          const out: Buffer[] = []
          const onData = (c: Buffer): number => out.push(c)
          this.deflate.on('data', onData)
          this.deflate.write(raw)
          this.deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
            this.deflate.off('data', onData)
            resolve(then(Buffer.concat(out)))
          })
        }),
    )
    this.deflateChain = step.catch(() => {})
    return step
  }

  /** Registers a stream id used by a hand-made SYN_STREAM. */
  track(id: number): ClientStream {
    const s = new ClientStream(this, id)
    this.streams.set(id, s)
    if (id >= this.nextId) this.nextId = id + 2
    return s
  }

  /** Sends PING `id` (odd) and resolves when the server echoes it. */
  ping(id: number): Promise<void> {
    return new Promise((resolve) => {
      this.pings.set(id, resolve)
      this.writeRaw(encodePing(id))
    })
  }

  /** Sends GOAWAY. */
  sendGoaway(lastGoodStreamId = 0, status = 0): void {
    this.writeRaw(encodeGoaway(lastGoodStreamId, status))
  }

  /** Frames of one kind from the log. */
  framesOf<K extends ServerFrame['kind']>(kind: K): Extract<ServerFrame, { kind: K }>[] {
    return this.log.filter((f) => f.kind === kind) as Extract<ServerFrame, { kind: K }>[]
  }

  private pump(): void {
    while (!this.decoding) {
      let f: SpdyFrame | null
      try {
        f = this.parser.next()
      } catch (err) {
        this.errors.push(err as Error)
        this.transport.destroy()
        return
      }
      if (f === null) return
      this.handle(f)
    }
  }

  private handle(f: SpdyFrame): void {
    switch (f.kind) {
      case 'data': {
        const len = (this.dataLen.get(f.streamId) ?? 0) + f.data.length
        const s = this.streams.get(f.streamId)
        if (s !== undefined && !s.isReplied) {
          this.errors.push(new Error(`DATA before SYN_REPLY on stream ${f.streamId}`))
        }
        if (f.data.length > 0) s?.deliver(f.data)
        if (f.last) {
          this.dataLen.delete(f.streamId)
          this.log.push({ kind: 'data', streamId: f.streamId, length: len, fin: f.fin })
          if (f.fin) s?.markEnded()
        } else {
          this.dataLen.set(f.streamId, len)
        }
        return
      }
      case 'syn_reply': {
        this.decoding = true
        const raw = Buffer.from(f.headerBlock)
        this.codec.decode(f.headerBlock, (err, headers) => {
          this.decoding = false
          if (err !== null) this.errors.push(err)
          this.log.push({ kind: 'syn_reply', streamId: f.streamId, headers, raw })
          this.streams.get(f.streamId)?.markReplied(headers)
          this.pump()
        })
        return
      }
      case 'rst_stream':
        this.log.push({ kind: 'rst_stream', streamId: f.streamId, status: f.status })
        this.streams.get(f.streamId)?.markReset(f.status)
        return
      case 'ping': {
        this.log.push({ kind: 'ping', id: f.id })
        if (f.id % 2 === 0) {
          this.writeRaw(encodePing(f.id))
          return
        }
        const done = this.pings.get(f.id)
        this.pings.delete(f.id)
        done?.()
        return
      }
      case 'goaway':
        this.log.push({ kind: 'goaway', lastGoodStreamId: f.lastGoodStreamId, status: f.status })
        this.goawayD.resolve({ lastGoodStreamId: f.lastGoodStreamId, status: f.status })
        return
      default:
        this.log.push({ kind: 'other', type: f.kind })
        this.errors.push(new Error(`server sent a ${f.kind} frame`))
    }
  }
}
