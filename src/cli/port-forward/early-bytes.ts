/**
 * The first bytes of a local connection, sent while its stream is still opening.
 *
 * Without this, a local client's first bytes wait in its socket until the gateway's 200
 * arrives, and only then set out: every open pays one more trip from the CLI to the
 * gateway before they can go on to the pod. Written right behind the stream's HEADERS
 * instead, they are at the gateway when it answers (it holds them, unread, within the
 * stream's flow-control window, and relays them only once the stream is open and
 * audited; a refused stream's bytes are dropped there). docs/performance.md, "Stream open".
 *
 * The bytes are kept until the stream is open, because an open can be retried on a new
 * stream (an expired token refreshed, a pod that moved): the new stream gets them again.
 * At most {@link EARLY_BYTES_LIMIT} are taken this way; beyond that the socket is paused
 * until the relay takes over. The local client's EOF is taken too (a client may write and
 * half-close at once): the stream being opened is ended, and the relay is told.
 *
 * @module
 */
import type { Socket } from 'node:net'
import type { Writable } from 'node:stream'

/** Most bytes sent ahead of the 200 (and kept for a retried stream) per connection. */
export const EARLY_BYTES_LIMIT = 64 * 1024

/** Where a dialer writes what the local client sent before its stream opened. */
export interface EarlyWriter {
  /** Writes everything so far to `stream` (a just-requested stream) and what follows. */
  attach(stream: Writable): void
}

/** What the early phase took from the socket, for the relay that follows it. */
export interface EarlyOutcome {
  /** Bytes read from the local client and written to the stream. */
  bytes: number
  /** The local client's EOF was read (the stream was ended). */
  ended: boolean
  /**
   * The bytes (and the EOF, `ended`) still to be written to the opened stream: all of them
   * when the dialer never attached a stream (it does not write early), none otherwise.
   */
  unsent: Buffer[]
}

/** Reads a local socket while its stream opens; see the module comment. */
export class EarlyBytes implements EarlyWriter {
  readonly #socket: Socket
  #chunks: Buffer[] = []
  #bytes = 0
  #ended = false
  #target: Writable | undefined
  #done = false

  constructor(socket: Socket) {
    this.#socket = socket
    socket.on('data', this.#onData)
    socket.on('end', this.#onEnd)
    socket.resume()
  }

  attach(stream: Writable): void {
    if (this.#done) return
    this.#target = stream
    for (const c of this.#chunks) stream.write(c)
    if (this.#ended) stream.end()
  }

  /**
   * Stops reading (the socket is left paused for the relay) and says what was taken.
   * Called once, when the stream opened (or failed to).
   */
  detach(): EarlyOutcome {
    this.#done = true
    this.#socket.off('data', this.#onData)
    this.#socket.off('end', this.#onEnd)
    this.#socket.pause()
    const unsent = this.#target === undefined ? this.#chunks : []
    this.#chunks = []
    this.#target = undefined
    return { bytes: this.#bytes, ended: this.#ended, unsent }
  }

  readonly #onData = (chunk: Buffer): void => {
    this.#chunks.push(chunk)
    this.#bytes += chunk.length
    const t = this.#target
    if (t !== undefined && !t.destroyed && !t.writableEnded) t.write(chunk)
    if (this.#bytes >= EARLY_BYTES_LIMIT) this.#socket.pause()
  }

  readonly #onEnd = (): void => {
    this.#ended = true
    const t = this.#target
    if (t !== undefined && !t.destroyed && !t.writableEnded) t.end()
  }
}
