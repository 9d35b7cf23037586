/**
 * Writes channel-protocol messages (`v4.channel.k8s.io`,
 * docs/kubernetes-protocols.md#channel-protocol) one WebSocket frame per socket write,
 * the way the kubelet and the API server (Go) do.
 *
 * Why: a TLS socket that is handed several frames at once (Node's `writev` of queued
 * writes) seals them into the same TLS records, so a record can end in the middle of
 * the next frame. Clients that `select()` on the socket between frames, such as the
 * official Python client before kubernetes-client/python#2646, then wait for ever for
 * bytes that are already decrypted in their TLS buffer. Sending the next frame only
 * when the previous write has completed keeps every frame's end on a record boundary.
 *
 * What it costs: nothing on throughput in practice, because data queued while a write
 * is in flight on the same channel is merged into the next frame (a data channel is a
 * byte stream; its frame boundaries mean nothing). Messages whose boundary matters
 * (port prefixes, error text) are sent `whole`.
 *
 * @module
 */
import {
  MAX_CHANNEL_PORTS,
  dataChannel,
  encodeChannelMessage,
  encodePortPrefix,
  errorChannel,
} from './ws-channel.js'
import type { ChannelEncoding } from './ws-channel.js'

/** The part of a `ws` WebSocket the writer uses. */
export interface ChannelSocket {
  readonly readyState: number
  send(data: Buffer | string, options: { binary: boolean }, cb: (err?: Error) => void): void
}

/** Options of a {@link ChannelWriter}. */
export interface ChannelWriterOptions {
  /** Bytes queued (or in flight) above which `send` callbacks wait. Default 256 KiB. */
  highWaterMark?: number
  /** Largest frame payload made by merging queued chunks. Default 256 KiB. */
  maxMergedBytes?: number
}

type Callback = () => void

interface Pending {
  channel: number
  chunks: Buffer[]
  bytes: number
  whole: boolean
  /** Callbacks that run when this message has been written (or dropped). */
  waiting: Callback[]
}

const OPEN = 1

/** A per-WebSocket queue that keeps one frame in flight at a time. */
export class ChannelWriter {
  readonly #ws: ChannelSocket
  readonly #encoding: ChannelEncoding
  readonly #hwm: number
  readonly #maxMerged: number
  readonly #queue: Pending[] = []
  #inFlight: Pending | undefined
  #pendingBytes = 0
  #idle: Callback[] = []

  constructor(ws: ChannelSocket, encoding: ChannelEncoding, options: ChannelWriterOptions = {}) {
    this.#ws = ws
    this.#encoding = encoding
    this.#hwm = options.highWaterMark ?? 256 * 1024
    this.#maxMerged = options.maxMergedBytes ?? 256 * 1024
  }

  /** Bytes queued or being written. */
  get pendingBytes(): number {
    return this.#pendingBytes
  }

  /**
   * Queues `payload` on `channel`. `cb` runs at once while fewer than the high-water
   * mark of bytes are pending, otherwise when this payload has been written. A closed
   * WebSocket drops the payload (and still calls `cb`). `whole` keeps the payload in a
   * frame of its own.
   */
  send(channel: number, payload: Buffer, cb?: Callback, whole = false): void {
    if (this.#ws.readyState !== OPEN) {
      cb?.()
      return
    }
    this.#pendingBytes += payload.length
    const last = this.#queue.at(-1)
    let entry: Pending
    if (
      !whole &&
      last !== undefined &&
      !last.whole &&
      last.channel === channel &&
      last.bytes + payload.length <= this.#maxMerged
    ) {
      entry = last
      entry.chunks.push(payload)
      entry.bytes += payload.length
    } else {
      entry = { channel, chunks: [payload], bytes: payload.length, whole, waiting: [] }
      this.#queue.push(entry)
    }
    if (cb !== undefined) {
      if (this.#pendingBytes <= this.#hwm) cb()
      else entry.waiting.push(cb)
    }
    this.#flush()
  }

  /**
   * What goes right after the handshake, before any data: for every port *i*, the
   * port number (2 bytes, little-endian) on channel 2i, then on channel 2i+1 (the
   * kubelet's order). For port 5000, binary: `00 88 13`, `01 88 13`; base64:
   * `"0iBM="`, `"1iBM="`.
   */
  sendPortPrefixes(ports: readonly number[]): void {
    if (ports.length > MAX_CHANNEL_PORTS) {
      throw new RangeError(`at most ${MAX_CHANNEL_PORTS} ports, got ${ports.length}`)
    }
    const prefixes = ports.map(encodePortPrefix)
    prefixes.forEach((prefix, i) => {
      this.send(dataChannel(i), prefix, undefined, true)
      this.send(errorChannel(i), prefix, undefined, true)
    })
  }

  /** Runs `fn` once nothing is queued or in flight (at once when that is already so). */
  whenIdle(fn: Callback): void {
    if (this.#inFlight === undefined && this.#queue.length === 0) fn()
    else this.#idle.push(fn)
  }

  #flush(): void {
    if (this.#inFlight !== undefined) return
    const next = this.#queue.shift()
    if (next === undefined) {
      const idle = this.#idle
      this.#idle = []
      for (const fn of idle) fn()
      return
    }
    if (this.#ws.readyState !== OPEN) {
      // Gone: what is queued has nowhere to go.
      this.#settle(next)
      for (const e of this.#queue.splice(0)) this.#settle(e)
      this.#flush()
      return
    }
    this.#inFlight = next
    const payload = next.chunks.length === 1 ? next.chunks[0]! : Buffer.concat(next.chunks)
    const message = encodeChannelMessage(next.channel, payload, this.#encoding)
    this.#ws.send(message, { binary: this.#encoding === 'binary' }, () => {
      this.#inFlight = undefined
      this.#settle(next)
      this.#flush()
    })
  }

  #settle(entry: Pending): void {
    this.#pendingBytes -= entry.bytes
    for (const cb of entry.waiting) cb()
  }
}
