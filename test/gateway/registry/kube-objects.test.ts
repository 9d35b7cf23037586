/**
 * Service and workload objects as the Kubernetes API serves them → what the registry
 * keeps: selectors, service ports with numeric and named target ports, and what is left
 * out (a matchExpressions selector, malformed ports). Pod readiness from `conditions`.
 *
 * @module
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  serviceInfoFromObject,
  workloadInfoFromObject,
} from '../../../src/gateway/registry/kube/targets.js'
import { podInfoFromObject } from '../../../src/gateway/registry/kube/objects.js'

test('a Service keeps its selector and ports; named and numeric target ports', () => {
  const svc = serviceInfoFromObject({
    kind: 'Service',
    metadata: { namespace: 'team-a', name: 'web', creationTimestamp: '2026-01-01T00:00:00Z' },
    spec: {
      selector: { app: 'web' },
      ports: [
        { name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' },
        { name: 'metrics', port: 9090, targetPort: 9100 },
        { port: 7000 },
        { port: 0, targetPort: 1 },
        'junk',
      ],
    },
  })
  assert.deepEqual(svc, {
    namespace: 'team-a',
    name: 'web',
    selector: { app: 'web' },
    creationTimestamp: '2026-01-01T00:00:00Z',
    ports: [
      { name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' },
      { name: 'metrics', port: 9090, targetPort: 9100, protocol: 'TCP' },
      { port: 7000, protocol: 'TCP' },
    ],
  })
  // No selector (manual endpoints): no selector kept.
  assert.equal(
    serviceInfoFromObject({ metadata: { namespace: 'a', name: 'b' }, spec: { ports: [] } })
      ?.selector,
    undefined,
  )
  assert.equal(serviceInfoFromObject({ metadata: { name: 'b' } }), undefined)
})

test('a workload keeps matchLabels only; matchExpressions selects nothing here', () => {
  assert.deepEqual(
    workloadInfoFromObject('Deployment', {
      metadata: { namespace: 'a', name: 'web' },
      spec: { replicas: 3, selector: { matchLabels: { app: 'web' } } },
    }),
    { kind: 'Deployment', namespace: 'a', name: 'web', selector: { app: 'web' }, replicas: 3 },
  )
  const expr = workloadInfoFromObject('StatefulSet', {
    metadata: { namespace: 'a', name: 'db' },
    spec: {
      selector: {
        matchLabels: { app: 'db' },
        matchExpressions: [{ key: 'tier', operator: 'In', values: ['x'] }],
      },
    },
  })
  assert.equal(expr?.selector, undefined)
})

test('a pod is ready by its Ready condition; unknown without one', () => {
  const pod = (conditions?: unknown[]): boolean | undefined =>
    podInfoFromObject({
      metadata: { namespace: 'a', name: 'p' },
      spec: { nodeName: 'n' },
      status: { phase: 'Running', ...(conditions !== undefined ? { conditions } : {}) },
    })?.ready
  assert.equal(pod([{ type: 'Ready', status: 'True' }]), true)
  assert.equal(pod([{ type: 'Ready', status: 'False' }]), false)
  assert.equal(pod(), undefined)
})
