/**
 * Pod UID → network namespace from the node's container runtime over CRI, the way the
 * kubelet finds a pod: `ListPodSandbox` filtered on the kubelet's `io.kubernetes.pod.uid`
 * label and state READY, then `PodSandboxStatus` (verbose) of that sandbox for its
 * namespace path, IPs and sandbox process (src/shared/cri/sandbox-network.ts).
 *
 * The runtime's answer is cached per pod UID for a short time (2 s by default) and
 * checked at every use without a CRI call: the namespace path must still name the
 * namespace it named when the runtime listed the sandbox READY (nsfs device and inode:
 * a stopped or removed sandbox's namespace is deleted, a recreated pod's sandbox has a
 * new one), and the sandbox's own process must still live in it (`/proc/<pid>/ns/net`:
 * a sandbox whose pause process died is refused at once, even while its namespace
 * still exists). Anything else (a check failing, the entry older than the TTL, a dial
 * that failed, the runtime found down) asks the runtime again, so a pod that stopped,
 * left the node or was recreated is refused or reached at its new namespace on its
 * next connection, never the old one. The verbose status, the costly part, is kept per
 * pod UID and sandbox id; concurrent lookups of one UID share one round trip. The
 * runtime socket, its labels and statuses are written by the kubelet and the runtime
 * only: nothing a cluster user can set decides the namespace. See docs/netns-dialer.md.
 *
 * @module
 */
import { existsSync, statSync } from 'node:fs'
import {
  CriClient,
  CriError,
  DEFAULT_CRI_SOCKETS,
  DEFAULT_CRI_TIMEOUT_MS,
  POD_UID_LABEL,
  criStatus,
} from '../shared/cri/client.js'
import type { CriPodSandbox } from '../shared/cri/client.js'
import { sandboxNetwork } from '../shared/cri/sandbox-network.js'
import { appError, isAppError } from '../shared/errors.js'
import type { AppError } from '../shared/errors.js'
import { silentLogger } from '../shared/log.js'
import type { Logger } from '../shared/log.js'
import { netnsError, sameIdentity } from './netns-handle.js'
import type { NsIdentity } from './netns-handle.js'
import { podNotFound } from './netns-resolver.js'
import type { PodNetns, PodNetnsResolver, PodRef, ResolverReadiness } from './netns-resolver.js'

/** Default bound of the per-UID cache (entries). */
export const DEFAULT_CRI_CACHE_SIZE = 4096
/** How long the runtime's word that a pod's sandbox is READY is used without asking again, ms. */
export const DEFAULT_CRI_CACHE_TTL_MS = 2_000
/** How long a readiness answer is reused, ms (bounds Version calls from /readyz). */
const READINESS_TTL_MS = 1_000
/** The node's own network namespace, for hostNetwork pods (the agent runs with hostPID). */
export const HOST_NETNS_PATH = '/proc/1/ns/net'

/** Options of {@link CriNetnsResolver}. */
export interface CriNetnsResolverOptions {
  /**
   * The runtime's CRI socket (a path or `unix://` URL). Default: the first that exists of
   * containerd's `/run/containerd/containerd.sock` and CRI-O's `/var/run/crio/crio.sock`.
   */
  endpoint?: string
  /** Deadline of each CRI call, ms (default 2 s). */
  timeoutMs?: number
  /** Most pods cached (default 4096; the least recently used is dropped). */
  cacheSize?: number
  /**
   * How long a sandbox the runtime listed READY is used without asking it again, ms
   * (default 2 s; each use is still checked, see the module doc). 0: ask at every dial.
   */
  cacheTtlMs?: number
  /** Namespace entered for hostNetwork pods (default `/proc/1/ns/net`). */
  hostNetnsPath?: string
  log?: Logger
}

/** Counters, for tests and the bench. */
export interface CriResolverStats {
  /** ListPodSandbox calls. */
  lists: number
  /** Verbose PodSandboxStatus calls (cache misses). */
  statuses: number
  /** Resolves answered from the cache without a CRI call (the per-use check passed). */
  cacheHits: number
  /** Cached entries the per-use check refused (namespace or sandbox process gone). */
  cacheRefused: number
}

