/**
 * A byte-stream `Duplex` over a `ws` WebSocket, for the SPDY tunnel (protocol B,
 * docs/kubernetes-protocols.md#framing-in-the-tunnel): the payloads of the binary
 * messages, in order, are the stream's bytes; each write goes out as binary messages.
 *
 * Why not `ws`'s own `createWebSocketStream`: it passes text messages through as
 * bytes (kubectl treats any text message as fatal, and so do we), treats every
 * close code as a clean EOF, and waits for nothing when the socket is congested.
 * Here:
 * - binary messages of any size, including 0 bytes (kubectl sends them), are
 *   concatenated; message boundaries mean nothing;
 * - a text message is a protocol error: the WebSocket is closed with 1003 and the
 *   stream is destroyed with an error;
 * - close code 1000, 1005 (no code) and 1006 (no close frame: how kubectl ends when it
 *   is interrupted, docs/kubernetes-protocols.md#closing-the-tunnel) are EOF, as a TCP
 *   FIN is for plain SPDY (the session still reports an EOF inside a frame); any other
 *   close code destroys the stream with an error;
 * - reading pauses the WebSocket while the stream's buffer is full, and a write's
 *   callback waits for the socket to drain when too much is queued in `ws`;
 * - `end()` closes the WebSocket with 1000 after everything written was queued;
 *   `destroy(err)` closes it with 1011 (1000 without an error).
 *
 * This module only requires a `ws`-compatible object (see {@link WebSocketLike});
 * it does not import `ws`.
 *
 * @module
 */
import { Duplex } from 'node:stream'
import { appError } from '../shared/errors.js'

/** The part of `ws`'s WebSocket this module uses (ws 8). */
export interface WebSocketLike {
  readonly readyState: number
  readonly bufferedAmount: number
  binaryType: string
  send(
    data: Buffer,
    options: { binary: boolean; compress?: boolean },
    cb?: (err?: Error) => void,
  ): void
  close(code?: number, reason?: string): void
  terminate(): void
  pause(): void
  resume(): void
  on(event: 'message', listener: (data: unknown, isBinary: boolean) => void): this
  on(event: 'close', listener: (code: number, reason: Buffer) => void): this
  on(event: 'error', listener: (err: Error) => void): this
  off(event: string, listener: (...args: never[]) => void): this
}

/** Options for {@link createWebSocketByteStream}. */
export interface WebSocketByteStreamOptions {
  /** Readable and writable high-water mark (default 256 KiB). */
  highWaterMark?: number
  /** Writes up to this total are merged into one message (default 16 KiB). */
  coalesceBytes?: number
}

const OPEN = 1
const CLOSE_NORMAL = 1000
const CLOSE_NO_STATUS = 1005
const CLOSE_ABNORMAL = 1006
const CLOSE_UNSUPPORTED_DATA = 1003
const CLOSE_INTERNAL_ERROR = 1011

/**
 * Wraps an OPEN WebSocket as a byte stream. The WebSocket belongs to the stream
 * from now on: do not add other 'message' listeners.
 *
 * @example
 * ```ts
 * wss.handleUpgrade(req, socket, head, (ws) => {
 *   const session = new SpdySession(createWebSocketByteStream(ws))
 * })
 * ```
 */
export function createWebSocketByteStream(
  ws: WebSocketLike,
  options: WebSocketByteStreamOptions = {},
): Duplex {
  const hwm = options.highWaterMark ?? 256 * 1024
  const coalesce = options.coalesceBytes ?? 16 * 1024
  let paused = false
  let wsClosed = false
  ws.binaryType = 'nodebuffer'

  const send = (data: Buffer, cb: (err?: Error | null) => void): void => {
    if (wsClosed || ws.readyState !== OPEN) {
      // The stream is ending because the socket went; 'close' handling reports it.
      cb()
      return
    }
    let called = false
    const done = (err?: Error | null): void => {
      if (called) return
      called = true
      cb(err)
    }
    // Pipeline writes while ws holds less than one high-water mark; past that,
    // wait until this message has reached the socket.
    ws.send(data, { binary: true, compress: false }, () => done())
    if (ws.bufferedAmount <= hwm) done()
  }

  const duplex = new Duplex({
    allowHalfOpen: true,
    readableHighWaterMark: hwm,
    writableHighWaterMark: hwm,
    read() {
      if (paused && !wsClosed) {
        paused = false
        ws.resume()
      }
    },
    write(chunk: Buffer, _enc, cb) {
      send(chunk, cb)
    },
    writev(chunks, cb) {
      let total = 0
      for (const c of chunks) total += (c.chunk as Buffer).length
      if (total <= coalesce) {
        send(
          Buffer.concat(
            chunks.map((c) => c.chunk as Buffer),
            total,
          ),
          cb,
        )
        return
      }
      const last = chunks.length - 1
      for (let i = 0; i < last; i++) send(chunks[i]!.chunk as Buffer, () => {})
      send(chunks[last]!.chunk as Buffer, cb)
    },
    final(cb) {
      if (!wsClosed && ws.readyState === OPEN) ws.close(CLOSE_NORMAL)
      cb()
    },
    destroy(err, cb) {
      detach()
      if (!wsClosed && ws.readyState === OPEN) {
        ws.close(err === null ? CLOSE_NORMAL : CLOSE_INTERNAL_ERROR)
      } else if (!wsClosed && ws.readyState !== 3) {
        ws.terminate()
      }
      cb(err)
    },
  })

  const onMessage = (data: unknown, isBinary: boolean): void => {
    if (duplex.destroyed) return
    if (!isBinary) {
      // kubectl: "invalid message type received"; a text message is never valid here.
      if (ws.readyState === OPEN) ws.close(CLOSE_UNSUPPORTED_DATA, 'binary messages only')
      duplex.destroy(appError('PFG_ERR_PROTO_BAD_HEADER', 'text message in a binary tunnel'))
      return
    }
    const buf = Buffer.isBuffer(data)
      ? data
      : Array.isArray(data)
        ? Buffer.concat(data as Buffer[])
        : Buffer.from(data as ArrayBuffer)
    if (buf.length === 0) return
    if (!duplex.push(buf) && !paused) {
      paused = true
      ws.pause()
    }
  }

  const onClose = (code: number): void => {
    wsClosed = true
    detach()
    if (duplex.destroyed) return
    if (code === CLOSE_NORMAL || code === CLOSE_NO_STATUS || code === CLOSE_ABNORMAL) {
      duplex.push(null)
      // Nothing can be sent any more either: finish the writable side too.
      if (!duplex.writableEnded) duplex.end()
    } else {
      duplex.destroy(appError('PFG_ERR_PROTO_BAD_HEADER', `WebSocket closed with code ${code}`))
    }
  }

  const onError = (err: Error): void => {
    if (!duplex.destroyed) duplex.destroy(err)
  }

  const noop = (): void => {}
  let detached = false
  const detach = (): void => {
    if (detached) return
    detached = true
    ws.off('message', onMessage)
    ws.off('error', onError)
    // Keep a listener: ws may still report an error while it closes.
    ws.on('error', noop)
  }

  ws.on('message', onMessage)
  ws.on('close', onClose)
  ws.on('error', onError)
  if (ws.readyState !== OPEN) {
    process.nextTick(() => duplex.destroy(new Error('WebSocket is not open')))
  }
  return duplex
}
