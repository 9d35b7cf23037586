/**
 * How the node agent reaches a pod's port. The protocol code (agent/app.ts) knows
 * nothing of containers: it asks a `PodDialer` for a connected socket, as the
 * kubelet asks the runtime's `PortForwarder` (pkg/kubelet/cri/streaming/portforward).
 *
 * @module
 */
import type { Socket } from 'node:net'
import type { Socket as UdpSocket } from 'node:dgram'

/** What the agent knows of the pod a stream targets. */
export interface PodTarget {
  namespace: string
  name: string
  /**
   * The pod UID the gateway resolved (the `pfgate-pod-uid` header). The netns dialer
   * requires it: it finds the pod by UID, and nothing else in a request names a place.
   */
  uid?: string
}

/** Options for one dial. */
export interface DialOptions {
  /** Aborts the dial (the gateway cancelled the stream). */
  signal: AbortSignal
  /** Connect timeout in milliseconds. */
  timeoutMs: number
}

/**
 * A UDP socket connected to a pod's port: the kernel delivers only datagrams whose
 * source is `address:port` (the relay checks each datagram's source again).
 */
export interface PodUdpSocket {
  socket: UdpSocket
  /** The pod address it is connected to (loopback of the pod, or a pod IP). */
  address: string
  port: number
  /** False when the socket could not be connected (see udp-connect.ts): send with the address. */
  connected: boolean
}

/**
 * Connects to `port` of a pod. Resolves with a connected socket created with
 * `allowHalfOpen: true` (the relay half-closes it). Rejects with an `AppError`:
 * `PFG_ERR_AGENT_POD_NOT_FOUND`, `PFG_ERR_AGENT_CONNECT_REFUSED`,
 * `PFG_ERR_AGENT_CONNECT_FAILED`, `PFG_ERR_AGENT_CONNECT_TIMEOUT`, `PFG_ERR_AGENT_NETNS` or
 * `PFG_ERR_AGENT_RUNTIME_UNAVAILABLE`,
 * whose message reads like the kubelet's (for example
 * `failed to connect to localhost:5000 inside namespace "...": ... connection refused`).
 */
export interface PodDialer {
  dial(target: PodTarget, port: number, options: DialOptions): Promise<Socket>
  /**
   * Opens a UDP flow to `port` of a pod: a UDP socket connected to it. Rejects like
   * {@link dial}; `PFG_ERR_AGENT_CONNECT_REFUSED` when the netns dialer finds no UDP socket
   * bound to the port (the static dialer cannot tell: the first datagram's ICMP error
   * ends the flow instead).
   */
  dialUdp(target: PodTarget, port: number, options: DialOptions): Promise<PodUdpSocket>
  /**
   * Whether dials can succeed now (the agent's `/readyz`): false while the container
   * runtime cannot be asked. Dialers that depend on nothing leave it out.
   */
  readiness?(): Promise<{ ready: boolean; detail: string }>
  /** Releases every resource (helper processes, timers). Idempotent. */
  close(): Promise<void>
}
