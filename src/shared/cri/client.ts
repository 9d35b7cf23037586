/**
 * A small client for the Container Runtime Interface (CRI v1, `runtime.v1.RuntimeService`)
 * over a runtime's unix socket: what the kubelet speaks to containerd and CRI-O.
 *
 * gRPC is `@grpc/grpc-js`; the messages come from `runtime-v1.proto` beside this file
 * (the subset of the CRI API pfgate uses, same field numbers as upstream), loaded once
 * with `@grpc/proto-loader`. Fields are camelCase, enums are their names
 * (`'SANDBOX_READY'`), int64 values are decimal strings.
 *
 * The node agent uses the read-only calls (Version, ListPodSandbox, PodSandboxStatus);
 * the containerd harness (src/dev/containerd-harness.ts) also creates and removes pods.
 *
 * @module
 */
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Client, Metadata, credentials, status as grpcStatus } from '@grpc/grpc-js'
import type { ChannelOptions, MethodDefinition, ServiceError } from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'
import type { ServiceDefinition } from '@grpc/proto-loader'

/** containerd's default CRI socket. */
export const CONTAINERD_SOCKET = '/run/containerd/containerd.sock'
/** CRI-O's default CRI socket. */
export const CRIO_SOCKET = '/var/run/crio/crio.sock'
/** The sockets tried, in order, when none is configured (as crictl does). */
export const DEFAULT_CRI_SOCKETS: readonly string[] = [CONTAINERD_SOCKET, CRIO_SOCKET]

/** The sandbox label the kubelet sets to the pod's UID (and that pfgate filters on). */
export const POD_UID_LABEL = 'io.kubernetes.pod.uid'
/** The sandbox label the kubelet sets to the pod's name. */
export const POD_NAME_LABEL = 'io.kubernetes.pod.name'
/** The sandbox label the kubelet sets to the pod's namespace. */
export const POD_NAMESPACE_LABEL = 'io.kubernetes.pod.namespace'

/** Default deadline of one call, ms. */
export const DEFAULT_CRI_TIMEOUT_MS = 2_000

// Compiled to dist/src/shared/cri/: the .proto stays in src/ (the image ships src/ too).
const PROTO_CANDIDATES = [
  fileURLToPath(new URL('./runtime-v1.proto', import.meta.url)),
  fileURLToPath(new URL('../../../../src/shared/cri/runtime-v1.proto', import.meta.url)),
]

/** `SANDBOX_READY` or `SANDBOX_NOTREADY`. */
export type CriSandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY'
/** How a sandbox shares a Linux namespace: `NODE` is the host's (hostNetwork). */
export type CriNamespaceMode = 'POD' | 'CONTAINER' | 'NODE' | 'TARGET'

/** Answer of Version. */
export interface CriVersion {
  version: string
  runtimeName: string
  runtimeVersion: string
  runtimeApiVersion: string
}

/** PodSandboxMetadata: who the sandbox belongs to, as the kubelet said when it created it. */
export interface CriPodSandboxMetadata {
  name: string
  uid: string
  namespace: string
  attempt: number
}

/** NamespaceOption. */
export interface CriNamespaceOption {
  network?: CriNamespaceMode
  pid?: CriNamespaceMode
  ipc?: CriNamespaceMode
  targetId?: string
}

/** PodSandboxConfig (the fields pfgate sets). */
export interface CriPodSandboxConfig {
  metadata: CriPodSandboxMetadata
  hostname?: string
  logDirectory?: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
  linux?: { cgroupParent?: string; securityContext?: { namespaceOptions?: CriNamespaceOption } }
}

/** ContainerConfig (the fields pfgate sets). */
export interface CriContainerConfig {
  metadata: { name: string; attempt?: number }
  image: { image: string }
  command?: string[]
  args?: string[]
  workingDir?: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
  logPath?: string
  linux?: { securityContext?: { namespaceOptions?: CriNamespaceOption } }
}

