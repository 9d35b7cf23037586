/**
 * Edge adapter for the WebSocket channel protocol of port-forward, `v4.channel.k8s.io`
 * (binary) and `v4.base64.channel.k8s.io` (text),
 * docs/kubernetes-protocols.md#channel-protocol: @kubernetes/client-node, the Python
 * client, browsers. One WebSocket carries one TCP connection per port of its `?ports=`
 * list; port *i* uses channel 2i for data and 2i+1 for errors.
 *
 * As the kubelet does:
 * - straight after the handshake, the port number (2 bytes, little-endian) goes out
 *   on both channels of every port, before any data;
 * - every port's connection is opened at once ({@link Forwarder.open} each); one that
 *   cannot be opened gets one line of text on its error channel and is finished;
 * - when every port is finished the WebSocket is closed with 1000;
 * - when the client closes the WebSocket, the pod connections are ended.
 *
 * v4 has no half-close (docs/kubernetes-protocols.md#closing-and-half-close): the pod's
 * EOF finishes its port (the client learns it when the WebSocket closes); the
 * WebSocket's close is the client's EOF on every port, after which pod bytes have
 * nowhere to go, so a pod connection still open {@link CLOSE_GRACE_MS} later is reset.
 * An abnormal end after the open (agent or pod reset, admin, limit, shutdown) is a line
 * on the port's error channel.
 *
 * @module
 */
import { Duplex } from 'node:stream'
import type { WebSocket } from 'ws'
import {
  dataChannel,
  decodeChannelMessage,
  errorChannel,
  channelRole,
} from '../../protocol/ws-channel.js'
import type { ChannelEncoding } from '../../protocol/ws-channel.js'
import { ChannelWriter } from '../../protocol/ws-channel-writer.js'
import type { AbortReason } from '../../protocol/stream-end.js'
import type { RelayEndpoint } from '../../shared/duplex-relay.js'
import { isAppError } from '../../shared/errors.js'
import { keepAlive } from '../../shared/keepalive.js'
import type { Logger } from '../../shared/log.js'
import type { ForwardService } from '../forward/service.js'
import type { ClientSession } from '../forward/stream-table.js'
import { forwardStream, upgradeStreamRequest } from './contract.js'
import type { EdgeConnection } from './contract.js'
import type { UpgradeTarget } from './spdy-adapter.js'

/** How long pod connections may finish after the client closed the WebSocket. */
export const CLOSE_GRACE_MS = 1000

const kClosing = Symbol('pfgate.gateway.wsClosing')

/** How long a WebSocket's close handshake may take before the connection is cut. */
export const CLOSE_LINGER_MS = 2000

/** How long queued pod bytes may take to reach the client once every port has finished. */
export const CLOSE_DRAIN_MS = 10_000

/**
 * Closes a WebSocket (when still open) and makes sure it goes: reading resumes (a
 * paused socket would never see the peer's close frame) and the connection is cut
 * {@link CLOSE_LINGER_MS} later if the peer has not finished the handshake (`ws` itself
 * waits 30 s). Idempotent.
 */
export function closeWebSocket(ws: WebSocket, code: number): void {
  const tagged = ws as WebSocket & { [kClosing]?: true }
  if (ws.readyState === OPEN) ws.close(code)
  ws.resume()
  if (tagged[kClosing] === true || ws.readyState === CLOSED) return
  tagged[kClosing] = true
  const timer = setTimeout(() => ws.terminate(), CLOSE_LINGER_MS)
  ws.once('close', () => clearTimeout(timer))
}

/** Readable/writable high-water mark of each port's stream. */
const HWM = 256 * 1024
/**
 * What a channel connection may queue toward the client, and the largest frame that
 * queued data is merged into. 1 MiB because of the Python client: its proxy thread reads
 * up to 1 MiB from the application per loop, sends it with a blocking TLS write, and reads
 * only one frame back per loop. With smaller frames a large upload outpaces what it reads
 * back, the pod's echo fills every buffer on the way, and its blocking write never ends
 * (seen once in the 2 × 16 MiB test). Frames as large as its reads keep its loop balanced.
 */
const CHANNEL_WRITE_HWM = 1024 * 1024
const OPEN = 1
const CLOSED = 3
const CLOSE_NORMAL = 1000
const CLOSE_NO_STATUS = 1005
const CLOSE_ABNORMAL = 1006
const CLOSE_PROTOCOL_ERROR = 1002
const CLOSE_UNSUPPORTED = 1003

