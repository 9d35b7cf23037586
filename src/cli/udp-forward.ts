/**
 * The CLI's UDP side of `pfgate port-forward POD 5353:53/udp`: a local UDP socket per
 * address (127.0.0.1 and [::1] by default), and one flow per local client address and
 * port, each flow one HTTP/2 stream of datagrams to the gateway (docs/protocol.md, "UDP
 * flows"). Replies go back to the client that sent the flow's datagrams, so two local
 * clients never see each other's replies.
 *
 * Memory is bounded: datagrams that arrive while their flow's stream is opening wait in a
 * queue of at most {@link MAX_PENDING_DATAGRAMS}; beyond it, and when a stream is congested,
 * datagrams are dropped and counted. A flow ends when its stream ends (the gateway's idle
 * timeout or lifetime, the pod's port unreachable, a reset) or after `idleTimeoutMs`
 * without a datagram either way; the next datagram from the same client opens a new one.
 *
 * @module
 */
import { createSocket } from 'node:dgram'
import type { RemoteInfo, Socket as UdpSocket } from 'node:dgram'
import type { ClientHttp2Stream } from 'node:http2'
import { isIP } from 'node:net'
import { DatagramStream } from '../shared/datagram-stream.js'
import { MAX_DATAGRAM_SIZE, UDP_END_TRAILER } from '../protocol/udp-frames.js'
import { RST } from '../protocol/reset-codes.js'
import { appError, describeError } from '../shared/errors.js'

/** Datagrams a flow holds while its stream opens. */
export const MAX_PENDING_DATAGRAMS = 64

/** Local flows a listener keeps at once; a datagram that would open one more is dropped. */
export const MAX_LOCAL_FLOWS = 4096

/** The CLI's idle timeout for a flow: short for DNS (port 53), longer for others (ms). */
export function defaultUdpIdleMs(remotePort: number | string): number {
  return remotePort === 53 ? 10_000 : 60_000
}

/** What a listener needs. */
export interface UdpForwardOptions {
  remotePort: number | string
  /** Opens one flow's stream (resolves once the gateway answered 200). */
  openFlow(): Promise<ClientHttp2Stream>
  idleTimeoutMs: number
  /** A flow could not open or ended abnormally (one line for stderr). */
  report(line: string): void
  /** A new flow from a local client (for `Handling connection for` style lines). */
  flowOpened?(peer: string): void
}

/** Counters of a listener, for tests and reports. */
export interface UdpListenerStats {
  flowsOpened: number
  /** Datagrams dropped locally: queue full while opening, stream congested, too many flows. */
  dropped: number
}

interface LocalFlow {
  key: string
  peer: RemoteInfo
  pending: Buffer[]
  ds: DatagramStream | undefined
  timer: NodeJS.Timeout | undefined
  closed: boolean
}

/** One local UDP socket forwarding to one remote port. */
export class UdpLocalListener {
  readonly address: string
  readonly socket: UdpSocket
  readonly stats: UdpListenerStats = { flowsOpened: 0, dropped: 0 }
  readonly #flows = new Map<string, LocalFlow>()
  #options: UdpForwardOptions | undefined
  #closed = false

  private constructor(address: string, socket: UdpSocket) {
    this.address = address
    this.socket = socket
  }

  /** Binds `address:port` (0 picks a free port). */
  static listen(address: string, port: number): Promise<UdpLocalListener> {
    return new Promise((resolve, reject) => {
      const socket = createSocket(
        isIP(address) === 6 ? { type: 'udp6', ipv6Only: true } : { type: 'udp4' },
      )
      socket.once('error', reject)
      socket.bind({ address, port, exclusive: true }, () => {
        socket.off('error', reject)
        resolve(new UdpLocalListener(address, socket))
      })
    })
  }

  get localPort(): number {
    return this.socket.address().port
  }

  /** Live flows. */
  get flows(): number {
    return this.#flows.size
  }

  /** Starts forwarding datagrams. */
  serve(options: UdpForwardOptions): void {
    this.#options = options
    this.socket.on('error', () => {
      // A local client's ICMP error (a reply to a closed local port) is not ours to report.
    })
    this.socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => this.#onLocal(msg, rinfo))
  }

