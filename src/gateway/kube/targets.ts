/**
 * The Kubernetes API objects kubectl reads to resolve `port-forward svc/NAME` and
 * `deployment/NAME` itself (docs/kubernetes-clients.md, "Services and workloads"): the
 * Service or apps/v1 workload, from which it takes the selector (and the service's
 * ports), then a pod list by that selector, then the pod. Served from the registry, and
 * only to users a rule grants the name (the same rule a native forward to it needs).
 *
 * @module
 */
import { assertNamespace, assertObjectName } from '../../protocol/names.js'
import { TARGET_RESOURCES, WORKLOAD_KINDS, kindOfResource } from '../../protocol/targets.js'
import type { TargetKind } from '../../protocol/targets.js'
import { appError } from '../../shared/errors.js'
import type { Identity } from '../auth/authenticator.js'
import type { Authorizer } from '../authz/authorizer.js'
import { identityOf } from '../http/auth.js'
import type { GatewayPlugin } from '../http/types.js'
import type { PodRegistry, ServiceInfo, WorkloadInfo } from '../registry/types.js'

/** Discovery entries (legacy `APIResource`) for the core group's services. */
export const SERVICE_RESOURCE = {
  name: 'services',
  singularName: 'service',
  namespaced: true,
  kind: 'Service',
  verbs: ['get'],
  shortNames: ['svc'],
}

/** The apps/v1 resources served, with kubectl's short names. */
export const APPS_RESOURCES = [
  {
    name: 'deployments',
    singularName: 'deployment',
    namespaced: true,
    kind: 'Deployment',
    verbs: ['get'],
    shortNames: ['deploy'],
  },
  {
    name: 'replicasets',
    singularName: 'replicaset',
    namespaced: true,
    kind: 'ReplicaSet',
    verbs: ['get'],
    shortNames: ['rs'],
  },
  {
    name: 'statefulsets',
    singularName: 'statefulset',
    namespaced: true,
    kind: 'StatefulSet',
    verbs: ['get'],
    shortNames: ['sts'],
  },
]

/** An aggregated-discovery resource entry for a legacy one. */
export function aggregatedResource(
  r: { name: string; singularName: string; kind: string; verbs: string[]; shortNames: string[] },
  group: string,
): Record<string, unknown> {
  return {
    resource: r.name,
    responseKind: { group, version: 'v1', kind: r.kind },
    scope: 'Namespaced',
    singularResource: r.singularName,
    shortNames: r.shortNames,
    verbs: r.verbs,
  }
}

/** `GET /apis` (legacy): the apps group. */
export function appsGroup(): Record<string, unknown> {
  const v = { groupVersion: 'apps/v1', version: 'v1' }
  return { name: 'apps', versions: [v], preferredVersion: v }
}

/** `GET /apis/apps/v1`. */
export function appsV1Resources(): Record<string, unknown> {
  return {
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: 'apps/v1',
    resources: APPS_RESOURCES,
  }
}

/** The aggregated discovery entry of the apps group (under `/apis`). */
export function aggregatedAppsGroup(): Record<string, unknown> {
  return {
    metadata: { name: 'apps', creationTimestamp: null },
    versions: [
      {
        version: 'v1',
        freshness: 'Current',
        resources: APPS_RESOURCES.map((r) => aggregatedResource(r, 'apps')),
      },
    ],
  }
}

function meta(o: {
  namespace: string
  name: string
  creationTimestamp?: string
}): Record<string, unknown> {
  return {
    name: o.name,
    namespace: o.namespace,
    resourceVersion: '1',
    creationTimestamp: o.creationTimestamp ?? new Date(0).toISOString(),
  }
}