/** What {@link serveChannelPortForward} needs. */
export interface ChannelServeOptions {
  forwarder: ForwardService
  logger: Logger
  session: ClientSession
  authorization: string | string[] | undefined
  target: UpgradeTarget
  ports: readonly number[]
  encoding: ChannelEncoding
  /** Called once when the WebSocket has closed (after endSession). */
  onClose?: () => void
  /**
   * WebSocket ping interval (0: none). A client that sends no pong within it is gone: its
   * ports end (audited `client-unresponsive`) and the WebSocket is cut.
   */
  keepaliveMs?: number
}

const ABORT_TEXT: Record<AbortReason, string> = {
  'peer-reset': 'the connection to the pod was reset',
  admin: 'ended by an administrator',
  limit: 'ended by a gateway limit',
  gateway: 'the gateway is shutting down',
  internal: 'internal error',
}

/** One port of a channel connection: its bytes as a Duplex for the relay. */
class PortStream extends Duplex {
  readonly #conn: Conn
  readonly index: number
  constructor(conn: Conn, index: number) {
    super({ allowHalfOpen: true, readableHighWaterMark: HWM, writableHighWaterMark: HWM })
    this.#conn = conn
    this.index = index
  }

  override _read(): void {
    this.#conn.readMore(this)
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#conn.send(dataChannel(this.index), chunk, cb)
  }

  override _final(cb: (err?: Error | null) => void): void {
    // The pod's EOF: v4 cannot say it; the port is finished.
    this.#conn.finishPort(this.index)
    cb()
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // A full stream that goes away must not keep the WebSocket paused (its close
    // handshake and the other ports would wait for ever: found by the gateway fuzzer).
    this.#conn.readMore(this)
    cb(err)
  }
}

/** The state of one channel connection. */
class Conn {
  readonly ws: WebSocket
  readonly encoding: ChannelEncoding
  readonly ports: readonly number[]
  readonly streams: PortStream[]
  readonly finished: boolean[]
  readonly writer: ChannelWriter
  /** Streams whose read buffer is full (the WebSocket is paused while any is). */
  readonly #full = new Set<PortStream>()
  #paused = false
  #closed = false
  #graceTimer: NodeJS.Timeout | undefined
  #drainTimer: NodeJS.Timeout | undefined

  constructor(ws: WebSocket, encoding: ChannelEncoding, ports: readonly number[]) {
    this.ws = ws
    this.encoding = encoding
    this.ports = ports
    this.streams = ports.map((_, i) => new PortStream(this, i))
    this.finished = ports.map(() => false)
    this.writer = new ChannelWriter(ws, encoding, {
      highWaterMark: CHANNEL_WRITE_HWM,
      maxMergedBytes: CHANNEL_WRITE_HWM,
    })
  }

