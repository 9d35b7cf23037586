/**
 * The CRI subset's wire format, pinned to the CRI API's field numbers by bytes worked
 * out by hand from upstream `runtime.v1` (ListPodSandboxRequest.filter = 1;
 * PodSandboxFilter.state = 2, .label_selector = 3; PodSandboxStateValue.state = 1;
 * PodSandboxStatusRequest.pod_sandbox_id = 1, .verbose = 2), and the reading of a
 * sandbox's network from a verbose status (containerd's and CRI-O's `info` JSON).
 * The calls themselves run against a real containerd in test/agent/cri-resolver.test.ts.
 *
 * @module
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { criRequestBytes, listPodSandboxRequest } from '../../src/shared/cri/client.js'
import type { CriPodSandboxStatusResponse } from '../../src/shared/cri/client.js'
import { sandboxNetwork } from '../../src/shared/cri/sandbox-network.js'

test('ListPodSandbox: READY (in its wrapper message) and the pod-UID label selector', () => {
  const bytes = criRequestBytes(
    'ListPodSandbox',
    listPodSandboxRequest({
      state: 'SANDBOX_READY',
      labelSelector: { 'io.kubernetes.pod.uid': 'u' },
    }),
  )
  const key = Buffer.from('io.kubernetes.pod.uid')
  const entry = Buffer.concat([
    Buffer.from([0x0a, key.length]),
    key,
    Buffer.from([0x12, 0x01]),
    Buffer.from('u'),
  ])
  // state: the wrapper (2) holding SANDBOX_READY = 0 (1, sent explicitly: legal proto3,
  // decoded as Go's empty wrapper is).
  const filter = Buffer.concat([Buffer.from([0x12, 0x02, 0x08, 0x00, 0x1a, entry.length]), entry])
  assert.deepEqual(bytes, Buffer.concat([Buffer.from([0x0a, filter.length]), filter]))
  // Without a state, no wrapper: a filter on any state.
  assert.deepEqual(
    criRequestBytes('ListPodSandbox', listPodSandboxRequest({})),
    Buffer.from([0x0a, 0x00]),
  )
})

test('PodSandboxStatus: id (1) and verbose (2)', () => {
  assert.deepEqual(
    criRequestBytes('PodSandboxStatus', { podSandboxId: 'ab', verbose: true }),
    Buffer.from([0x0a, 0x02, 0x61, 0x62, 0x10, 0x01]),
  )
  assert.deepEqual(
    criRequestBytes('Version', { version: 'v1' }),
    Buffer.from([0x0a, 0x02, 0x76, 0x31]),
  )
})

const status = (
  info: unknown,
  network: 'POD' | 'NODE' = 'POD',
  ips: string[] = ['10.1.2.3', 'fd00::3'],
): CriPodSandboxStatusResponse => ({
  status: {
    id: 'sb',
    metadata: { name: 'p', uid: 'u', namespace: 'n', attempt: 0 },
    state: 'SANDBOX_READY',
    createdAt: '1',
    labels: {},
    annotations: {},
    runtimeHandler: '',
    network: { ip: ips[0] ?? '', additionalIps: ips.slice(1).map((ip) => ({ ip })) },
    linux: { namespaces: { options: { network } } },
  },
  info: info === undefined ? {} : { info: typeof info === 'string' ? info : JSON.stringify(info) },
})

test('sandboxNetwork: the runtime spec path first, then sandboxMetadata, then the pid', () => {
  const spec = {
    runtimeSpec: {
      linux: {
        namespaces: [{ type: 'pid' }, { type: 'network', path: '/var/run/netns/cni-1234' }],
      },
    },
    sandboxMetadata: { NetNSPath: '/var/run/netns/other' },
    pid: 42,
  }
  assert.deepEqual(sandboxNetwork(status(spec)), {
    hostNetwork: false,
    netnsPath: '/var/run/netns/cni-1234',
    netnsFrom: 'runtimeSpec',
    podIps: ['10.1.2.3', 'fd00::3'],
    pid: 42,
  })
  assert.equal(
    sandboxNetwork(status({ ...spec, runtimeSpec: {} })).netnsPath,
    '/var/run/netns/other',
  )
  assert.equal(sandboxNetwork(status({ pid: 42 })).netnsPath, '/proc/42/ns/net')
})

test('sandboxNetwork: host network needs no path; unusable answers are errors', () => {
  assert.deepEqual(sandboxNetwork(status(undefined, 'NODE', ['192.0.2.1'])), {
    hostNetwork: true,
    netnsPath: undefined,
    netnsFrom: undefined,
    podIps: ['192.0.2.1'],
    pid: undefined,
  })
  assert.equal(sandboxNetwork(status({ pid: 7 }, 'NODE')).pid, 7)
  assert.throws(() => sandboxNetwork(status(undefined)), /no sandbox info/)
  assert.throws(() => sandboxNetwork(status('{not json')), /no sandbox info/)
  for (const bad of [
    { runtimeSpec: { linux: { namespaces: [{ type: 'network', path: '../../etc/passwd' }] } } },
    { runtimeSpec: { linux: { namespaces: [{ type: 'network', path: '/run/netns/../x' }] } } },
    { pid: 1 },
    { pid: -3 },
    { pid: '42' },
    {},
  ]) {
    assert.throws(() => sandboxNetwork(status(bad)), /no network namespace/, JSON.stringify(bad))
  }
  // Garbage IPs from a runtime are dropped, not dialled.
  assert.deepEqual(sandboxNetwork(status({ pid: 7 }, 'POD', ['not-an-ip', '10.0.0.1'])).podIps, [
    '10.0.0.1',
  ])
})
