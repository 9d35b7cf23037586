/**
 * SPDY/3 name/value header blocks (docs/kubernetes-protocols.md#header-blocks): the
 * uncompressed layout, and the per-connection zlib contexts that carry it.
 *
 * Each direction of a connection is ONE zlib stream, started with the SPDY/3
 * dictionary and cut into header blocks with SYNC_FLUSH. Every block depends on
 * all earlier ones, so blocks must be inflated in the order they were received and
 * deflated in the exact order their frames are written. {@link HeaderCodec} keeps
 * one persistent inflate and one persistent deflate and runs each direction through
 * a FIFO queue, one block at a time; callbacks fire in submission order.
 *
 * Node has no synchronous API for a persistent zlib stream (`_processChunk` closes
 * the handle after one call), so both directions are asynchronous; the session
 * stops parsing while a block is inflated and holds a stream's DATA until its
 * SYN_REPLY has been written.
 *
 * Inflate output is capped ({@link DEFAULT_MAX_HEADER_BLOCK_SIZE}): a block that
 * inflates past the cap (a zip bomb) destroys the inflate and fails the codec,
 * which is session-fatal, before it can use more memory.
 *
 * @module
 */
import zlib from 'node:zlib'
import { SPDY3_DICTIONARY } from './dictionary.js'
import { SpdyProtocolError } from './frames.js'

/** Default cap on one inflated header block. kubectl's are under 100 bytes. */
export const DEFAULT_MAX_HEADER_BLOCK_SIZE = 64 * 1024

/** Received headers: lower-case name → values (a NUL-joined value is split). */
export type SpdyHeaders = Map<string, string[]>

/** Headers to send: a Map, an array of pairs or a plain object. */
export type HeaderInput =
  | ReadonlyMap<string, string | readonly string[]>
  | readonly (readonly [string, string | readonly string[]])[]
  | Readonly<Record<string, string | readonly string[]>>

const UPPER_CASE = /[A-Z]/

function entriesOf(headers: HeaderInput): [string, string | readonly string[]][] {
  if (headers instanceof Map) return [...(headers as ReadonlyMap<string, string>).entries()]
  if (Array.isArray(headers)) return headers as [string, string | readonly string[]][]
  return Object.entries(headers as Readonly<Record<string, string | readonly string[]>>)
}

/**
 * Serializes headers into an uncompressed SPDY/3 block:
 * `u32 count, then (u32 len, name, u32 len, value)*`, with several values joined by
 * NUL. Names must be non-empty, lower-case and unique (spdystream kills the session
 * otherwise). Text is encoded as latin1 (one byte per char) so any byte round-trips.
 * An empty input gives the 4-byte zero count (never a zero-length block).
 *
 * @throws TypeError on an invalid or duplicate name (programmer error).
 */
export function serializeHeaderBlock(headers: HeaderInput): Buffer {
  const entries = entriesOf(headers)
  const seen = new Set<string>()
  const parts: Buffer[] = [Buffer.alloc(4)]
  parts[0]!.writeUInt32BE(entries.length)
  for (const [name, value] of entries) {
    if (name.length === 0 || UPPER_CASE.test(name)) {
      throw new TypeError(`SPDY header names must be non-empty lower-case: ${JSON.stringify(name)}`)
    }
    if (seen.has(name)) throw new TypeError(`duplicate SPDY header ${JSON.stringify(name)}`)
    seen.add(name)
    const text = typeof value === 'string' ? value : value.join('\0')
    const n = Buffer.from(name, 'latin1')
    const v = Buffer.from(text, 'latin1')
    const nl = Buffer.allocUnsafe(4)
    nl.writeUInt32BE(n.length)
    const vl = Buffer.allocUnsafe(4)
    vl.writeUInt32BE(v.length)
    parts.push(nl, n, vl, v)
  }
  return Buffer.concat(parts)
}

/**
 * Parses an uncompressed header block. Rejects truncation, trailing bytes,
 * empty or upper-case names and duplicate names.
 *
 * @throws SpdyProtocolError on a malformed block.
 */