/** A `v1.Service` built from the registry's view. */
export function serviceObject(svc: ServiceInfo): Record<string, unknown> {
  return {
    kind: 'Service',
    apiVersion: 'v1',
    metadata: meta(svc),
    spec: {
      ...(svc.selector !== undefined ? { selector: svc.selector } : {}),
      type: 'ClusterIP',
      ports: svc.ports.map((p) => ({
        ...(p.name !== undefined ? { name: p.name } : {}),
        protocol: p.protocol,
        port: p.port,
        targetPort: p.targetPort ?? p.port,
      })),
    },
    status: { loadBalancer: {} },
  }
}

/** An apps/v1 Deployment, ReplicaSet or StatefulSet built from the registry's view. */
export function workloadObject(w: WorkloadInfo): Record<string, unknown> {
  const labels = w.selector ?? {}
  return {
    kind: w.kind,
    apiVersion: 'apps/v1',
    metadata: meta(w),
    spec: {
      replicas: w.replicas ?? 1,
      selector: { matchLabels: labels },
      template: { metadata: { labels }, spec: { containers: [] } },
    },
    status: {},
  }
}

/** What the routes need. */
export interface TargetRoutesDeps {
  registry: Pick<PodRegistry, 'isReady' | 'targetsReady' | 'getService' | 'getWorkload'>
  authorizer: Pick<Authorizer, 'mayUseTarget'>
}

/**
 * `GET /api/v1/namespaces/{ns}/services/{name}` and
 * `GET /apis/apps/v1/namespaces/{ns}/{deployments|replicasets|statefulsets}/{name}`.
 * A name the user is not granted is 403 whether it exists or not (no existence leak).
 */
export const kubeTargetRoutes: GatewayPlugin<TargetRoutesDeps> = async (app, deps) => {
  const get = async (
    kind: Exclude<TargetKind, 'pod'>,
    ns: string,
    name: string,
    identity: Identity,
  ): Promise<Record<string, unknown>> => {
    assertNamespace(ns)
    assertObjectName(kind, name)
    const resource = TARGET_RESOURCES[kind]
    const group = kind === 'service' ? '' : '.apps'
    if (!(await deps.authorizer.mayUseTarget(identity, ns, kind, name))) {
      throw appError(
        'PFG_ERR_AUTH_FORBIDDEN',
        `${resource}${group} "${name}" is forbidden: user "${identity.user}" cannot get resource "${resource}" in API group "${group.slice(1)}" in the namespace "${ns}"`,
      )
    }
    if (!deps.registry.isReady() || deps.registry.targetsReady?.() === false) {
      throw appError(
        'PFG_ERR_ROUTE_NOT_READY',
        'the pod registry has not synced yet; retry shortly',
      )
    }
    const found =
      kind === 'service'
        ? deps.registry.getService(ns, name)
        : deps.registry.getWorkload(WORKLOAD_KINDS[kind], ns, name)
    if (found === undefined) {
      throw appError('PFG_ERR_ROUTE_TARGET_NOT_FOUND', `${resource}${group} "${name}" not found`)
    }
    return 'ports' in found ? serviceObject(found) : workloadObject(found)
  }
  app.get<{ Params: { ns: string; name: string } }>(
    '/api/v1/namespaces/:ns/services/:name',
    async (request, reply) =>
      reply
        .type('application/json')
        .send(await get('service', request.params.ns, request.params.name, identityOf(request))),
  )
  app.get<{ Params: { ns: string; resource: string; name: string } }>(
    '/apis/apps/v1/namespaces/:ns/:resource/:name',
    async (request, reply) => {
      const kind = kindOfResource(request.params.resource)
      if (kind === undefined || kind === 'pod' || kind === 'service') {
        throw appError(
          'PFG_ERR_ROUTE_NOT_FOUND',
          'the server could not find the requested resource',
        )
      }
      return reply
        .type('application/json')
        .send(await get(kind, request.params.ns, request.params.name, identityOf(request)))
    },
  )
  app.get('/apis/apps/v1', async (_request, reply) =>
    reply.type('application/json').send(appsV1Resources()),
  )
}
