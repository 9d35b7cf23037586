/**
 * The static registry file: what a pod entry may say. It names no network namespace:
 * the agent finds a pod's namespace by UID in its own container runtime, so nothing in
 * the gateway's registry can send a stream into another pod.
 *
 * @module
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseRegistry } from '../../../src/gateway/registry/static-registry.js'

const node = { name: 'node-a', address: '127.0.0.1', port: 10350 }

test('a pod entry with a uid is kept as given; without one a stable uid is derived', () => {
  const r = parseRegistry(
    {
      nodes: [node],
      pods: [
        { namespace: 'team-a', name: 'mypod', uid: 'u-1', node: 'node-a' },
        { namespace: 'team-a', name: 'other', node: 'node-a' },
      ],
    },
    'registry.yaml',
  )
  assert.equal(r.pods[0]?.uid, 'u-1')
  assert.match(r.pods[1]?.uid ?? '', /^[0-9a-f]{8}-0000-4000-8000-[0-9a-f]{12}$/)
  assert.equal(
    parseRegistry({ pods: [{ namespace: 'team-a', name: 'other', node: 'node-a' }] }, 'x').pods[0]
      ?.uid,
    r.pods[1]?.uid,
  )
  assert.ok(!('netns' in (r.pods[0] as object)))
})

test('a pod entry that names a network namespace is refused, not silently used', () => {
  assert.throws(
    () =>
      parseRegistry(
        {
          nodes: [node],
          pods: [{ namespace: 'team-a', name: 'mypod', node: 'node-a', netns: '/proc/1/ns/net' }],
        },
        'registry.yaml',
      ),
    (err: unknown) => {
      assert.match(String(err), /registry\.yaml/)
      assert.match(String(err), /pods\.0: unknown field "netns"/)
      return true
    },
  )
})
