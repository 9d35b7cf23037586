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
  /**
   * The pod's `Ready` condition. Undefined means unknown and counts as ready when the pod
   * is Running (the static registry's default); `false` keeps the pod out of service and
   * workload resolution (a pod named directly is still forwarded to, as kubectl does).
   */
  ready?: boolean
}

/** One port of a service: the port clients name and the pods' port it maps to. */
export interface ServicePort {
  name?: string
  port: number
  /** A container port number or the name of a container port; absent: the same as `port`. */
  targetPort?: number | string
  protocol: 'TCP' | 'UDP' | 'SCTP'
}

/** What the gateway knows of a service: which pods it selects and its ports. */
export interface ServiceInfo {
  namespace: string
  name: string
  /** `spec.selector`; a service without one selects no pod here (its endpoints are manual). */
  selector?: Record<string, string>
  ports: ServicePort[]
  creationTimestamp?: string
}

/** The workload kinds a forward may name (apps/v1). */
export type WorkloadKind = 'Deployment' | 'ReplicaSet' | 'StatefulSet'

/** What the gateway knows of a workload: its pod selector (`spec.selector.matchLabels`). */
export interface WorkloadInfo {
  kind: WorkloadKind
  namespace: string
  name: string
  /** `spec.selector.matchLabels`; undefined when the selector uses anything else (selects nothing here). */
  selector?: Record<string, string>
  /** `spec.replicas`, for the object served to kubectl. */
  replicas?: number
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
  /** The service, or undefined. */
  getService(namespace: string, name: string): ServiceInfo | undefined
  /** The workload of that kind, or undefined. */
  getWorkload(kind: WorkloadKind, namespace: string, name: string): WorkloadInfo | undefined
  /** True once the first full view is loaded (the first list has synced). */
  isReady(): boolean
  /**
   * False while services and workloads are not listed yet (a source where they sync
   * separately from pods); absent or true: they are known.
   */
  targetsReady?(): boolean
  /** Starts loading/watching. Resolves when the first view is in (or rejects with why not). */
  start(): Promise<void>
  /** Stops watching; idempotent. */
  close(): Promise<void>
  /** Subscribe to changes. */
  on<E extends keyof RegistryEvents>(event: E, listener: RegistryEvents[E]): this
  off<E extends keyof RegistryEvents>(event: E, listener: RegistryEvents[E]): this
}