  /**
   * Sends `payload` on `channel`; `cb` waits when too much is queued. Once the client
   * is gone the bytes are dropped (the relay learns it from the stream's end).
   */
  send(channel: number, payload: Buffer, cb: (err?: Error | null) => void): void {
    if (this.#closed) cb()
    else this.writer.send(channel, payload, () => cb())
  }

  sendError(index: number, text: string): void {
    if (text.length > 0 && !this.#closed) {
      this.writer.send(errorChannel(index), Buffer.from(text), undefined, true)
    }
  }

  /** Every port finished: the WebSocket closes with 1000 once what is queued is written. */
  finishPort(index: number): void {
    if (this.finished[index] === true) return
    this.finished[index] = true
    if (!this.finished.every(Boolean) || this.#closed) return
    // A client that stops reading must not hold the connection for ever.
    this.#drainTimer = setTimeout(() => this.ws.terminate(), CLOSE_DRAIN_MS)
    this.writer.whenIdle(() => {
      clearTimeout(this.#drainTimer)
      this.#drainTimer = undefined
      closeWebSocket(this.ws, CLOSE_NORMAL)
    })
  }

  /** A message from the client. */
  onMessage(data: Buffer, isBinary: boolean): void {
    let m
    try {
      m = decodeChannelMessage(data, isBinary, this.encoding)
    } catch {
      // Wrong message type or bad base64: only this connection ends.
      this.abortAll()
      closeWebSocket(this.ws, isBinary ? CLOSE_PROTOCOL_ERROR : CLOSE_UNSUPPORTED)
      return
    }
    if (m === undefined) return
    const role = channelRole(m.channel, this.ports.length)
    // The kubelet ignores unknown channels and anything sent on error channels.
    if (role?.kind !== 'data' || m.payload.length === 0) return
    const stream = this.streams[role.portIndex] as PortStream
    // A port whose open failed is gone; one whose pod ended still takes the client's bytes
    // (the pod may only have half-closed).
    if (stream.destroyed || stream.readableEnded) return
    if (!stream.push(m.payload)) {
      this.#full.add(stream)
      if (!this.#paused) {
        this.#paused = true
        this.ws.pause()
      }
    }
  }

  readMore(stream: PortStream): void {
    if (this.#full.delete(stream) && this.#full.size === 0 && this.#paused) {
      this.#paused = false
      if (!this.#closed) this.ws.resume()
    }
  }

  /** The WebSocket closed: EOF on every port, then a grace period for the pod side. */
  onClose(code: number): void {
    if (this.#closed) return
    this.#closed = true
    this.#full.clear()
    const clean = code === CLOSE_NORMAL || code === CLOSE_NO_STATUS || code === CLOSE_ABNORMAL
    for (const s of this.streams) {
      if (s.destroyed) continue
      if (!clean) {
        s.destroy()
        continue
      }
      // The client's EOF. Our writable side stays open (its writes are dropped) so that the
      // relay still waits for the pod's end, or fails when the grace period is over.
      if (!s.readableEnded) s.push(null)
    }
    if (clean && this.streams.some((s) => !s.destroyed)) {
      this.#graceTimer = setTimeout(() => {
        this.#graceTimer = undefined
        for (const s of this.streams) if (!s.destroyed) s.destroy()
      }, CLOSE_GRACE_MS)
    }
  }

  abortAll(): void {
    for (const s of this.streams) if (!s.destroyed) s.destroy()
  }

  /** Everything released (the WebSocket and every stream are gone). */
  dispose(): void {
    clearTimeout(this.#graceTimer)
    clearTimeout(this.#drainTimer)
    this.#graceTimer = undefined
    this.#drainTimer = undefined
  }

  get closed(): boolean {
    return this.#closed
  }
}

function portEndpoint(conn: Conn, stream: PortStream, describe: string): RelayEndpoint {
  return {
    stream,
    abort(reason) {
      // No reset in v4: say it on the port's error channel, then finish the port.
      conn.sendError(stream.index, `${describe}: ${ABORT_TEXT[reason]}`)
      stream.destroy()
      conn.finishPort(stream.index)
    },
  }
}

/**
 * Serves the channel protocol on an open WebSocket (the handshake is done, with the
 * negotiated subprotocol). The session ends when the WebSocket closes.
 */
export function serveChannelPortForward(
  ws: WebSocket,
  options: ChannelServeOptions,
): EdgeConnection {
  const { forwarder, session, target, ports, encoding } = options
  const conn = new Conn(ws, encoding, ports)
  conn.writer.sendPortPrefixes(ports)

  ws.on('message', (data: Buffer, isBinary: boolean) => conn.onMessage(data, isBinary))
  ws.on('error', () => {
    // A protocol fault from ws (bad frame, oversized message): 'close' follows.
  })
  // Pings: one in flight at a time (keepAlive), answered by the next pong.
  let pong: ((err: Error | null) => void) | undefined
  ws.on('pong', () => {
    const cb = pong
    pong = undefined
    cb?.(null)
  })
  const stopPings = keepAlive(
    {
      ping: (cb) => {
        pong = cb
        ws.ping()
      },
    },
    options.keepaliveMs ?? 0,
    (why) => {
      if (conn.closed || ws.readyState === CLOSED) return
      forwarder.clientUnresponsive(session, why)
      conn.abortAll()
      ws.terminate()
    },
  )
  let closedOnce = false
  ws.on('close', (code: number) => {
    stopPings()
    conn.onClose(code)
    // The streams end (normally or by the grace timer); the session with the WebSocket.
    const settleAll = (): void => {
      if (closedOnce || conn.streams.some((s) => !s.destroyed)) return
      closedOnce = true
      conn.dispose()
      forwarder.endSession(session)
      options.onClose?.()
    }
    for (const s of conn.streams) s.once('close', settleAll)
    settleAll()
  })

  ports.forEach((port, i) => {
    const stream = conn.streams[i] as PortStream
    stream.on('error', () => {
      // Reported through the relay.
    })
    const describe = `error forwarding port ${port} to pod ${target.namespace}/${target.pod}`
    forwardStream(forwarder, upgradeStreamRequest(session, options.authorization, target, port), {
      watch: stream,
      gone: () => stream.destroyed || conn.closed,
      accept: () => portEndpoint(conn, stream, describe),
      abandoned: () => stream.destroy(),
      refuse: (err) => {
        // The kubelet's answer: one line on the port's error channel; the port is done.
        conn.sendError(i, isAppError(err) ? err.message : `${describe}: internal error`)
        stream.destroy()
        conn.finishPort(i)
      },
    })
  })

  return {
    // Nothing new can start on a channel connection (its ports are fixed).
    drain: () => {},
    destroy: () => {
      conn.abortAll()
      ws.terminate()
    },
  }
}
