/**
 * The small slice of the Kubernetes API that port-forward clients read before they
 * forward (docs/kubernetes-protocols.md#before-the-upgrade): discovery (`/api`,
 * `/apis`, `/api/v1`, legacy or aggregated) and pod objects from the registry (kubectl
 * checks `status.phase` and resolves named ports from `spec.containers[].ports`). Only
 * `pods` (get) and `pods/portforward` are advertised, so kubectl asks for nothing else.
 *
 * @module
 */
import type { PodInfo } from '../registry/types.js'
import { SERVICE_RESOURCE, aggregatedAppsGroup, aggregatedResource, appsGroup } from './targets.js'

/** A pod's `metadata`, as in the Pod object and in a Table row's partial object. */
export function podMetadata(pod: PodInfo): Record<string, unknown> {
  return {
    name: pod.name,
    namespace: pod.namespace,
    uid: pod.uid,
    resourceVersion: '1',
    creationTimestamp: pod.creationTimestamp ?? new Date(0).toISOString(),
    ...(pod.labels !== undefined ? { labels: pod.labels } : {}),
  }
}

/** A `v1.Pod` object built from the registry's view of a pod. */
export function podObject(pod: PodInfo): Record<string, unknown> {
  const containerPorts = pod.ports.map((p) => ({
    ...(p.name !== undefined ? { name: p.name } : {}),
    containerPort: p.containerPort,
    protocol: p.protocol,
  }))
  return {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: podMetadata(pod),
    spec: {
      nodeName: pod.nodeName,
      containers: [{ name: 'main', image: 'pfgate.local/demo', ports: containerPorts }],
    },
    status: {
      phase: pod.phase,
      ...(pod.phase === 'Running'
        ? {
            conditions: [{ type: 'Ready', status: 'True' }],
            containerStatuses: [
              {
                name: 'main',
                ready: true,
                restartCount: 0,
                image: 'pfgate.local/demo',
                imageID: '',
                started: true,
                state: { running: {} },
              },
            ],
          }
        : {}),
    },
  }
}

/** Aggregated discovery versions we can answer, in our order of preference. */
const AGGREGATED_VERSIONS = ['v2', 'v2beta1'] as const

/** The aggregated discovery version (`v2`, `v2beta1`) an Accept header asks for first, if any. */
export function aggregatedDiscoveryVersion(
  accept: string | undefined,
): 'v2' | 'v2beta1' | undefined {
  if (accept === undefined) return undefined
  for (const range of accept.split(',')) {
    const [type, ...params] = range.split(';').map((p) => p.trim())
    if (type?.toLowerCase() !== 'application/json') continue
    const p = new Map(
      params.map((kv) => {
        const i = kv.indexOf('=')
        return [kv.slice(0, i).trim().toLowerCase(), kv.slice(i + 1).trim()] as const
      }),
    )
    const v = p.get('v')
    if (
      p.get('g') === 'apidiscovery.k8s.io' &&
      p.get('as') === 'APIGroupDiscoveryList' &&
      (AGGREGATED_VERSIONS as readonly (string | undefined)[]).includes(v)
    ) {
      return v as 'v2' | 'v2beta1'
    }
  }
  return undefined
}

/** The Content-Type of an aggregated discovery document. */
export function aggregatedDiscoveryContentType(version: 'v2' | 'v2beta1'): string {
  return `application/json;g=apidiscovery.k8s.io;v=${version};as=APIGroupDiscoveryList`
}

const POD_RESOURCE = {
  name: 'pods',
  singularName: 'pod',
  namespaced: true,
  kind: 'Pod',
  verbs: ['get', 'list'],
  shortNames: ['po'],
}
const PORTFORWARD_RESOURCE = {
  name: 'pods/portforward',
  singularName: '',
  namespaced: true,
  kind: 'PodPortForwardOptions',
  verbs: ['create', 'get'],
}

/** `GET /api` (legacy): the core group's versions. */
export function apiVersions(serverAddress: string): Record<string, unknown> {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
  }
}

/** `GET /apis` (legacy): the apps group (its workloads are forward targets). */
export function apiGroupList(): Record<string, unknown> {
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: [appsGroup()] }
}

/** `GET /api/v1`: the resources of the core group that pfgate serves. */
export function coreV1Resources(): Record<string, unknown> {
  return {
    kind: 'APIResourceList',
    groupVersion: 'v1',
    resources: [POD_RESOURCE, PORTFORWARD_RESOURCE, SERVICE_RESOURCE],
  }
}

/**
 * `GET /api` or `/apis` with aggregated discovery: an `APIGroupDiscoveryList` (the core
 * group with `pods` and its `portforward` subresource, and `services`; under `/apis` the
 * apps group with the workloads a forward may name).
 */
export function aggregatedDiscovery(
  version: 'v2' | 'v2beta1',
  root: 'api' | 'apis',
): Record<string, unknown> {
  const items =
    root === 'apis'
      ? [aggregatedAppsGroup()]
      : [
          {
            metadata: { creationTimestamp: null },
            versions: [
              {
                version: 'v1',
                freshness: 'Current',
                resources: [
                  {
                    resource: 'pods',
                    responseKind: { group: '', version: 'v1', kind: 'Pod' },
                    scope: 'Namespaced',
                    singularResource: 'pod',
                    shortNames: ['po'],
                    verbs: ['get'],
                    subresources: [
                      {
                        subresource: 'portforward',
                        responseKind: { group: '', version: 'v1', kind: 'PodPortForwardOptions' },
                        verbs: ['create', 'get'],
                      },
                    ],
                  },
                  aggregatedResource(SERVICE_RESOURCE, ''),
                ],
              },
            ],
          },
        ]
  return {
    kind: 'APIGroupDiscoveryList',
    apiVersion: `apidiscovery.k8s.io/${version}`,
    metadata: {},
    items,
  }
}
