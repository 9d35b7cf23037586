/**
 * Admission: the ordered checks a forwarded stream and an upgrade share (docs/protocol.md):
 * header size (431) → draining (503) → authenticate (401) → impersonation (403) →
 * port/names (400; the adapter's parse errors are raised only after authentication, so
 * an anonymous client learns nothing) → authorize (403; 503 when RBAC's API server cannot answer) → registry ready (503) → pod (404)
 * → node named (404) → phase (400) → node's agent known (503). The limits, the agent dial
 * and the open record follow in the forwarder. A stream naming a service or workload has
 * the name authorized and a ready pod picked for it (resolve-pod.ts, `resolveTargetPod`)
 * where a pod is looked up; the pod's checks follow as for a pod named directly.
 *
 * The result is either the identity, pod and node, or the refusal with what the checks had
 * learnt before it (for its audit record).
 *
 * @module
 */
import type { PeerCertificate } from 'node:tls'
import { AppError, appError, internalError } from '../../shared/errors.js'
import type { Authenticator, Identity } from '../auth/authenticator.js'
import { impersonationRefused } from '../impersonation.js'
import type { Impersonation } from '../impersonation.js'
import type { NodeInfo, PodInfo, PodRegistry } from '../registry/types.js'
import type { TargetRegistry } from '../registry/resolve-target.js'
import type { Authorizer } from '../authz/authorizer.js'
import { resolvePod, resolveTargetPod } from './resolve-pod.js'
import type { ResolveDeps, TargetDeps } from './resolve-pod.js'
import type { ForwardTarget } from './service.js'

/** What admission needs. */
export interface AdmissionDeps extends ResolveDeps, TargetDeps {
  registry: Pick<PodRegistry, 'isReady' | 'getPod' | 'getNode'> & TargetRegistry
  authorizer: Pick<Authorizer, 'mayForward' | 'mayUseTarget' | 'mayBeCandidate'>
  authenticator: Pick<Authenticator, 'authenticate'>
  /** `limits.maxHeaderBytes`. */
  maxHeaderBytes: number
  /** True once the gateway is shutting down. */
  draining: () => boolean
  /** The header-size limit refused a request (metrics). */
  onHeaderLimit: () => void
}

/** A request to admit: a stream (one port) or an upgrade (ports up front, or none yet). */
export interface AdmissionRequest {
  /** The Authorization header value as received. */
  authorization: string | string[] | undefined
  /** The connection's client certificate, when TLS verified one (x509 identity source). */
  clientCertificate?: PeerCertificate | undefined
  namespace: string
  /** The pod; empty when `target` names a service or workload instead. */
  pod: string
  /** A service or workload to resolve to a ready pod instead (its port is in it; `ports` unused). */
  target?: ForwardTarget | undefined
  /** The node the client named, if any (checked, never trusted). */
  node?: string | undefined
  /**
   * The ports to authorize, the adapter's parse error for them (raised only after
   * authentication), or undefined: any port of the pod will do (SPDY upgrades name ports
   * per stream).
   */
  ports: readonly number[] | AppError | undefined
  /** `udp`: the ports are UDP ports. */
  transport?: 'udp' | undefined
  /** The impersonation headers the request carried, if any (refused after authentication). */
  impersonation?: Impersonation | undefined
  /** Size of the request's header list, when the adapter measured it. */
  headerBytes?: number | undefined
}

/** An admitted request: who, and where to. */
export interface Admitted {
  ok: true
  identity: Identity
  pod: PodInfo
  node: NodeInfo
  /** With a target: the pod's port picked for this stream. */
  port?: number
}

/** A refused request, and what the checks had learnt before refusing. */
export interface NotAdmitted {
  ok: false
  error: AppError
  identity: Identity | undefined
  pod: PodInfo | undefined
  /** With a target, once a pod was picked: its port. */
  port?: number
}

/**
 * Runs the checks in order. `authenticated` is called as soon as the token has verified
 * (before the checks after it).
 */
export async function admission(
  deps: AdmissionDeps,
  req: AdmissionRequest,
  authenticated: (identity: Identity) => void,
): Promise<Admitted | NotAdmitted> {
  let identity: Identity | undefined
  let pod: PodInfo | undefined
  let port: number | undefined
  try {
    if (req.headerBytes !== undefined && req.headerBytes > deps.maxHeaderBytes) {
      deps.onHeaderLimit()
      throw appError(
        'PFG_ERR_LIMIT_HEADER_TOO_LARGE',
        `request headers too large (${req.headerBytes} bytes; limit ${deps.maxHeaderBytes})`,
      )
    }
    if (deps.draining()) {
      throw appError('PFG_ERR_RELAY_DRAINING', 'the gateway is shutting down; retry shortly')
    }
    identity = await deps.authenticator.authenticate({
      authorization: req.authorization,
      ...(req.clientCertificate !== undefined ? { clientCertificate: req.clientCertificate } : {}),
    })
    authenticated(identity)
    if (req.impersonation !== undefined) throw impersonationRefused(identity, req.impersonation)
    if (req.target !== undefined) {
      const picked = await resolveTargetPod(
        deps,
        identity,
        req.namespace,
        req.target,
        req.transport,
      )
      pod = picked.pod
      port = picked.port
    } else {
      if (req.ports instanceof AppError) throw req.ports
      pod = await resolvePod(deps, identity, { ...req, ports: req.ports })
    }
    if (req.node !== undefined && req.node !== pod.nodeName) {
      throw appError(
        'PFG_ERR_ROUTE_WRONG_NODE',
        `pod ${pod.namespace}/${pod.name} is not on node "${req.node}"`,
      )
    }
    if (pod.phase !== 'Running') {
      throw appError(
        'PFG_ERR_ROUTE_POD_NOT_RUNNING',
        `unable to forward port because pod is not running. Current status=${pod.phase}`,
      )
    }
    const node = pod.nodeName === '' ? undefined : deps.registry.getNode(pod.nodeName)
    if (node === undefined) {
      throw appError(
        'PFG_ERR_ROUTE_NODE_UNKNOWN',
        `no agent address is known for node "${pod.nodeName}" of pod ${pod.namespace}/${pod.name}`,
      )
    }
    return { ok: true, identity, pod, node, ...(port !== undefined ? { port } : {}) }
  } catch (err) {
    return {
      ok: false,
      error: internalError(err),
      identity,
      pod,
      ...(port !== undefined ? { port } : {}),
    }
  }
}
