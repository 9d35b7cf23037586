/**
 * The static dialer: pod → host:port from the agent's config. For the dev cluster
 * and for hosts where pods' ports are published on the node; the netns dialer
 * (netns-dialer.ts) is the one real nodes use.
 *
 * @module
 */
import { createSocket } from 'node:dgram'
import type { Socket as UdpSocket } from 'node:dgram'
import { connect, isIP } from 'node:net'
import type { Socket } from 'node:net'
import { appError, errorCode } from '../shared/errors.js'
import type { DialOptions, PodDialer, PodTarget, PodUdpSocket } from './pod-dialer.js'
import { connectUdp } from './udp-connect.js'

/** Where one pod's ports are reachable. */
export interface StaticPodEntry {
  namespace: string
  name: string
  /** Host to connect to (default 127.0.0.1). */
  host?: string
  /** Pod port → host port; a port not listed is dialled as itself. */
  ports?: Record<string, number>
}

/** Dials pods at fixed host addresses. */
export class StaticDialer implements PodDialer {
  readonly #pods = new Map<string, StaticPodEntry>()
  readonly #sockets = new Set<Socket>()
  readonly #udpSockets = new Set<UdpSocket>()

  constructor(pods: readonly StaticPodEntry[]) {
    this.setPods(pods)
  }

  /** Replaces the pod table (config reload). */
  setPods(pods: readonly StaticPodEntry[]): void {
    this.#pods.clear()
    for (const p of pods) this.#pods.set(`${p.namespace}/${p.name}`, p)
  }

  #entry(target: PodTarget): StaticPodEntry {
    const entry = this.#pods.get(`${target.namespace}/${target.name}`)
    if (entry === undefined) {
      throw appError(
        'PFG_ERR_AGENT_POD_NOT_FOUND',
        `pod ${target.namespace}/${target.name} is not on this node`,
      )
    }
    return entry
  }

  /** A UDP socket connected to the pod's host:port (a UDP connect never waits). */
  async dialUdp(target: PodTarget, port: number, options: DialOptions): Promise<PodUdpSocket> {
    void options
    const entry = this.#entry(target)
    const host = entry.host ?? '127.0.0.1'
    const hostPort = entry.ports?.[String(port)] ?? port
    const socket = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4')
    socket.on('error', () => {}) // until the relay listens; errors end the flow there
    this.#udpSockets.add(socket)
    socket.once('close', () => this.#udpSockets.delete(socket))
    const connected = await connectUdp(socket, host, hostPort, target)
    return { socket, address: host, port: hostPort, connected }
  }

  dial(target: PodTarget, port: number, options: DialOptions): Promise<Socket> {
    let entry: StaticPodEntry
    try {
      entry = this.#entry(target)
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)))
    }
    const host = entry.host ?? '127.0.0.1'
    const hostPort = entry.ports?.[String(port)] ?? port
    return new Promise<Socket>((resolve, reject) => {
      const what = `error forwarding port ${port} to pod ${target.namespace}/${target.name}`
      const socket = connect({ host, port: hostPort, allowHalfOpen: true, noDelay: true })
      const cleanup = (): void => {
        clearTimeout(timer)
        options.signal.removeEventListener('abort', onAbort)
        socket.off('connect', onConnect)
        socket.off('error', onError)
      }
      const onConnect = (): void => {
        cleanup()
        resolve(socket)
      }
      const onError = (err: Error): void => {
        cleanup()
        socket.destroy()
        const code = errorCode(err)
        const detail = `dial tcp ${host}:${hostPort}: connect: ${code === 'ECONNREFUSED' ? 'connection refused' : err.message}`
        reject(
          appError(
            code === 'ECONNREFUSED'
              ? 'PFG_ERR_AGENT_CONNECT_REFUSED'
              : 'PFG_ERR_AGENT_CONNECT_FAILED',
            `${what}: ${detail}`,
            { cause: err },
          ),
        )
      }
      const onAbort = (): void => {
        cleanup()
        socket.destroy()
        reject(appError('PFG_ERR_AGENT_CONNECT_FAILED', `${what}: dial cancelled`))
      }
      const timer = setTimeout(() => {
        cleanup()
        socket.destroy()
        reject(
          appError(
            'PFG_ERR_AGENT_CONNECT_TIMEOUT',
            `${what}: dial tcp ${host}:${hostPort}: i/o timeout after ${options.timeoutMs} ms`,
          ),
        )
      }, options.timeoutMs)
      socket.once('connect', onConnect)
      socket.once('error', onError)
      if (options.signal.aborted) onAbort()
      else options.signal.addEventListener('abort', onAbort, { once: true })
      this.#sockets.add(socket)
      socket.once('close', () => this.#sockets.delete(socket))
    })
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy()
    this.#sockets.clear()
    for (const s of this.#udpSockets) s.close()
    this.#udpSockets.clear()
    return Promise.resolve()
  }
}
