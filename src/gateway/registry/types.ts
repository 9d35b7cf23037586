/**
 * Resolution: pod → node (PodRegistry), node → agent address (NodeDirectory).
 * Sources: static YAML (static-registry.ts) and a Kubernetes API list+watch
 * (kube/registry.ts). The gateway only ever uses these interfaces.
 *
 * @module
 */

/** A container port as Kubernetes lists it. */
export interface ContainerPort {
  name?: string
  containerPort: number
  protocol: 'TCP' | 'UDP' | 'SCTP'
}

/** What the gateway knows of a pod. */
export interface PodInfo {
  namespace: string
  name: string
  uid: string
  /** `spec.nodeName`; empty when the pod is not scheduled. */
  nodeName: string
  /** `status.phase`: Pending, Running, Succeeded, Failed, Unknown. */
  phase: string
  /** Every container's ports, in order. */
  ports: ContainerPort[]
  /** Labels, for the Pod object served to kubectl. */
  labels?: Record<string, string>
  /** Creation time (RFC 3339), for the Pod object. */
  creationTimestamp?: string
}

/** How to reach a node's agent. */
export interface NodeInfo {
  name: string
  /** Host (FQDN or IP) the gateway dials. */
  address: string
  /** Agent port. */
  port: number
  /** TLS server name to verify on the agent's certificate (default: the node name). */
  tlsServerName?: string
}

/** Events a registry emits when its view changes. */
export interface RegistryEvents {
  /** A pod was added, changed or removed (removed: `pod` is the last known state). */
  pod: (type: 'added' | 'modified' | 'deleted', pod: PodInfo) => void
  /** A node was added, changed or removed. */
  node: (type: 'added' | 'modified' | 'deleted', node: NodeInfo) => void
  /** The readiness changed (synced or lost). */
  ready: (ready: boolean) => void
}

/** Pod and node lookups; both are synchronous reads of an in-memory view. */
export interface PodRegistry {
  /** The pod, or undefined. */
  getPod(namespace: string, name: string): PodInfo | undefined
  /** The node's agent address, or undefined. */
  getNode(name: string): NodeInfo | undefined
  /** Every pod (for listings and tests). */
  listPods(): PodInfo[]
  /** True once the first full view is loaded (the first list has synced). */
  isReady(): boolean
  /** Starts loading/watching. Resolves when the first view is in (or rejects with why not). */
  start(): Promise<void>
  /** Stops watching; idempotent. */
  close(): Promise<void>
  /** Subscribe to changes. */
  on<E extends keyof RegistryEvents>(event: E, listener: RegistryEvents[E]): this
  off<E extends keyof RegistryEvents>(event: E, listener: RegistryEvents[E]): this
}
