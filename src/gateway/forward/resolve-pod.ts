/**
 * "Resolve this pod for this identity": names → authorize → registry ready → look up. One
 * function for everything that names a pod: a forwarded stream or upgrade (admission.ts)
 * and the Kubernetes API facade's `GET` of one pod. Default deny: a pod the identity may not
 * reach is forbidden before the registry is asked, so nobody learns whether it exists.
 *
 * A stream naming a service or workload instead ({@link resolveTargetPod}) has the name
 * authorized the same way first, then a ready pod it may forward to is picked for it
 * (src/gateway/registry/resolve-target.ts).
 *
 * @module
 */
import { assertNamespace, assertObjectName } from '../../protocol/names.js'
import { AppError, appError } from '../../shared/errors.js'
import type { Identity } from '../auth/authenticator.js'
import type { Authorizer } from '../authz/authorizer.js'
import { resolveTarget } from '../registry/resolve-target.js'
import type { ResolvedTarget, TargetRegistry } from '../registry/resolve-target.js'
import type { PodInfo, PodRegistry } from '../registry/types.js'
import type { ForwardTarget } from './service.js'

/** A pod as a request names it. */
export interface PodQuery {
  namespace: string
  pod: string
  /** The node the request named, if any (its name is checked here, its value later). */
  node?: string | undefined
  /**
   * The ports the identity must be allowed to forward to, every one; undefined: the pod
   * itself (any port of it will do, or a read of the pod object).
   */
  ports?: readonly number[] | undefined
  /** `udp`: the ports are UDP ports (granted by a rule's `udpPorts` only). */
  transport?: 'udp' | undefined
}

/**
 * Whose words the refusals use: `forward` (port-forward: the gateway's own), `get` (the API
 * facade's `GET` of a pod: kube-apiserver's).
 */
export type ResolveWording = 'forward' | 'get'

/** What resolving needs. */
export interface ResolveDeps {
  registry: Pick<PodRegistry, 'isReady' | 'getPod'>
  authorizer: Pick<Authorizer, 'mayForward'>
}

/**
 * The pod `q` names, for `identity`. Throws `PFG_ERR_ROUTE_BAD_NAME` (400),
 * `PFG_ERR_AUTH_FORBIDDEN` (403), `PFG_ERR_AUTH_UNAVAILABLE` (503), `PFG_ERR_ROUTE_NOT_READY` (503) or
 * `PFG_ERR_ROUTE_POD_NOT_FOUND` (404), in that order.
 */
export async function resolvePod(
  deps: ResolveDeps,
  identity: Identity,
  q: PodQuery,
  wording: ResolveWording = 'forward',
): Promise<PodInfo> {
  const { namespace, pod } = q
  assertNamespace(namespace)
  assertObjectName('pod', pod)
  if (q.node !== undefined) assertObjectName('node', q.node)
  // RBAC mode asks the API server (PFG_ERR_AUTH_UNAVAILABLE, 503, when it cannot answer).
  const udp = q.transport === 'udp'
  const refused = await deps.authorizer.mayForward(
    identity,
    namespace,
    pod,
    q.ports ?? [],
    udp ? 'udp' : 'tcp',
  )
  if (refused === true) {
    throw appError(
      'PFG_ERR_AUTH_FORBIDDEN',
      wording === 'get'
        ? `pods "${pod}" is forbidden: user "${identity.user}" cannot get resource "pods" in namespace "${namespace}"`
        : `user "${identity.user}" cannot forward to pod ${namespace}/${pod}`,
    )
  }
  if (refused !== undefined) {
    throw appError(
      'PFG_ERR_AUTH_FORBIDDEN',
      `user "${identity.user}" cannot forward to port ${refused}${udp ? '/udp' : ''} of pod ${namespace}/${pod}`,
    )
  }
  if (!deps.registry.isReady()) {
    throw appError('PFG_ERR_ROUTE_NOT_READY', 'the pod registry has not synced yet; retry shortly')
  }
  const info = deps.registry.getPod(namespace, pod)
  if (info === undefined) {
    throw appError(
      'PFG_ERR_ROUTE_POD_NOT_FOUND',
      wording === 'get'
        ? `pods "${pod}" not found`
        : `pods "${pod}" not found in namespace "${namespace}"`,
    )
  }
  return info
}

/** What resolving a service or workload needs. */
export interface TargetDeps {
  registry: Pick<PodRegistry, 'isReady'> & TargetRegistry
  authorizer: Pick<Authorizer, 'mayUseTarget' | 'mayBeCandidate' | 'mayForward'>
}

/**
 * A ready pod of the service or workload `t` in `namespace` for one stream of `identity`,
 * and the pod's port to dial. Throws, in order: the port's parse error (400),
 * `PFG_ERR_ROUTE_BAD_NAME` (400), `PFG_ERR_AUTH_FORBIDDEN` (403: the name is not granted;
 * 503 `PFG_ERR_AUTH_UNAVAILABLE` when RBAC's API server cannot answer),
 * `PFG_ERR_ROUTE_NOT_READY` (503), then resolve-target.ts's refusals (404, 400, 503, and
 * 403 when no ready pod may be forwarded to on that port); with RBAC on, the picked pod is
 * asked of the API server like a pod named directly (403).
 */
export async function resolveTargetPod(
  deps: TargetDeps,
  identity: Identity,
  namespace: string,
  t: ForwardTarget,
  transport?: 'udp',
): Promise<ResolvedTarget> {
  const tr = transport === 'udp' ? 'udp' : 'tcp'
  if (t.port instanceof AppError) throw t.port
  assertNamespace(namespace)
  assertObjectName(t.kind, t.name)
  if (!(await deps.authorizer.mayUseTarget(identity, namespace, t.kind, t.name))) {
    throw appError(
      'PFG_ERR_AUTH_FORBIDDEN',
      `user "${identity.user}" cannot forward to ${t.kind} ${namespace}/${t.name}`,
    )
  }
  if (!deps.registry.isReady()) {
    throw appError('PFG_ERR_ROUTE_NOT_READY', 'the pod registry has not synced yet; retry shortly')
  }
  const picked = resolveTarget(
    deps.registry,
    { namespace, kind: t.kind, name: t.name, port: t.port },
    (pod, port) => deps.authorizer.mayBeCandidate(identity, pod.namespace, pod.name, port, tr),
  )
  const refused = await deps.authorizer.mayForward(
    identity,
    picked.pod.namespace,
    picked.pod.name,
    [picked.port],
    tr,
  )
  if (refused !== undefined) {
    throw appError(
      'PFG_ERR_AUTH_FORBIDDEN',
      `user "${identity.user}" cannot forward to pod ${namespace}/${picked.pod.name} of ${t.kind} ${namespace}/${t.name}`,
    )
  }
  return picked
}
