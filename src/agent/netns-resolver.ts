/**
 * Which network namespace a pod's connections enter: the netns dialer asks a
 * {@link PodNetnsResolver}, always by the pod UID the gateway resolved, and nothing
 * a request carries names a namespace. Two sources, both written only by the node's
 * side, never by a cluster user:
 *
 * - the node's container runtime over CRI (`CriNetnsResolver`, cri-resolver.ts), as the
 *   kubelet does: the pod must have a READY sandbox there;
 * - the agent's own config, a pod UID → namespace map that only the node's operator
 *   writes ({@link StaticNetnsResolver}; the dev cluster's `--netns` mode).
 *
 * @module
 */
import { appError } from '../shared/errors.js'
import type { AppError } from '../shared/errors.js'
import { resolveNetnsHandle } from './netns-handle.js'
import type { NsIdentity } from './netns-handle.js'

/** A pod as the gateway named it: namespace/name and the UID it resolved. */
export interface PodRef {
  namespace: string
  name: string
  uid: string
}

/** Where to connect for a pod. */
export interface PodNetns {
  /** The namespace file to enter. */
  path: string
  /** The pod's own IP addresses, dialled after loopback (empty when unknown). */
  podIps: readonly string[]
  /** Who said so, for logs and errors (`sandbox 1a2b3c…`, `agent config`). */
  source: string
  /**
   * The identity (nsfs device and inode) of `path`, stat'ed by the resolver during this
   * very resolve; the dialer then does not stat it again. Absent: the dialer stats it.
   */
  identity?: NsIdentity
}

/** Whether a resolver can answer now (the agent's /readyz). */
export interface ResolverReadiness {
  ready: boolean
  /** Why not, or what answers (e.g. the runtime's name and version). */
  detail: string
}

/** Finds a pod's network namespace by its UID. */
export interface PodNetnsResolver {
  /**
   * Resolves the pod's namespace, or rejects with an `AppError`:
   * `PFG_ERR_AGENT_POD_NOT_FOUND` (not on this node, or another pod now has the name),
   * `PFG_ERR_AGENT_RUNTIME_UNAVAILABLE` (the runtime cannot be asked),
   * `PFG_ERR_AGENT_NETNS` (the runtime gave no usable namespace).
   */
  resolve(pod: PodRef): Promise<PodNetns>
  /**
   * A dial to `uid` failed (its path no longer names its namespace, or the connection
   * failed): the next resolve must ask the source again rather than a cache.
   */
  invalidate(uid: string): void
  readiness(): Promise<ResolverReadiness>
  close(): Promise<void>
}

/** The kubelet's answer for a pod it does not run, with what pfgate knows. */
export function podNotFound(pod: PodRef, why: string): AppError {
  return appError(
    'PFG_ERR_AGENT_POD_NOT_FOUND',
    `pod not found: ${pod.namespace}/${pod.name} (uid ${pod.uid}) ${why}`,
  )
}

/** One pod of the agent config's UID → namespace map. */
export interface StaticNetnsEntry {
  namespace: string
  name: string
  uid: string
  /** A name under /run/netns or an absolute namespace path (see `resolveNetnsHandle`). */
  netns: string
}

/**
 * The agent config's pod UID → namespace map (the node operator's word). A pod is
 * served only when its UID is listed and the listed namespace/name match the request's.
 */
export class StaticNetnsResolver implements PodNetnsResolver {
  readonly #byUid = new Map<string, StaticNetnsEntry & { path: string }>()

  /** Throws `PFG_ERR_CONFIG_INVALID` listing every bad entry. */
  constructor(entries: readonly StaticNetnsEntry[]) {
    const problems: string[] = []
    for (const e of entries) {
      const key = `${e.namespace}/${e.name}`
      if (typeof e.uid !== 'string' || e.uid === '') {
        problems.push(`pod ${key}: a uid is required`)
        continue
      }
      if (this.#byUid.has(e.uid)) {
        problems.push(`pod ${key}: uid ${e.uid} is listed twice`)
        continue
      }
      try {
        this.#byUid.set(e.uid, { ...e, path: resolveNetnsHandle(e.netns) })
      } catch (err) {
        problems.push(`pod ${key}: ${(err as Error).message}`)
      }
    }
    if (problems.length > 0) {
      throw appError('PFG_ERR_CONFIG_INVALID', `invalid netns entries: ${problems.join('; ')}`)
    }
  }

  resolve(pod: PodRef): Promise<PodNetns> {
    const e = this.#byUid.get(pod.uid)
    if (e === undefined) {
      return Promise.reject(podNotFound(pod, 'is not on this node (not in the agent config)'))
    }
    if (e.namespace !== pod.namespace || e.name !== pod.name) {
      return Promise.reject(
        podNotFound(
          pod,
          `is not on this node (the agent config has ${e.namespace}/${e.name} for this uid)`,
        ),
      )
    }
    return Promise.resolve({ path: e.path, podIps: [], source: 'agent config' })
  }

  invalidate(): void {}

  readiness(): Promise<ResolverReadiness> {
    return Promise.resolve({ ready: true, detail: `agent config (${this.#byUid.size} pods)` })
  }

  close(): Promise<void> {
    return Promise.resolve()
  }
}