/** One item of ListPodSandbox. */
export interface CriPodSandbox {
  id: string
  metadata: CriPodSandboxMetadata | null
  state: CriSandboxState
  /** Nanoseconds since the epoch, decimal. */
  createdAt: string
  labels: Record<string, string>
  annotations: Record<string, string>
  runtimeHandler: string
}

/** PodSandboxStatus. */
export interface CriPodSandboxStatus extends CriPodSandbox {
  network: { ip: string; additionalIps: { ip: string }[] } | null
  linux: { namespaces: { options: CriNamespaceOption | null } | null } | null
}

/** Answer of PodSandboxStatus: the status and, when verbose, the runtime's JSON `info`. */
export interface CriPodSandboxStatusResponse {
  status: CriPodSandboxStatus | null
  info: Record<string, string>
}

/** PodSandboxFilter. */
export interface CriPodSandboxFilter {
  id?: string
  state?: CriSandboxState
  labelSelector?: Record<string, string>
}

/**
 * A failed call. `unavailable` is true when the runtime could not be reached or did
 * not answer in time (the socket is missing, the runtime is down or stuck).
 */
export class CriError extends Error {
  /** gRPC status code (`status.UNAVAILABLE`…). */
  readonly grpcCode: grpcStatus
  readonly unavailable: boolean
  readonly method: string

  constructor(method: string, err: ServiceError) {
    super(`CRI ${method}: ${err.details || err.message}`, { cause: err })
    this.name = 'CriError'
    this.method = method
    this.grpcCode = err.code
    this.unavailable =
      err.code === grpcStatus.UNAVAILABLE || err.code === grpcStatus.DEADLINE_EXCEEDED
  }
}

/** The gRPC status codes, for callers that inspect {@link CriError.grpcCode}. */
export { grpcStatus as criStatus }

/** The ListPodSandboxRequest for a filter. */
export function listPodSandboxRequest(filter: CriPodSandboxFilter): object {
  const f: Record<string, unknown> = {}
  if (filter.id !== undefined) f.id = filter.id
  // The wrapper message is what asks for a state: READY is 0, the proto3 default.
  if (filter.state !== undefined) f.state = { state: filter.state }
  if (filter.labelSelector !== undefined) f.labelSelector = filter.labelSelector
  return { filter: f }
}

let service: ServiceDefinition | undefined

/** The RuntimeService definition, parsed once per process. */
function runtimeService(): ServiceDefinition {
  if (service !== undefined) return service
  const file = PROTO_CANDIDATES.find((p) => existsSync(p))
  if (file === undefined) {
    throw new Error(`the CRI protocol definition is missing (looked for ${PROTO_CANDIDATES[0]})`)
  }
  const def = loadSync(file, { keepCase: false, longs: String, enums: String, defaults: true })
  service = def['runtime.v1.RuntimeService'] as ServiceDefinition
  return service
}

/**
 * The protobuf bytes of a request as the client sends them (for tests that pin the
 * wire format to the CRI API's field numbers).
 */
export function criRequestBytes(method: string, request: object): Buffer {
  const m = runtimeService()[method] as MethodDefinition<object, unknown> | undefined
  if (m === undefined) throw new RangeError(`CRI method ${method} is not declared`)
  return m.requestSerialize(request)
}

/** Options of {@link CriClient}. */
export interface CriClientOptions {
  /** Deadline of each call, ms (default 2 s). */
  timeoutMs?: number
}

/**
 * A CRI RuntimeService client on one unix socket. The channel connects lazily and
 * reconnects by itself (backoff 100 ms → 1 s), so a runtime that restarts is
 * reached again without a new client; calls made while it is down fail at once
 * with an `unavailable` {@link CriError} rather than wait.
 */
export class CriClient {
  /** The socket path. */
  readonly socketPath: string
  readonly #client: Client
  readonly #timeoutMs: number
  readonly #service: ServiceDefinition

