/**
 * How the node agent reaches a pod's port. The protocol code (agent/app.ts) knows
 * nothing of containers: it asks a `PodDialer` for a connected socket, as the
 * kubelet asks the runtime's `PortForwarder` (pkg/kubelet/cri/streaming/portforward).
 *
 * @module
 */
import type { Socket } from 'node:net'

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
   * Whether dials can succeed now (the agent's `/readyz`): false while the container
   * runtime cannot be asked. Dialers that depend on nothing leave it out.
   */
  readiness?(): Promise<{ ready: boolean; detail: string }>
  /** Releases every resource (helper processes, timers). Idempotent. */
  close(): Promise<void>
}
