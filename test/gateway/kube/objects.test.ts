/**
 * Discovery content negotiation and documents (the pod object is checked end to end,
 * test/e2e/kube-protocols.test.ts, and by kubectl itself).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  aggregatedDiscovery,
  aggregatedDiscoveryContentType,
  aggregatedDiscoveryVersion,
  coreV1Resources,
} from '../../../src/gateway/kube/objects.js'

test('the aggregated discovery version a client asks for first, as kubectl sends Accept', () => {
  const k133 =
    'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json'
  const k128 =
    'application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json'
  assert.equal(aggregatedDiscoveryVersion(k133), 'v2')
  assert.equal(aggregatedDiscoveryVersion(k128), 'v2beta1')
  assert.equal(aggregatedDiscoveryVersion('application/json, */*'), undefined)
  assert.equal(aggregatedDiscoveryVersion(undefined), undefined)
  assert.equal(
    aggregatedDiscoveryVersion(
      'application/json; g=apidiscovery.k8s.io; v=v3; as=APIGroupDiscoveryList',
    ),
    undefined,
  )
  assert.equal(
    aggregatedDiscoveryContentType('v2'),
    'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList',
  )
})

test('discovery documents advertise pods, pods/portforward, services and the apps/v1 workloads only', () => {
  const api = aggregatedDiscovery('v2', 'api') as {
    apiVersion: string
    items: {
      versions: {
        version: string
        resources: { resource: string; subresources?: { subresource: string }[] }[]
      }[]
    }[]
  }
  assert.equal(api.apiVersion, 'apidiscovery.k8s.io/v2')
  const r = api.items[0]!.versions[0]!.resources
  assert.deepEqual(
    r.map((x) => [x.resource, (x.subresources ?? []).map((s) => s.subresource)]),
    [
      ['pods', ['portforward']],
      ['services', []],
    ],
  )
  const apis = aggregatedDiscovery('v2beta1', 'apis') as {
    items: { metadata: { name: string }; versions: { resources: { resource: string }[] }[] }[]
  }
  assert.deepEqual(
    apis.items.map((g) => [g.metadata.name, g.versions[0]!.resources.map((x) => x.resource)]),
    [['apps', ['deployments', 'replicasets', 'statefulsets']]],
  )
  const v1 = coreV1Resources() as { resources: { name: string }[] }
  assert.deepEqual(
    v1.resources.map((x) => x.name),
    ['pods', 'pods/portforward', 'services'],
  )
})