  constructor(socketPath: string, options: CriClientOptions = {}) {
    this.socketPath = socketPath
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_CRI_TIMEOUT_MS
    this.#service = runtimeService()
    const channelOptions: ChannelOptions = {
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1_000,
      // The kubelet's limit: a verbose sandbox status carries the runtime spec.
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
    }
    this.#client = new Client(`unix://${socketPath}`, credentials.createInsecure(), channelOptions)
  }

  /** Version: the runtime's name and versions (also a liveness probe). */
  version(): Promise<CriVersion> {
    return this.#call<CriVersion>('Version', { version: 'v1' })
  }

  /** ListPodSandbox with a filter (all fields ANDed). */
  async listPodSandbox(filter: CriPodSandboxFilter = {}): Promise<CriPodSandbox[]> {
    const r = await this.#call<{ items: CriPodSandbox[] }>(
      'ListPodSandbox',
      listPodSandboxRequest(filter),
    )
    return r.items
  }

  /** PodSandboxStatus; `verbose` adds the runtime's `info` JSON (netns path, pid…). */
  podSandboxStatus(id: string, verbose = false): Promise<CriPodSandboxStatusResponse> {
    return this.#call('PodSandboxStatus', { podSandboxId: id, verbose })
  }

  /** RunPodSandbox: creates and starts a sandbox (its network set up by CNI). */
  async runPodSandbox(config: CriPodSandboxConfig, runtimeHandler = ''): Promise<string> {
    const r = await this.#call<{ podSandboxId: string }>(
      'RunPodSandbox',
      { config, runtimeHandler },
      // Image unpacking and CNI can take a while on a loaded machine.
      Math.max(this.#timeoutMs, 60_000),
    )
    return r.podSandboxId
  }

  /** StopPodSandbox: kills its containers and tears its network down. */
  async stopPodSandbox(id: string): Promise<void> {
    await this.#call('StopPodSandbox', { podSandboxId: id }, Math.max(this.#timeoutMs, 60_000))
  }

  /** RemovePodSandbox (and its containers). */
  async removePodSandbox(id: string): Promise<void> {
    await this.#call('RemovePodSandbox', { podSandboxId: id }, Math.max(this.#timeoutMs, 60_000))
  }

  /** CreateContainer in a sandbox. */
  async createContainer(
    podSandboxId: string,
    config: CriContainerConfig,
    sandboxConfig: CriPodSandboxConfig,
  ): Promise<string> {
    const r = await this.#call<{ containerId: string }>(
      'CreateContainer',
      { podSandboxId, config, sandboxConfig },
      Math.max(this.#timeoutMs, 60_000),
    )
    return r.containerId
  }

  /** StartContainer. */
  async startContainer(id: string): Promise<void> {
    await this.#call('StartContainer', { containerId: id }, Math.max(this.#timeoutMs, 60_000))
  }

  /** StopContainer; `timeoutS` 0 kills at once. */
  async stopContainer(id: string, timeoutS = 0): Promise<void> {
    await this.#call(
      'StopContainer',
      { containerId: id, timeout: String(timeoutS) },
      Math.max(this.#timeoutMs, 60_000),
    )
  }

  /** RemoveContainer. */
  async removeContainer(id: string): Promise<void> {
    await this.#call('RemoveContainer', { containerId: id }, Math.max(this.#timeoutMs, 60_000))
  }

  /** Closes the channel; calls in flight fail. */
  close(): void {
    this.#client.close()
  }

  #call<T>(name: string, request: object, timeoutMs = this.#timeoutMs): Promise<T> {
    const method = this.#service[name] as MethodDefinition<object, T> | undefined
    if (method === undefined) return Promise.reject(new Error(`CRI method ${name} is not declared`))
    return new Promise<T>((resolve, reject) => {
      this.#client.makeUnaryRequest<object, T>(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        new Metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, value) => {
          if (err !== null) reject(new CriError(name, err))
          else if (value === undefined) reject(new Error(`CRI ${name}: empty answer`))
          else resolve(value)
        },
      )
    })
  }
}