interface CacheEntry {
  namespace: string
  name: string
  sandboxId: string
  netns: PodNetns
  /** The sandbox process the runtime reported (verbose status `pid`). */
  pid: number | undefined
  /** The namespace's identity when the runtime last listed the sandbox READY. */
  identity: NsIdentity | undefined
  /** `/proc/<pid>/ns/net` of the sandbox process, checked to be `identity` at each use. */
  pidNs: string | undefined
  /**
   * When the runtime last listed the sandbox READY (`performance.now()`: monotonic, so a
   * wall-clock step back cannot extend an entry's life); 0: ask it again.
   */
  confirmedAt: number
}

/** The nsfs identity of a namespace path, or undefined (gone, not readable). */
function identityNow(path: string): NsIdentity | undefined {
  // Synchronous on purpose: nsfs and procfs answer from memory, in microseconds, where a
  // thread-pool stat costs a round trip of the event loop on every dial.
  const st = statSync(path, { throwIfNoEntry: false })
  return st === undefined ? undefined : { dev: st.dev, ino: st.ino }
}

/** Strips `unix://` from an endpoint. */
export function criSocketPath(endpoint: string): string {
  return endpoint.startsWith('unix://') ? endpoint.slice('unix://'.length) : endpoint
}

/** The runtime is not reachable: 503 for the stream, not ready for /readyz. */
function unavailable(socket: string | undefined, why: string, cause?: unknown): AppError {
  const where = socket === undefined ? '' : ` at unix://${socket}`
  return appError(
    'PFG_ERR_AGENT_RUNTIME_UNAVAILABLE',
    `the container runtime${where} is not available: ${why}`,
    cause === undefined ? undefined : { cause },
  )
}

/** Resolves pods' namespaces from the container runtime (CRI). */
export class CriNetnsResolver implements PodNetnsResolver {
  readonly #candidates: readonly string[]
  readonly #timeoutMs: number
  readonly #cacheSize: number
  readonly #ttlMs: number
  readonly #hostNetnsPath: string
  readonly #log: Logger
  readonly #cache = new Map<string, CacheEntry>()
  readonly #inflight = new Map<string, Promise<PodNetns>>()
  readonly #stats: CriResolverStats = { lists: 0, statuses: 0, cacheHits: 0, cacheRefused: 0 }
  #client: CriClient | undefined
  #readiness: { at: number; value: Promise<ResolverReadiness> } | undefined
  #closed = false

  constructor(options: CriNetnsResolverOptions = {}) {
    this.#candidates =
      options.endpoint !== undefined ? [criSocketPath(options.endpoint)] : DEFAULT_CRI_SOCKETS
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_CRI_TIMEOUT_MS
    this.#cacheSize = options.cacheSize ?? DEFAULT_CRI_CACHE_SIZE
    this.#ttlMs = options.cacheTtlMs ?? DEFAULT_CRI_CACHE_TTL_MS
    this.#hostNetnsPath = options.hostNetnsPath ?? HOST_NETNS_PATH
    this.#log = options.log ?? silentLogger()
  }

  /** The socket in use (undefined until one was found). */
  get socketPath(): string | undefined {
    return this.#client?.socketPath
  }

