/**
 * Service and workload targets → one ready pod and its port, picked again for every
 * forwarded connection (docs/protocol.md, "Services and workloads"). Pure functions of
 * the registry's view: the forward core calls {@link resolveTarget} after authorizing the
 * name asked for, and authorizes the pod it returns.
 *
 * A pod is a candidate when it matches the selector, is Running and ready (its `Ready`
 * condition, unknown counting as ready), is scheduled on a node, has the port (a named
 * target port must exist on the pod) and the caller's `allowed` says the user may
 * forward to that port of it. One candidate is picked at random, so connections spread
 * over the replicas and a pod that went away is never picked again once the registry
 * knows it is gone.
 *
 * @module
 */
import { randomInt } from 'node:crypto'
import { WORKLOAD_KINDS, describeTarget } from '../../protocol/targets.js'
import type { TargetKind } from '../../protocol/targets.js'
import { appError } from '../../shared/errors.js'
import type { PodInfo, PodRegistry, ServiceInfo, ServicePort } from './types.js'

/** What a stream asked for: a service or workload, and a port (number or name). */
export interface TargetRequest {
  namespace: string
  kind: Exclude<TargetKind, 'pod'>
  name: string
  /** Service: a service port number or name. Workload: a container port number or name. */
  port: number | string
}

/** The part of the registry resolution reads. */
export type TargetRegistry = Pick<
  PodRegistry,
  'listPods' | 'getService' | 'getWorkload' | 'targetsReady'
>

/** The pod picked for one connection and the pod's port to dial. */
export interface ResolvedTarget {
  pod: PodInfo
  port: number
  /** `svc/echo:5000`: what was asked, for the audit record. */
  asked: string
}

/** Does `labels` hold every key=value of `selector`? An empty selector selects nothing. */
export function selects(
  selector: Record<string, string> | undefined,
  labels: Record<string, string> | undefined,
): boolean {
  if (selector === undefined) return false
  const keys = Object.keys(selector)
  if (keys.length === 0) return false
  return keys.every((k) => labels?.[k] === selector[k])
}

/** Is the pod one a connection may be sent to (Running, ready, on a node)? */
export function isServing(pod: PodInfo): boolean {
  return pod.phase === 'Running' && pod.ready !== false && pod.nodeName !== ''
}

/** The port of `pod` that a service port maps to, or undefined when the pod lacks a named one. */
export function targetPortOn(pod: PodInfo, sp: ServicePort): number | undefined {
  const t = sp.targetPort ?? sp.port
  if (typeof t === 'number') return t
  return pod.ports.find((p) => p.name === t)?.containerPort
}

/** A container port of `pod` by number (always, as kubectl) or by name (undefined if absent). */
export function containerPortOn(pod: PodInfo, port: number | string): number | undefined {
  if (typeof port === 'number') return port
  return pod.ports.find((p) => p.name === port)?.containerPort
}

/** The service port a client named (number or name), as kubectl matches it. */
export function servicePortFor(svc: ServiceInfo, port: number | string): ServicePort {
  const sp = svc.ports.find((p) => (typeof port === 'number' ? p.port === port : p.name === port))
  if (sp === undefined) {
    throw appError(
      'PFG_ERR_ROUTE_BAD_PORT',
      typeof port === 'number'
        ? `Service ${svc.name} does not have a service port ${port}`
        : `Service ${svc.name} does not have a named port '${port}'`,
    )
  }
  return sp
}

/** The selector of the service or workload, or a 404 in Kubernetes' words. */
function lookup(
  registry: TargetRegistry,
  req: TargetRequest,
): { selector: Record<string, string> | undefined; service?: ServiceInfo } {
  if (registry.targetsReady?.() === false) {
    throw appError(
      'PFG_ERR_ROUTE_NOT_READY',
      'the registry has not listed services and workloads yet; retry shortly',
    )
  }
  if (req.kind === 'service') {
    const service = registry.getService(req.namespace, req.name)
    if (service === undefined) {
      throw appError('PFG_ERR_ROUTE_TARGET_NOT_FOUND', `services "${req.name}" not found`)
    }
    return { selector: service.selector, service }
  }
  const w = registry.getWorkload(WORKLOAD_KINDS[req.kind], req.namespace, req.name)
  if (w === undefined) {
    throw appError('PFG_ERR_ROUTE_TARGET_NOT_FOUND', `${req.kind}s.apps "${req.name}" not found`)
  }
  return { selector: w.selector }
}

/**
 * Picks a ready pod for one connection to a service or workload. Throws an AppError:
 * 404 (no such service/workload), 400 (no such service port, or no pod has the named
 * port), 503 `PFG_ERR_ROUTE_NO_READY_POD` (nothing ready), 403 (ready pods, but none
 * the user may forward to on that port).
 */
export function resolveTarget(
  registry: TargetRegistry,
  req: TargetRequest,
  allowed: (pod: PodInfo, port: number) => boolean,
  pick: (n: number) => number = randomInt,
): ResolvedTarget {
  const { selector, service } = lookup(registry, req)
  const sp = service !== undefined ? servicePortFor(service, req.port) : undefined
  const asked = describeTarget(req.kind, req.name, req.port)
  const serving = registry
    .listPods()
    .filter((p) => p.namespace === req.namespace && selects(selector, p.labels) && isServing(p))
  const withPort: ResolvedTarget[] = []
  for (const pod of serving) {
    const port = sp !== undefined ? targetPortOn(pod, sp) : containerPortOn(pod, req.port)
    if (port !== undefined) withPort.push({ pod, port, asked })
  }
  if (serving.length === 0) {
    throw appError(
      'PFG_ERR_ROUTE_NO_READY_POD',
      req.kind === 'service'
        ? `no endpoints available for service "${req.name}"`
        : `no ready pods available for ${req.kind} "${req.name}"`,
    )
  }
  if (withPort.length === 0) {
    const named = sp !== undefined ? (sp.targetPort as string) : (req.port as string)
    throw appError(
      'PFG_ERR_ROUTE_BAD_PORT',
      `no ready pod of ${req.kind} "${req.name}" has a port named '${named}'`,
    )
  }
  const mine = withPort.filter((c) => allowed(c.pod, c.port))
  if (mine.length === 0) {
    throw appError(
      'PFG_ERR_AUTH_FORBIDDEN',
      `no ready pod of ${req.kind} "${req.name}" may be forwarded to on port ${String(req.port)}`,
    )
  }
  return mine[mine.length === 1 ? 0 : pick(mine.length)] as ResolvedTarget
}