export function parseHeaderBlock(raw: Buffer): SpdyHeaders {
  if (raw.length < 4) throw new SpdyProtocolError(`header block of ${raw.length} bytes`)
  const count = raw.readUInt32BE(0)
  // Each pair needs at least 8 bytes of lengths: refuse absurd counts up front.
  if (count > (raw.length - 4) / 8) {
    throw new SpdyProtocolError(`header block claims ${count} pairs in ${raw.length} bytes`)
  }
  const headers: SpdyHeaders = new Map()
  let o = 4
  for (let i = 0; i < count; i++) {
    if (o + 4 > raw.length) throw new SpdyProtocolError('header block truncated')
    const nameLen = raw.readUInt32BE(o)
    o += 4
    if (nameLen === 0) throw new SpdyProtocolError('empty header name')
    if (nameLen > raw.length - o - 4) throw new SpdyProtocolError('header block truncated')
    const name = raw.toString('latin1', o, o + nameLen)
    o += nameLen
    const valueLen = raw.readUInt32BE(o)
    o += 4
    if (valueLen > raw.length - o) throw new SpdyProtocolError('header block truncated')
    const value = raw.toString('latin1', o, o + valueLen)
    o += valueLen
    if (UPPER_CASE.test(name)) {
      throw new SpdyProtocolError(`upper-case header name ${JSON.stringify(name)}`)
    }
    if (headers.has(name)) throw new SpdyProtocolError(`duplicate header ${JSON.stringify(name)}`)
    headers.set(name, value.split('\0'))
  }
  if (o !== raw.length)
    throw new SpdyProtocolError(`${raw.length - o} bytes after the header block`)
  return headers
}

/** Options for {@link HeaderCodec}. */
export interface HeaderCodecOptions {
  /** Cap on one inflated block (default {@link DEFAULT_MAX_HEADER_BLOCK_SIZE}). */
  maxHeaderBlockSize?: number
  /**
   * zlib memLevel of the deflate side (1..9). Our blocks are tiny (usually the
   * empty SYN_REPLY), so the default 1 saves ~128 KiB per connection; the output
   * for an empty block is the same bytes as at level 6/memLevel 8.
   */
  deflateMemLevel?: number
  /** zlib level of the deflate side (default 6; Go's spdystream uses 9). */
  deflateLevel?: number
}

type Callback<T> = (err: Error | null, value?: T) => void

interface Job<T> {
  input: Buffer
  cb: Callback<T>
}

/**
 * The two zlib contexts of one SPDY connection. Not reusable across connections.
 * Call {@link close} when the connection ends; pending callbacks then get an error.
 */
export class HeaderCodec {
  readonly #maxBlock: number
  readonly #memLevel: number
  readonly #level: number
  #inflate: zlib.Inflate | undefined
  #deflate: zlib.Deflate | undefined
  readonly #inflateJobs: Job<SpdyHeaders>[] = []
  readonly #deflateJobs: Job<Buffer>[] = []
  #inflateOut: Buffer[] = []
  #inflateSize = 0
  #deflateOut: Buffer[] = []
  #failure: Error | undefined

  constructor(options: HeaderCodecOptions = {}) {
    this.#maxBlock = options.maxHeaderBlockSize ?? DEFAULT_MAX_HEADER_BLOCK_SIZE
    this.#memLevel = options.deflateMemLevel ?? 1
    this.#level = options.deflateLevel ?? 6
  }

  /** The error that broke the codec (it then fails every call), if any. */
  get error(): Error | undefined {
    return this.#failure
  }

