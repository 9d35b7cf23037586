/**
 * HTTP/2 tuning shared by the CLI, the gateway and the agent. The defaults
 * (64 KiB windows, 16 KiB frames) cap one stream far below what loopback and TLS
 * can carry; docs/performance.md has the measurements behind these values.
 *
 * @module
 */

/** Per-stream receive window advertised in SETTINGS (bounds memory per stalled stream). */
export const STREAM_WINDOW = 4 * 1024 * 1024
/**
 * Connection receive window, raised with `setLocalWindowSize` (not a SETTINGS value).
 *
 * Not larger: Node's HTTP/2 session stops reading its socket while one of its own
 * writes is in progress (node_http2.cc `MaybeStopReading`). When both ends of a
 * connection push more than the kernel's socket buffers hold at once (many streams
 * echoing bulk data both ways), both writes wait for a reader that has stopped: a
 * deadlock that only a PING timeout ends. The connection window bounds what a peer can
 * have in flight; at 64 MiB, 50 streams × 256 KiB echoed through one agent session
 * hung (test/protocol/h2-settings.test.ts); at 4 MiB (Linux's default `tcp_wmem`
 * maximum) it does not, and a single stream still gets its whole {@link STREAM_WINDOW}.
 */
export const CONNECTION_WINDOW = 4 * 1024 * 1024
/** Largest frame we accept (the peer may send frames up to this size). */
export const MAX_FRAME_SIZE = 64 * 1024
/** nghttp2's per-session memory cap in MiB; the default (10) fails near 10,000 streams. */
export const MAX_SESSION_MEMORY_MB = 1024
/** How many concurrent streams one peer may open on a connection. */
export const MAX_CONCURRENT_STREAMS = 100_000
/** High-water mark of the byte streams relayed in Node (process-wide; see docs/performance.md). */
export const STREAM_HIGH_WATER_MARK = 256 * 1024

/** SETTINGS for every pfgate HTTP/2 endpoint. */
export function h2Settings(maxConcurrentStreams = MAX_CONCURRENT_STREAMS) {
  return {
    initialWindowSize: STREAM_WINDOW,
    maxFrameSize: MAX_FRAME_SIZE,
    maxConcurrentStreams,
    enablePush: false,
  }
}

/** Session options common to clients and servers. */
export function h2SessionOptions() {
  return {
    settings: h2Settings(),
    maxSessionMemory: MAX_SESSION_MEMORY_MB,
    // Header lists are small here; refuse anything large early.
    maxHeaderListPairs: 128,
    // Our streams are long-lived byte pipes; do not let nghttp2 cap outstanding pings/settings low.
    maxOutstandingPings: 16,
    // What a client assumes the server allows until the server's SETTINGS arrive, the
    // minimum RFC 9113 §5.1.2 recommends: the gateway starts unauthenticated connections
    // at 100 (limits.unauthenticatedStreams), and a client that opened more before it
    // heard so would have streams refused. nghttp2 queues the others until they arrive.
    peerMaxConcurrentStreams: PEER_STREAMS_BEFORE_SETTINGS,
  }
}

/** Concurrent streams a client opens before the server's SETTINGS say how many it allows. */
export const PEER_STREAMS_BEFORE_SETTINGS = 100

/** Raises the connection-level receive window on a new session. */
export function widenConnectionWindow(session: { setLocalWindowSize?: (n: number) => void }): void {
  try {
    session.setLocalWindowSize?.(CONNECTION_WINDOW)
  } catch {
    // the session closed before it was set up; nothing to widen
  }
}