  /** A snapshot of the counters. */
  stats(): CriResolverStats {
    return { ...this.#stats }
  }

  resolve(pod: PodRef): Promise<PodNetns> {
    if (this.#closed) return Promise.reject(unavailable(undefined, 'the agent is shutting down'))
    const hit = this.#fromCache(pod)
    if (hit !== undefined) return Promise.resolve(hit)
    // Concurrent dials to one pod share one round trip.
    const key = `${pod.uid}\0${pod.namespace}\0${pod.name}`
    let p = this.#inflight.get(key)
    if (p === undefined) {
      p = this.#resolve(pod).finally(() => this.#inflight.delete(key))
      this.#inflight.set(key, p)
    }
    return p
  }

  invalidate(uid: string): void {
    // The verbose status stays, keyed by sandbox id: only a new list can confirm it again.
    const e = this.#cache.get(uid)
    if (e !== undefined) e.confirmedAt = 0
  }

  /** The cached answer for `pod` when it is fresh and passes the per-use check. */
  #fromCache(pod: PodRef): PodNetns | undefined {
    const e = this.#cache.get(pod.uid)
    if (e === undefined || e.confirmedAt === 0 || e.identity === undefined) return undefined
    if (performance.now() - e.confirmedAt >= this.#ttlMs) return undefined
    if (e.namespace !== pod.namespace || e.name !== pod.name) return undefined
    const now = identityNow(e.netns.path)
    let ok = now !== undefined && sameIdentity(now, e.identity)
    if (ok && e.pidNs !== undefined) {
      const sandboxNs = identityNow(e.pidNs)
      ok = sandboxNs !== undefined && sameIdentity(sandboxNs, e.identity)
    }
    if (!ok) {
      this.#stats.cacheRefused++
      e.confirmedAt = 0
      return undefined
    }
    this.#stats.cacheHits++
    // Most recently used last: the oldest entry is the one evicted.
    this.#cache.delete(pod.uid)
    this.#cache.set(pod.uid, e)
    return { ...e.netns, identity: now }
  }

  readiness(): Promise<ResolverReadiness> {
    if (this.#closed) return Promise.resolve({ ready: false, detail: 'closed' })
    const now = performance.now()
    if (this.#readiness !== undefined && now - this.#readiness.at < READINESS_TTL_MS) {
      return this.#readiness.value
    }
    const value = this.#probe()
    this.#readiness = { at: now, value }
    return value
  }

  close(): Promise<void> {
    this.#closed = true
    this.#client?.close()
    this.#client = undefined
    this.#cache.clear()
    return Promise.resolve()
  }

  async #probe(): Promise<ResolverReadiness> {
    try {
      const client = this.#clientNow()
      const v = await client.version()
      return {
        ready: true,
        detail: `${v.runtimeName} ${v.runtimeVersion} (CRI ${v.runtimeApiVersion}) at unix://${client.socketPath}`,
      }
    } catch (err) {
      // The runtime is down: nothing it said before is used until it answers again.
      this.#cache.clear()
      return { ready: false, detail: this.#toAppError(err).message }
    }
  }

  /** The client for the socket that exists now; throws when none does. */
  #clientNow(): CriClient {
    const current = this.#client
    if (current !== undefined && existsSync(current.socketPath)) return current
    const path = this.#candidates.find((p) => existsSync(p))
    if (path === undefined) {
      throw unavailable(
        undefined,
        this.#candidates.length === 1
          ? `its socket ${this.#candidates[0]} does not exist`
          : `no runtime socket exists (looked for ${this.#candidates.join(', ')})`,
      )
    }
    if (current?.socketPath === path) return current
    current?.close()
    this.#client = new CriClient(path, { timeoutMs: this.#timeoutMs })
    this.#log.info({ socket: path }, 'container runtime socket')
    return this.#client
  }

  #toAppError(err: unknown): AppError {
    if (isAppError(err)) return err
    const socket = this.#client?.socketPath
    if (err instanceof CriError) return unavailable(socket, err.message, err)
    return unavailable(socket, String(err), err)
  }

  async #resolve(pod: PodRef): Promise<PodNetns> {
    let client: CriClient
    let items: CriPodSandbox[]
    const askedAt = performance.now()
    try {
      client = this.#clientNow()
      this.#stats.lists++
      items = await client.listPodSandbox({
        state: 'SANDBOX_READY',
        labelSelector: { [POD_UID_LABEL]: pod.uid },
      })
    } catch (err) {
      this.#cache.clear()
      throw this.#toAppError(err)
    }
    // The runtime filtered already; check again what the kubelet wrote, in case it did not.
    const ready = items.filter(
      (s) =>
        s.state === 'SANDBOX_READY' &&
        s.labels[POD_UID_LABEL] === pod.uid &&
        (s.metadata === null || s.metadata.uid === pod.uid),
    )
    if (ready.length === 0) {
      this.#cache.delete(pod.uid)
      throw podNotFound(pod, 'has no ready sandbox in the container runtime on this node')
    }
    // One ready sandbox per pod in practice; the newest wins if a runtime lists more.
    const sandbox = ready.reduce((a, b) => (BigInt(b.createdAt) > BigInt(a.createdAt) ? b : a))
    const meta = sandbox.metadata
    if (meta !== null && (meta.namespace !== pod.namespace || meta.name !== pod.name)) {
      throw podNotFound(
        pod,
        `is not on this node (the sandbox with this uid belongs to ${meta.namespace}/${meta.name})`,
      )
    }
    const cached = this.#cache.get(pod.uid)
    let netns: PodNetns
    let pid: number | undefined
    if (cached !== undefined && cached.sandboxId === sandbox.id) {
      netns = cached.netns
      pid = cached.pid
    } else {
      ;({ netns, pid } = await this.#status(client, pod, sandbox.id))
      this.#log.debug(
        {
          pod: `${pod.namespace}/${pod.name}`,
          uid: pod.uid,
          sandbox: sandbox.id,
          netns: netns.path,
        },
        'pod network namespace from the runtime',
      )
    }
    // Confirmed READY at `askedAt`: the namespace's identity now, and the sandbox
    // process's when it lives in it (a runtime that reports no pid, or a process the
    // agent cannot see, leaves the path check alone). A host-network pod's path is the
    // node's and never changes: it is cached only with its sandbox process to check.
    const identity = identityNow(netns.path)
    const pidPath = pid === undefined ? undefined : `/proc/${pid}/ns/net`
    const pidIdentity = pidPath === undefined ? undefined : identityNow(pidPath)
    const pidNs =
      identity !== undefined && pidIdentity !== undefined && sameIdentity(identity, pidIdentity)
        ? pidPath
        : undefined
    const cacheable =
      identity !== undefined && (pidNs !== undefined || netns.path !== this.#hostNetnsPath)
    this.#cache.delete(pod.uid)
    this.#cache.set(pod.uid, {
      namespace: pod.namespace,
      name: pod.name,
      sandboxId: sandbox.id,
      netns,
      pid,
      identity,
      pidNs,
      confirmedAt: cacheable ? askedAt : 0,
    })
    while (this.#cache.size > this.#cacheSize) {
      const oldest = this.#cache.keys().next().value as string
      this.#cache.delete(oldest)
    }
    return identity === undefined ? netns : { ...netns, identity }
  }

  async #status(
    client: CriClient,
    pod: PodRef,
    sandboxId: string,
  ): Promise<{ netns: PodNetns; pid: number | undefined }> {
    this.#stats.statuses++
    let resp
    try {
      resp = await client.podSandboxStatus(sandboxId, true)
    } catch (err) {
      if (err instanceof CriError && err.grpcCode === criStatus.NOT_FOUND) {
        throw podNotFound(pod, 'has no ready sandbox in the container runtime on this node')
      }
      throw this.#toAppError(err)
    }
    const status = resp.status
    if (status === null || status.state !== 'SANDBOX_READY' || status.metadata?.uid !== pod.uid) {
      throw podNotFound(pod, 'has no ready sandbox in the container runtime on this node')
    }
    let net
    try {
      net = sandboxNetwork(resp)
    } catch (err) {
      throw netnsError(`sandbox ${sandboxId}`, (err as Error).message, err)
    }
    return {
      netns: {
        path: net.hostNetwork ? this.#hostNetnsPath : (net.netnsPath as string),
        podIps: net.podIps,
        source: `sandbox ${sandboxId.slice(0, 12)}`,
      },
      pid: net.pid,
    }
  }
}