  /**
   * Inflates and parses one received header block. Blocks are processed in call
   * order. A zlib error or an oversized block fails the codec (session-fatal); a
   * malformed block that inflated fine fails only this call (err is then a
   * {@link SpdyProtocolError} and the codec stays usable).
   */
  decode(block: Buffer, cb: Callback<SpdyHeaders>): void {
    if (this.#failure !== undefined) {
      process.nextTick(cb, this.#failure)
      return
    }
    this.#inflateJobs.push({ input: block, cb })
    if (this.#inflateJobs.length === 1) this.#runInflate()
  }

  /**
   * Serializes and deflates headers into one block. Blocks come out in call order,
   * and the caller must write them to the wire in that same order.
   *
   * @throws TypeError synchronously on invalid header names.
   */
  encode(headers: HeaderInput, cb: Callback<Buffer>): void {
    const raw = serializeHeaderBlock(headers)
    if (this.#failure !== undefined) {
      process.nextTick(cb, this.#failure)
      return
    }
    this.#deflateJobs.push({ input: raw, cb })
    if (this.#deflateJobs.length === 1) this.#runDeflate()
  }

  /** Releases both zlib contexts; pending and later calls fail. Idempotent. */
  close(): void {
    if (this.#failure === undefined) this.#fail(new Error('SPDY header codec closed'))
  }

  #getInflate(): zlib.Inflate {
    if (this.#inflate === undefined) {
      const inflate = zlib.createInflate({ dictionary: SPDY3_DICTIONARY })
      inflate.on('data', (chunk: Buffer) => {
        this.#inflateSize += chunk.length
        if (this.#inflateSize > this.#maxBlock) {
          this.#fail(new SpdyProtocolError(`header block inflates past ${this.#maxBlock} bytes`))
          return
        }
        this.#inflateOut.push(chunk)
      })
      inflate.on('error', (err: Error) => {
        this.#fail(new SpdyProtocolError(`header block does not inflate: ${err.message}`))
      })
      this.#inflate = inflate
    }
    return this.#inflate
  }

  #getDeflate(): zlib.Deflate {
    if (this.#deflate === undefined) {
      const deflate = zlib.createDeflate({
        dictionary: SPDY3_DICTIONARY,
        memLevel: this.#memLevel,
        level: this.#level,
      })
      deflate.on('data', (chunk: Buffer) => this.#deflateOut.push(chunk))
      deflate.on('error', (err: Error) => {
        this.#fail(new Error(`SPDY header deflate failed: ${err.message}`))
      })
      this.#deflate = deflate
    }
    return this.#deflate
  }

  #runInflate(): void {
    const job = this.#inflateJobs[0]
    if (job === undefined || this.#failure !== undefined) return
    const inflate = this.#getInflate()
    this.#inflateOut = []
    this.#inflateSize = 0
    inflate.write(job.input)
    inflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
      // After a failure the job was already answered by fail().
      if (this.#failure !== undefined || this.#inflateJobs[0] !== job) return
      this.#inflateJobs.shift()
      const raw =
        this.#inflateOut.length === 1 ? this.#inflateOut[0]! : Buffer.concat(this.#inflateOut)
      this.#inflateOut = []
      let headers: SpdyHeaders | undefined
      let error: Error | null = null
      try {
        headers = parseHeaderBlock(raw)
      } catch (err) {
        error = err as Error
      }
      this.#runInflate()
      job.cb(error, headers)
    })
  }

  #runDeflate(): void {
    const job = this.#deflateJobs[0]
    if (job === undefined || this.#failure !== undefined) return
    const deflate = this.#getDeflate()
    this.#deflateOut = []
    deflate.write(job.input)
    deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
      if (this.#failure !== undefined || this.#deflateJobs[0] !== job) return
      this.#deflateJobs.shift()
      const block =
        this.#deflateOut.length === 1 ? this.#deflateOut[0]! : Buffer.concat(this.#deflateOut)
      this.#deflateOut = []
      this.#runDeflate()
      job.cb(null, block)
    })
  }

  #fail(err: Error): void {
    if (this.#failure !== undefined) return
    this.#failure = err
    this.#inflateOut = []
    this.#deflateOut = []
    const inflate = this.#inflate
    const deflate = this.#deflate
    // Keep a listener: a destroyed zlib stream may still report an error.
    if (inflate !== undefined) {
      inflate.removeAllListeners('data')
      inflate.on('error', () => {})
      inflate.destroy()
    }
    if (deflate !== undefined) {
      deflate.removeAllListeners('data')
      deflate.on('error', () => {})
      deflate.destroy()
    }
    const callbacks: ((e: Error) => void)[] = [
      ...this.#inflateJobs.map((j) => j.cb),
      ...this.#deflateJobs.map((j) => j.cb),
    ]
    this.#inflateJobs.length = 0
    this.#deflateJobs.length = 0
    // Answer later: fail() runs inside zlib events and inside close().
    for (const cb of callbacks) process.nextTick(cb, err)
  }
}
