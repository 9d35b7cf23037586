/**
 * The datagram framing of a UDP flow on the native contract (docs/protocol.md, "UDP
 * flows"): one HTTP/2 stream carries the flow's datagrams, each as a 2-byte big-endian
 * length followed by that many bytes. Boundaries are kept (a frame is one datagram, never
 * merged or split), order is the stream's, and a datagram is at most
 * {@link MAX_DATAGRAM_SIZE} bytes; anything longer is a protocol error that ends the flow.
 *
 * @module
 */

/** Request header that marks a forward as a UDP flow (`pfgate-protocol: udp`). */
export const PROTOCOL_HEADER = 'pfgate-protocol'

/** The value of {@link PROTOCOL_HEADER} for a UDP flow (absent means TCP). */
export const UDP_PROTOCOL = 'udp'

/**
 * Largest datagram a flow carries, bytes: the largest IPv4 UDP payload (65,535 minus the
 * 20-byte IP and 8-byte UDP headers), which IPv6 also carries, so every frame fits both.
 */
export const MAX_DATAGRAM_SIZE = 65_507

/** Bytes of the length prefix. */
export const FRAME_HEADER_SIZE = 2

/** A frame that cannot be a datagram (too long, or cut off by the end of the stream). */
export class UdpFrameError extends Error {
  override name = 'UdpFrameError'
}

/** One datagram as a frame: the length prefix and the bytes, in one buffer. */
export function encodeDatagram(datagram: Uint8Array): Buffer {
  if (datagram.length > MAX_DATAGRAM_SIZE) {
    throw new UdpFrameError(
      `a datagram of ${datagram.length} bytes is larger than ${MAX_DATAGRAM_SIZE}`,
    )
  }
  const frame = Buffer.allocUnsafe(FRAME_HEADER_SIZE + datagram.length)
  frame.writeUInt16BE(datagram.length, 0)
  frame.set(datagram, FRAME_HEADER_SIZE)
  return frame
}

/**
 * Splits a byte stream back into datagrams. Memory is bounded: at most one partial frame
 * (2 + {@link MAX_DATAGRAM_SIZE} bytes) is held, and an oversize length is refused as soon
 * as its prefix arrives, before any of its bytes are buffered.
 *
 * @example
 * ```ts
 * const decoder = new DatagramDecoder()
 * stream.on('data', (chunk) => {
 *   for (const d of decoder.push(chunk)) socket.send(d)
 * })
 * stream.on('end', () => decoder.end()) // throws on a truncated last frame
 * ```
 */
export class DatagramDecoder {
  #pending: Buffer | undefined
  #failed = false

  /** Bytes of a partial frame held until the rest arrives. */
  get buffered(): number {
    return this.#pending?.length ?? 0
  }

  /** Feeds stream bytes; returns the complete datagrams they finish, in order. */
  push(chunk: Buffer): Buffer[] {
    if (this.#failed) throw new UdpFrameError('the flow already had a framing error')
    const buf = this.#pending === undefined ? chunk : Buffer.concat([this.#pending, chunk])
    this.#pending = undefined
    const out: Buffer[] = []
    let off = 0
    while (buf.length - off >= FRAME_HEADER_SIZE) {
      const len = buf.readUInt16BE(off)
      if (len > MAX_DATAGRAM_SIZE) {
        this.#failed = true
        throw new UdpFrameError(`a frame announces ${len} bytes, more than ${MAX_DATAGRAM_SIZE}`)
      }
      if (buf.length - off - FRAME_HEADER_SIZE < len) break
      out.push(buf.subarray(off + FRAME_HEADER_SIZE, off + FRAME_HEADER_SIZE + len))
      off += FRAME_HEADER_SIZE + len
    }
    if (off < buf.length) {
      // Copy the tail so a large chunk is not kept alive by a small partial frame.
      this.#pending = Buffer.from(buf.subarray(off))
    }
    return out
  }

  /** The stream ended: throws when it ended inside a frame. */
  end(): void {
    if (this.#pending !== undefined && this.#pending.length > 0) {
      const held = this.#pending.length
      this.#pending = undefined
      throw new UdpFrameError(`the stream ended inside a frame (${held} bytes of it arrived)`)
    }
  }
}

/**
 * Trailer with which a flow's response ends when its sender ends it cleanly: why
 * (`client` the requester ended its side, `idle`, `lifetime`, `unreachable` an ICMP
 * port unreachable came back from the pod's port, `pod-error` another socket error).
 */
export const UDP_END_TRAILER = 'pfgate-udp-end'
/** Trailer: datagrams the sender's side of the flow dropped (pressure), decimal. */
export const UDP_DROPPED_TRAILER = 'pfgate-udp-dropped'
/** Trailer (agent): datagrams that came from another source than the pod port, not delivered. */
export const UDP_WRONG_SOURCE_TRAILER = 'pfgate-udp-wrong-source'

/** Why a flow ended, as the end trailer and the audit record name it. */
export type UdpEndReason = 'client' | 'idle' | 'lifetime' | 'unreachable' | 'pod-error'

const UDP_END_REASONS: readonly string[] = [
  'client',
  'idle',
  'lifetime',
  'unreachable',
  'pod-error',
]

/** Parses an end trailer value (unknown values are `undefined`). */
export function parseUdpEnd(v: unknown): UdpEndReason | undefined {
  return typeof v === 'string' && UDP_END_REASONS.includes(v) ? (v as UdpEndReason) : undefined
}

/** Parses a counter trailer: a decimal of at most 15 digits, else 0. */
export function parseCountTrailer(v: unknown): number {
  return typeof v === 'string' && /^[0-9]{1,15}$/.test(v) ? Number(v) : 0
}
