/**
 * The agent's end of a UDP flow: the gateway's HTTP/2 stream of datagrams ⇄ a UDP
 * socket connected to the pod's port inside its namespace (docs/protocol.md, "UDP flows").
 *
 * - Only datagrams from the pod port are delivered: the socket is connected (the kernel
 *   filters), and each datagram's source is checked again; others are counted.
 * - Pressure drops: a datagram for the pod while the socket's send queue holds more than
 *   {@link MAX_SEND_QUEUE_BYTES} is dropped, and so is one for the gateway while the
 *   stream is congested (`DatagramStream`); both are counted.
 * - The gateway ending its side ends the flow: the socket closes and the response ends
 *   with trailers (why, drops, wrong-source datagrams). An ICMP port unreachable from the
 *   pod (ECONNREFUSED on the socket) ends it the same way with `unreachable`.
 *
 * @module
 */
import type { RemoteInfo } from 'node:dgram'
import type { ServerHttp2Stream } from 'node:http2'
import { errorCode } from '../shared/errors.js'
import { DatagramStream } from '../shared/datagram-stream.js'
import type { DatagramCounts } from '../shared/datagram-stream.js'
import {
  UDP_DROPPED_TRAILER,
  UDP_END_TRAILER,
  UDP_WRONG_SOURCE_TRAILER,
} from '../protocol/udp-frames.js'
import type { UdpEndReason } from '../protocol/udp-frames.js'
import type { PodUdpSocket } from './pod-dialer.js'

/** Bytes the pod socket's send queue may hold before datagrams to the pod are dropped. */
export const MAX_SEND_QUEUE_BYTES = 256 * 1024

/** What a finished flow reports (metrics, logs). */
export interface UdpFlowOutcome {
  counts: DatagramCounts
  /** Datagrams for the pod dropped (send queue full). */
  droppedToPod: number
  /** Datagrams from another source than the pod port. */
  wrongSource: number
  reason: UdpEndReason | 'reset' | 'protocol-error'
}

/** Relays one flow. The stream must not have been answered yet. */
export class AgentUdpFlow {
  readonly #pod: PodUdpSocket
  readonly #ds: DatagramStream
  readonly #onDone: (o: UdpFlowOutcome) => void
  #droppedToPod = 0
  #wrongSource = 0
  #done = false

  constructor(stream: ServerHttp2Stream, pod: PodUdpSocket, onDone: (o: UdpFlowOutcome) => void) {
    this.#pod = pod
    this.#onDone = onDone
    stream.respond({ ':status': 200 }, { waitForTrailers: true })
    this.#ds = new DatagramStream(stream, {
      datagram: (d) => this.#toPod(d),
      end: (how) => {
        if (how.kind === 'ended') this.#end('client')
        else this.#finish(how.kind === 'reset' ? 'reset' : 'protocol-error')
      },
    })
    pod.socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => this.#fromPod(msg, rinfo))
    pod.socket.on('error', (err: Error) =>
      this.#end(errorCode(err) === 'ECONNREFUSED' ? 'unreachable' : 'pod-error'),
    )
    pod.socket.on('close', () => this.#end('pod-error'))
  }

  /** Ends the flow at once (agent shutdown). */
  abort(code: number): void {
    this.#ds.reset(code)
    this.#finish('reset')
  }

  #toPod(d: Buffer): void {
    const s = this.#pod.socket
    if (this.#done || s.getSendQueueSize() > MAX_SEND_QUEUE_BYTES) {
      this.#droppedToPod++
      return
    }
    const cb = (err: Error | null): void => {
      if (err) this.#end(errorCode(err) === 'ECONNREFUSED' ? 'unreachable' : 'pod-error')
    }
    if (this.#pod.connected) s.send(d, cb)
    else s.send(d, this.#pod.port, this.#pod.address, cb)
  }

  #fromPod(msg: Buffer, rinfo: RemoteInfo): void {
    if (rinfo.port !== this.#pod.port || rinfo.address !== this.#pod.address) {
      this.#wrongSource++
      return
    }
    this.#ds.send(msg)
  }

  /** Ends cleanly: the response ends with the trailers. */
  #end(reason: UdpEndReason): void {
    if (this.#done) return
    const stream = this.#ds.stream as ServerHttp2Stream
    stream.once('wantTrailers', () => {
      stream.sendTrailers({
        [UDP_END_TRAILER]: reason,
        [UDP_DROPPED_TRAILER]: String(this.#ds.counts.dropped + this.#droppedToPod),
        [UDP_WRONG_SOURCE_TRAILER]: String(this.#wrongSource),
      })
    })
    if (!stream.destroyed && !stream.writableEnded) stream.end()
    this.#finish(reason)
  }

  #finish(reason: UdpFlowOutcome['reason']): void {
    if (this.#done) return
    this.#done = true
    try {
      this.#pod.socket.close()
    } catch {
      // already closed
    }
    this.#onDone({
      counts: { ...this.#ds.counts },
      droppedToPod: this.#droppedToPod,
      wrongSource: this.#wrongSource,
      reason,
    })
  }
}