  /** Ends every flow (reset: the gateway records it) and closes the socket. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    for (const f of [...this.#flows.values()]) this.#end(f, 'reset')
    this.socket.close()
  }

  #onLocal(msg: Buffer, rinfo: RemoteInfo): void {
    const o = this.#options
    if (o === undefined || this.#closed) return
    if (msg.length > MAX_DATAGRAM_SIZE) {
      this.stats.dropped++
      return
    }
    const key = `${rinfo.address}|${rinfo.port}`
    let flow = this.#flows.get(key)
    if (flow === undefined) {
      if (this.#flows.size >= MAX_LOCAL_FLOWS) {
        this.stats.dropped++
        return
      }
      flow = { key, peer: rinfo, pending: [], ds: undefined, timer: undefined, closed: false }
      this.#flows.set(key, flow)
      this.stats.flowsOpened++
      o.flowOpened?.(
        `${rinfo.family === 'IPv6' ? `[${rinfo.address}]` : rinfo.address}:${rinfo.port}`,
      )
      this.#open(flow, o)
    }
    if (flow.ds === undefined) {
      if (flow.pending.length >= MAX_PENDING_DATAGRAMS) this.stats.dropped++
      else flow.pending.push(msg)
      return
    }
    if (!flow.ds.send(msg)) this.stats.dropped++
  }

  #open(flow: LocalFlow, o: UdpForwardOptions): void {
    o.openFlow().then(
      (stream) => {
        if (flow.closed) {
          stream.close(RST.CANCEL)
          return
        }
        const trailers: { end?: string } = {}
        stream.once('trailers', (t: Record<string, unknown>) => {
          if (typeof t[UDP_END_TRAILER] === 'string') trailers.end = t[UDP_END_TRAILER]
        })
        flow.ds = new DatagramStream(stream, {
          datagram: (d) => {
            if (!this.#closed) this.socket.send(d, flow.peer.port, flow.peer.address)
          },
          end: (how) => {
            if (flow.closed) return
            if (how.kind === 'ended') {
              if (trailers.end === 'unreachable') {
                o.report(
                  `UDP flow for ${this.localPort} -> ${o.remotePort}/udp ended: the pod port is unreachable (ICMP port unreachable)`,
                )
              }
              this.#end(flow, 'ended')
            } else {
              if (!this.#closed) {
                o.report(
                  `error: UDP flow for ${this.localPort} -> ${o.remotePort}/udp ended abnormally: ${
                    how.kind === 'reset' ? `stream reset (code ${how.code ?? 'none'})` : how.message
                  }`,
                )
              }
              this.#end(flow, 'reset')
            }
          },
        })
        for (const d of flow.pending) if (!flow.ds.send(d)) this.stats.dropped++
        flow.pending = []
        this.#armIdle(flow, o)
      },
      (err: Error) => {
        o.report(
          `an error occurred forwarding ${this.localPort} -> ${o.remotePort}/udp: ${err.message}`,
        )
        this.stats.dropped += flow.pending.length
        this.#end(flow, 'reset')
      },
    )
  }

  #armIdle(flow: LocalFlow, o: UdpForwardOptions): void {
    if (o.idleTimeoutMs <= 0) return
    const check = (): void => {
      const ds = flow.ds
      if (flow.closed || ds === undefined) return
      const idle = Date.now() - ds.lastActivity
      if (idle >= o.idleTimeoutMs) {
        this.#end(flow, 'idle')
        return
      }
      flow.timer = setTimeout(check, o.idleTimeoutMs - idle)
      flow.timer.unref()
    }
    flow.timer = setTimeout(check, o.idleTimeoutMs)
    flow.timer.unref()
  }

  /** `idle`: ends our side cleanly (the gateway answers with its trailers); `reset`: resets. */
  #end(flow: LocalFlow, how: 'idle' | 'ended' | 'reset'): void {
    if (flow.closed) return
    flow.closed = true
    clearTimeout(flow.timer)
    if (this.#flows.get(flow.key) === flow) this.#flows.delete(flow.key)
    const s = flow.ds?.stream
    if (s === undefined) return
    if (how === 'reset') flow.ds?.reset(RST.CANCEL)
    else if (!s.writableEnded) s.end()
  }
}

/** `host:port`, IPv6 in brackets. */
const hostPort = (address: string, port: number): string =>
  isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`

/**
 * Binds a local UDP port on every address (0 picks one on the first address, reused on
 * the others); `warn` gets each address that could not be bound.
 */
export async function listenUdp(
  local: number,
  addresses: string[],
  warn: (line: string) => void,
): Promise<UdpLocalListener[]> {
  const bound: UdpLocalListener[] = []
  let port = local
  const errors: string[] = []
  for (const address of addresses) {
    try {
      const l = await UdpLocalListener.listen(address, port)
      port = l.localPort
      bound.push(l)
    } catch (e) {
      errors.push(`${hostPort(address, port)}/udp: ${describeError(e)}`)
    }
  }
  if (bound.length === 0) {
    throw appError(
      'PFG_ERR_CLI_LISTEN',
      `unable to listen on any of the requested ports: ${errors.join('; ')}`,
    )
  }
  for (const e of errors) warn(`Unable to listen on ${e}`)
  return bound
}
