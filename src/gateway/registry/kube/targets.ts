/**
 * The fields the gateway needs from Service and apps/v1 workload objects (API JSON), for
 * the Kubernetes registry source's list+watch of them (docs/kubernetes-registry.md).
 * New objects only: nothing of the input is retained. A workload whose selector uses
 * `matchExpressions` keeps no selector here and so selects no pod (a forward to it gets
 * 503 rather than a pod the selector might not mean).
 *
 * @module
 */
import type { ServiceInfo, ServicePort, WorkloadInfo, WorkloadKind } from '../types.js'

type Obj = Record<string, unknown>

function rec(v: unknown): Obj | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : undefined
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined
}

function labelsOf(v: unknown): Record<string, string> | undefined {
  const o = rec(v)
  if (o === undefined) return undefined
  const out: Record<string, string> = {}
  for (const [k, x] of Object.entries(o)) if (typeof x === 'string') out[k] = x
  return out
}

function isPort(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 65535
}

function head(obj: Obj | undefined): { namespace: string; name: string; meta: Obj } | undefined {
  const meta = rec(obj?.metadata)
  const namespace = str(meta?.namespace)
  const name = str(meta?.name)
  if (meta === undefined || !namespace || !name) return undefined
  return { namespace, name, meta }
}

/** A Service object → ServiceInfo, or undefined without namespace/name. */
export function serviceInfoFromObject(value: unknown): ServiceInfo | undefined {
  const obj = rec(value)
  const h = head(obj)
  if (h === undefined) return undefined
  const spec = rec(obj?.spec)
  const ports: ServicePort[] = []
  for (const raw of Array.isArray(spec?.ports) ? (spec.ports as unknown[]) : []) {
    const p = rec(raw)
    if (p === undefined || !isPort(p.port)) continue
    const protocol = str(p.protocol)
    const sp: ServicePort = {
      port: p.port,
      protocol: protocol === 'UDP' || protocol === 'SCTP' ? protocol : 'TCP',
    }
    const name = str(p.name)
    if (name !== undefined && name !== '') sp.name = name
    if (isPort(p.targetPort) || (typeof p.targetPort === 'string' && p.targetPort !== ''))
      sp.targetPort = p.targetPort
    ports.push(sp)
  }
  const svc: ServiceInfo = { namespace: h.namespace, name: h.name, ports }
  const selector = labelsOf(spec?.selector)
  if (selector !== undefined && Object.keys(selector).length > 0) svc.selector = selector
  const created = str(h.meta.creationTimestamp)
  if (created !== undefined) svc.creationTimestamp = created
  return svc
}

/** A Deployment/ReplicaSet/StatefulSet object → WorkloadInfo, or undefined without namespace/name. */
export function workloadInfoFromObject(
  kind: WorkloadKind,
  value: unknown,
): WorkloadInfo | undefined {
  const obj = rec(value)
  const h = head(obj)
  if (h === undefined) return undefined
  const spec = rec(obj?.spec)
  const sel = rec(spec?.selector)
  const w: WorkloadInfo = { kind, namespace: h.namespace, name: h.name }
  const expressions = sel?.matchExpressions
  const matchLabels = labelsOf(sel?.matchLabels)
  if (
    (expressions === undefined || (Array.isArray(expressions) && expressions.length === 0)) &&
    matchLabels !== undefined &&
    Object.keys(matchLabels).length > 0
  ) {
    w.selector = matchLabels
  }
  if (Number.isInteger(spec?.replicas)) w.replicas = spec?.replicas as number
  const created = str(h.meta.creationTimestamp)
  if (created !== undefined) w.creationTimestamp = created
  return w
}

/** Compares two views of a service or workload (the reflector's `same`). */
export function sameObject(a: ServiceInfo | WorkloadInfo, b: ServiceInfo | WorkloadInfo): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}
