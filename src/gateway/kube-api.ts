/**
 * The small slice of the Kubernetes API that port-forward clients read before
 * they forward: pod objects from the registry (kubectl checks `status.phase`
 * and resolves named ports from `spec.containers[].ports`).
 *
 * @module
 */
import type { PodInfo } from './registry/types.js'

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
    metadata: {
      name: pod.name,
      namespace: pod.namespace,
      uid: pod.uid,
      resourceVersion: '1',
      creationTimestamp: pod.creationTimestamp ?? new Date(0).toISOString(),
      ...(pod.labels !== undefined ? { labels: pod.labels } : {}),
    },
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
