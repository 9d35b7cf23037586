/**
 * KubeRegistry against a local API server that speaks the real wire format
 * (test/helpers/fake-kube-apiserver.ts): HTTPS, token and client-certificate
 * auth, paginated lists, chunked watches cut at arbitrary bytes, bookmarks,
 * 410 Gone (status and ERROR event), server timeouts and abrupt drops. Each
 * scenario waits for the registry's view to converge with a bounded poll.
 *
 * @module
 */
import { after, before, describe, test } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import {
  KUBE_REGISTRY_CONFIG_SCHEMA,
  parseKubeRegistryConfig,
} from '../../../src/gateway/registry/kube/config.js'
import type { KubeRegistryOptions } from '../../../src/gateway/registry/kube/config.js'
import { LineSplitter } from '../../../src/gateway/registry/kube/line-splitter.js'
import {
  NODE_AGENT_PORT_ANNOTATION,
  nodeInfoFromObject,
  podInfoFromObject,
} from '../../../src/gateway/registry/kube/objects.js'
import { KubeRegistry, createKubeRegistry } from '../../../src/gateway/registry/kube/registry.js'
import type { KubeCredentials } from '../../../src/gateway/registry/kube-credentials.js'
import type { NodeInfo, PodInfo } from '../../../src/gateway/registry/types.js'
import { isAppError } from '../../../src/shared/errors.js'
import { FakeKubeApiServer, generateFakeKubePki } from '../../helpers/fake-kube-apiserver.js'
import type { FakeKubePki } from '../../helpers/fake-kube-apiserver.js'

// ───────────────────────────── helpers ─────────────────────────────

/** Polls `cond` every few ms until true; fails after `timeoutMs` naming `what`. */
async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(5)
  }
}

let pki: FakeKubePki
let tmp: string
before(async () => {
  pki = await generateFakeKubePki()
  tmp = mkdtempSync(join(tmpdir(), 'pfgate-kube-'))
})
after(() => rmSync(tmp, { recursive: true, force: true }))

async function startServer(t: TestContext): Promise<FakeKubeApiServer> {
  const server = await FakeKubeApiServer.start({ pki, tokens: ['test-token'] })
  t.after(() => server.close())
  return server
}

function tokenCredentials(server: FakeKubeApiServer, token = 'test-token'): KubeCredentials {
  return {
    server: server.url,
    ca: Buffer.from(pki.caCert),
    token,
    insecureSkipTlsVerify: false,
    source: 'test',
  }
}

type Ev = [string, string, string]

function newRegistry(
  t: TestContext,
  credentials: KubeCredentials,
  extra: Partial<KubeRegistryOptions> = {},
): { reg: KubeRegistry; events: Ev[]; nodeEvents: Ev[] } {
  const reg = new KubeRegistry({
    credentials,
    agentPort: 10350,
    backoff: { initialMs: 20, maxMs: 200 },
    watchTimeoutMs: 60_000,
    requestTimeoutMs: 5000,
    random: () => 0.5,
    ...extra,
  })
  // Pods and nodes come from separate watches: their relative order is not defined.
  const events: Ev[] = []
  const nodeEvents: Ev[] = []
  reg.on('pod', (type, pod: PodInfo) =>
    events.push([type, `${pod.namespace}/${pod.name}`, pod.nodeName]),
  )
  reg.on('node', (type, node: NodeInfo) => nodeEvents.push([type, node.name, node.address]))
  t.after(() => reg.close())
  return { reg, events, nodeEvents }
}

function seedNodes(server: FakeKubeApiServer): void {
  server.upsertNode({
    name: 'node-a',
    addresses: [
      { type: 'InternalIP', address: '10.0.0.1' },
      { type: 'InternalDNS', address: 'node-a.cluster.internal' },
    ],
  })
  server.upsertNode({
    name: 'node-b',
    addresses: [
      { type: 'InternalIP', address: '10.0.0.2' },
      { type: 'Hostname', address: 'node-b' },
    ],
  })
}

function listCount(server: FakeKubeApiServer, path: string): number {
  return server.requestsTo(path, 'list').filter((r) => r.status === 200 && !r.query.continue).length
}

// ───────────────────────────── the fake itself ─────────────────────────────

/** Lists (2 per page) then watches pods with the official Python client; prints JSON lines. */
const PYTHON_CLIENT = `
import json, sys
from kubernetes import client, watch
cfg = client.Configuration()
cfg.host = sys.argv[1]
cfg.ssl_ca_cert = sys.argv[2]
cfg.api_key = {'authorization': 'test-token'}
cfg.api_key_prefix = {'authorization': 'Bearer'}
api = client.CoreV1Api(client.ApiClient(cfg))
names, cont = [], None
while True:
    r = api.list_pod_for_all_namespaces(limit=2, _continue=cont)
    names += ['%s/%s@%s' % (p.metadata.namespace, p.metadata.name, p.spec.node_name) for p in r.items]
    cont = r.metadata._continue
    if not cont:
        break
print(json.dumps({'list': names, 'rv': r.metadata.resource_version}), flush=True)
for ev in watch.Watch().stream(api.list_pod_for_all_namespaces, resource_version=r.metadata.resource_version,
                               timeout_seconds=10, allow_watch_bookmarks=True):
    if ev['type'] == 'BOOKMARK':  # left undecoded by the client: raw JSON
        print(json.dumps({'type': 'BOOKMARK', 'rv': ev['raw_object']['metadata']['resourceVersion']}), flush=True)
        continue
    o = ev['object']
    print(json.dumps({'type': ev['type'], 'name': o.metadata.name, 'rv': o.metadata.resource_version,
                      'node': o.spec.node_name,
                      'note': (o.metadata.annotations or {}).get('example.com/description')}), flush=True)
    if ev['type'] == 'DELETED':
        break
`

test('the fake speaks a wire format the official Python client accepts (list pages, chunked watch)', async (t) => {
  const server = await startServer(t)
  for (let i = 0; i < 5; i++)
    server.upsertPod({ namespace: 'ns', name: `p${i}`, nodeName: 'node-a' })
  const ca = join(tmp, 'python-ca.pem')
  writeFileSync(ca, pki.caCert)
  // A missing python3-kubernetes makes this fail (import error, exit code 1), never skip.
  const child = spawn('/usr/bin/python3', ['-c', PYTHON_CLIENT, server.url, ca], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  t.after(() => child.kill())
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve))
  const lines: Record<string, unknown>[] = []
  createInterface({ input: child.stdout }).on('line', (l) =>
    lines.push(JSON.parse(l) as Record<string, unknown>),
  )
  await until(() => lines.length > 0 || child.exitCode !== null, "the client's list", 10_000)
  assert.deepEqual(
    lines[0],
    {
      list: ['ns/p0@node-a', 'ns/p1@node-a', 'ns/p2@node-a', 'ns/p3@node-a', 'ns/p4@node-a'],
      rv: server.resourceVersion,
    },
    stderr,
  )
  await until(() => server.watchCount === 1, "the client's watch")
  server.upsertPod({ namespace: 'ns', name: 'new', nodeName: 'node-b' })
  server.sendBookmark()
  server.deletePod('ns', 'p0')
  assert.equal(await exited, 0, stderr)
  assert.deepEqual(
    lines.slice(1).map((l) => [l.type, l.name, l.node]),
    [
      ['ADDED', 'new', 'node-b'],
      ['BOOKMARK', undefined, undefined],
      ['DELETED', 'p0', 'node-a'],
    ],
  )
  assert.equal(lines[1]!.note, 'café ☕ — ünïcødé', 'UTF-8 intact across chunk cuts')
  assert.equal(lines[2]!.rv, lines[1]!.rv, 'the bookmark carries the current version')
  assert.deepEqual(
    server.requestsTo('/api/v1/pods', 'list').map((r) => r.query.limit),
    ['2', '2', '2'],
  )
})

// ───────────────────────────── framing ─────────────────────────────

describe('LineSplitter', () => {
  test('reassembles lines cut at every byte offset, multi-byte characters included', () => {
    const lines = ['{"a":"café ☕"}', '{"b":"ünïcødé — 𝄞"}', '{"c":3}']
    const bytes = Buffer.from(lines.join('\n') + '\n', 'utf8')
    for (let size = 1; size <= bytes.length; size++) {
      const s = new LineSplitter(1024)
      const got: string[] = []
      for (let i = 0; i < bytes.length; i += size) got.push(...s.push(bytes.subarray(i, i + size)))
      assert.deepEqual(got, lines, `chunk size ${size}`)
      assert.equal(s.pending, 0)
    }
  })

  test('drops blank lines and CR, and keeps a partial line pending', () => {
    const s = new LineSplitter(1024)
    assert.deepEqual(s.push(Buffer.from('\n\r\n{"x":1}\r\n{"y"')), ['{"x":1}'])
    assert.equal(s.pending, 4)
    assert.deepEqual(s.push(Buffer.from(':2}\n')), ['{"y":2}'])
    assert.equal(s.pending, 0)
  })

  test('a line longer than the bound throws, even when it arrives in small chunks', () => {
    const s = new LineSplitter(10)
    assert.deepEqual(s.push(Buffer.from('12345')), [])
    assert.throws(() => s.push(Buffer.from('678901')), RangeError)
    const s2 = new LineSplitter(10)
    assert.throws(() => s2.push(Buffer.from('12345678901\n')), RangeError)
    assert.deepEqual(new LineSplitter(10).push(Buffer.from('1234567890\n')), ['1234567890'])
  })
})

// ───────────────────────────── mapping ─────────────────────────────

describe('object mapping', () => {
  test('pod: keeps only the fields the gateway needs (never the user-writable pfgate.io/netns annotation)', () => {
    const pod = podInfoFromObject({
      kind: 'Pod',
      metadata: {
        namespace: 'ns',
        name: 'web-0',
        uid: 'u-1',
        creationTimestamp: '2024-01-02T03:04:05Z',
        labels: { app: 'web', bogus: 7 },
        // Once read as the pod's network namespace: anyone who may patch the pod could
        // point it at another tenant's pod. Now nothing of it is kept.
        annotations: { 'pfgate.io/netns': '/proc/42/ns/net', other: 'x' },
        managedFields: [{ manager: 'kubelet' }],
      },
      spec: {
        nodeName: 'node-a',
        containers: [
          {
            name: 'a',
            ports: [
              { containerPort: 80, name: 'http' },
              { containerPort: 53, protocol: 'UDP' },
            ],
          },
          { name: 'b' },
          {
            name: 'c',
            ports: [{ containerPort: 0 }, { containerPort: 'x' }, { containerPort: 9090 }],
          },
        ],
        initContainers: [
          { name: 'init', ports: [{ containerPort: 1111 }] },
          { name: 'sidecar', restartPolicy: 'Always', ports: [{ containerPort: 15001 }] },
        ],
      },
      status: { phase: 'Running', conditions: [] },
    })
    assert.deepEqual(pod, {
      namespace: 'ns',
      name: 'web-0',
      uid: 'u-1',
      nodeName: 'node-a',
      phase: 'Running',
      ports: [
        { name: 'http', containerPort: 80, protocol: 'TCP' },
        { containerPort: 53, protocol: 'UDP' },
        { containerPort: 9090, protocol: 'TCP' },
        { containerPort: 15001, protocol: 'TCP' },
      ],
      labels: { app: 'web' },
      creationTimestamp: '2024-01-02T03:04:05Z',
    })
  })

  test('pod: unscheduled, missing status, and objects without a name', () => {
    assert.deepEqual(podInfoFromObject({ metadata: { namespace: 'n', name: 'p' } }), {
      namespace: 'n',
      name: 'p',
      uid: '',
      nodeName: '',
      phase: 'Unknown',
      ports: [],
    })
    assert.equal(podInfoFromObject({ metadata: { namespace: 'n' } }), undefined)
    assert.equal(podInfoFromObject({ metadata: { name: 'p' } }), undefined)
    assert.equal(podInfoFromObject(null), undefined)
    assert.equal(podInfoFromObject('x'), undefined)
  })

  const nodeCases: [
    string,
    { type: string; address: string }[],
    Record<string, string>,
    Omit<NodeInfo, 'name'>,
  ][] = [
    [
      'InternalDNS first',
      [
        { type: 'InternalIP', address: '10.1.1.1' },
        { type: 'Hostname', address: 'h1' },
        { type: 'InternalDNS', address: 'n.internal' },
      ],
      {},
      { address: 'n.internal', port: 10350, tlsServerName: 'n.internal' },
    ],
    [
      'then Hostname',
      [
        { type: 'InternalIP', address: '10.1.1.1' },
        { type: 'ExternalDNS', address: 'e.example' },
        { type: 'Hostname', address: 'h1' },
      ],
      {},
      { address: 'h1', port: 10350, tlsServerName: 'h1' },
    ],
    [
      'then InternalIP, verified as the node name',
      [
        { type: 'ExternalIP', address: '203.0.113.9' },
        { type: 'InternalIP', address: '10.1.1.1' },
      ],
      {},
      { address: '10.1.1.1', port: 10350, tlsServerName: 'n1' },
    ],
    [
      'IPv6 InternalIP',
      [{ type: 'InternalIP', address: 'fd00::1' }],
      {},
      { address: 'fd00::1', port: 10350, tlsServerName: 'n1' },
    ],
    [
      'no usable address: the node name',
      [{ type: 'ExternalIP', address: '203.0.113.9' }],
      {},
      { address: 'n1', port: 10350, tlsServerName: 'n1' },
    ],
    [
      'agent-port annotation',
      [{ type: 'InternalIP', address: '10.1.1.1' }],
      { [NODE_AGENT_PORT_ANNOTATION]: '20000' },
      { address: '10.1.1.1', port: 20000, tlsServerName: 'n1' },
    ],
    [
      'invalid agent-port annotation is ignored',
      [{ type: 'InternalIP', address: '10.1.1.1' }],
      { [NODE_AGENT_PORT_ANNOTATION]: '70000' },
      { address: '10.1.1.1', port: 10350, tlsServerName: 'n1' },
    ],
    [
      'non-numeric agent-port annotation is ignored',
      [{ type: 'InternalIP', address: '10.1.1.1' }],
      { [NODE_AGENT_PORT_ANNOTATION]: '10350abc' },
      { address: '10.1.1.1', port: 10350, tlsServerName: 'n1' },
    ],
  ]
  for (const [name, addresses, annotations, want] of nodeCases) {
    test(`node: ${name}`, () => {
      const node = nodeInfoFromObject(
        { metadata: { name: 'n1', annotations }, status: { addresses } },
        10350,
      )
      assert.deepEqual(node, { name: 'n1', ...want })
    })
  }
  test('node without a name is ignored', () => {
    assert.equal(nodeInfoFromObject({ metadata: {} }, 1), undefined)
  })
})

// ───────────────────────────── configuration ─────────────────────────────

describe('configuration', () => {
  test('defaults', () => {
    const s = parseKubeRegistryConfig(
      { source: 'kubernetes', agentPort: 10350 },
      'gw.yaml',
      '/etc/pfgate',
    )
    assert.deepEqual(s, {
      source: 'kubernetes',
      inCluster: true,
      namespaces: [],
      agentPort: 10350,
      pageSize: 500,
      resyncPeriodMs: 0,
      watchTimeoutMs: 300_000,
      requestTimeoutMs: 30_000,
      tokenRefreshMs: 60_000,
      backoff: { initialMs: 500, maxMs: 30_000 },
      maxEventBytes: 16 * 1024 * 1024,
    })
    assert.ok(Object.isFrozen(s))
  })

  test('kubeconfig resolves against the config directory and turns inCluster off', () => {
    const s = parseKubeRegistryConfig(
      {
        source: 'kubernetes',
        kubeconfig: 'kube/config',
        context: 'prod',
        namespaces: ['a', 'b-2'],
        labelSelector: 'app=web',
        agentPort: 1,
        watchTimeout: '90s',
        backoff: { initial: 100 },
        maxEventSize: '1MiB',
      },
      'gw.yaml',
      '/etc/pfgate',
    )
    assert.equal(s.kubeconfig, '/etc/pfgate/kube/config')
    assert.equal(s.context, 'prod')
    assert.equal(s.inCluster, false)
    assert.deepEqual(s.namespaces, ['a', 'b-2'])
    assert.equal(s.labelSelector, 'app=web')
    assert.equal(s.watchTimeoutMs, 90_000)
    assert.deepEqual(s.backoff, { initialMs: 100, maxMs: 30_000 })
    assert.equal(s.maxEventBytes, 1024 * 1024)
  })

  const bad: [string, unknown, string[]][] = [
    [
      'agentPort missing',
      { source: 'kubernetes' },
      ['registry: missing required field "agentPort"'],
    ],
    [
      'agentPort out of range',
      { source: 'kubernetes', agentPort: 70000 },
      ['registry.agentPort: must be <= 65535'],
    ],
    [
      'unknown field',
      { source: 'kubernetes', agentPort: 1, nodes: [] },
      ['registry: unknown field "nodes"'],
    ],
    [
      'bad namespace',
      { source: 'kubernetes', agentPort: 1, namespaces: ['Bad_NS'] },
      ['registry.namespaces.0: must match pattern'],
    ],
    [
      'context without kubeconfig',
      { source: 'kubernetes', agentPort: 1, context: 'x' },
      ['registry: must have property kubeconfig when property context is present'],
    ],
    [
      'inCluster with kubeconfig',
      { source: 'kubernetes', agentPort: 1, inCluster: true, kubeconfig: 'k' },
      ['registry: inCluster and kubeconfig are exclusive'],
    ],
    [
      'bad durations and sizes, all listed',
      {
        source: 'kubernetes',
        agentPort: 1,
        watchTimeout: 'soon',
        resyncPeriod: '5 min',
        maxEventSize: '1KiB',
        backoff: { initial: '2s', max: '1s' },
      },
      [
        'invalid registry.watchTimeout "soon"',
        'invalid registry.resyncPeriod "5 min"',
        'registry.maxEventSize: must be at least 64KiB',
        'registry.backoff.max: must not be less than backoff.initial',
      ],
    ],
    [
      'wrong source',
      { source: 'static', agentPort: 1 },
      ['registry.source: must be equal to constant'],
    ],
  ]
  for (const [name, value, messages] of bad) {
    test(`rejects: ${name}`, () => {
      assert.throws(
        () => parseKubeRegistryConfig(value, 'gw.yaml', '/'),
        (err: unknown) => {
          assert.ok(isAppError(err))
          assert.equal(err.code, 'PFG_ERR_CONFIG_INVALID')
          assert.match(err.message, /^gw\.yaml: invalid configuration:/)
          for (const m of messages)
            assert.ok(err.message.includes(m), `${JSON.stringify(err.message)} lacks ${m}`)
          return true
        },
      )
    })
  }

  test('the schema fragment is self-contained (embeddable under registry)', () => {
    assert.equal(KUBE_REGISTRY_CONFIG_SCHEMA.properties.source.const, 'kubernetes')
    assert.deepEqual([...KUBE_REGISTRY_CONFIG_SCHEMA.required], ['source', 'agentPort'])
  })
})

// ───────────────────────────── against the API server ─────────────────────────────

describe('KubeRegistry', () => {
  test('not ready before the first list of pods and nodes; paginated list; ready once', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    for (let i = 0; i < 25; i++) {
      server.upsertPod({
        namespace: `ns-${i % 3}`,
        name: `pod-${i}`,
        nodeName: i % 2 ? 'node-a' : 'node-b',
      })
    }
    const release = server.holdLists()
    const { reg } = newRegistry(t, tokenCredentials(server), { pageSize: 7 })
    const readyEvents: boolean[] = []
    reg.on('ready', (r) => readyEvents.push(r))
    let started = false
    const starting = reg.start().then(() => (started = true))
    assert.equal(reg.isReady(), false)
    await until(
      () => server.requestsTo('/api/v1/pods', 'list').length > 0,
      'the first list request',
    )
    await sleep(30) // the lists are held: nothing may become ready meanwhile
    assert.equal(reg.isReady(), false)
    assert.equal(started, false)
    assert.equal(reg.getPod('ns-0', 'pod-0'), undefined)
    release()
    await starting
    assert.equal(reg.isReady(), true)
    assert.deepEqual(readyEvents, [true])
    assert.equal(reg.listPods().length, 25)
    assert.equal(reg.getPod('ns-1', 'pod-1')?.nodeName, 'node-a')
    assert.deepEqual(reg.getNode('node-a'), {
      name: 'node-a',
      address: 'node-a.cluster.internal',
      port: 10350,
      tlsServerName: 'node-a.cluster.internal',
    })
    const pages = server.requestsTo('/api/v1/pods', 'list')
    assert.equal(pages.length, 4, '25 pods in pages of 7')
    assert.ok(pages.every((r) => r.query.limit === '7'))
    assert.equal(pages.filter((r) => r.query.continue !== undefined).length, 3)
    assert.equal(reg.start(), reg.start(), 'start() is idempotent')
    t.diagnostic(`pod list pages: ${pages.length}`)
  })

  test('pods created, moved (delete + create, and MODIFIED nodeName), deleted; nodes changed', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    const { reg, events, nodeEvents } = newRegistry(t, tokenCredentials(server))
    await reg.start()
    assert.deepEqual(reg.listPods(), [])
    await until(() => server.watchCount === 2, 'both watches open')

    server.upsertPod({
      namespace: 'shop',
      name: 'api-0',
      nodeName: 'node-a',
      labels: { app: 'api' },
      containers: [
        { ports: [{ containerPort: 5000, name: 'http' }] },
        { ports: [{ containerPort: 5001 }] },
      ],
    })
    await until(() => reg.getPod('shop', 'api-0') !== undefined, 'the new pod')
    const first = reg.getPod('shop', 'api-0')!
    assert.equal(first.nodeName, 'node-a')
    assert.deepEqual(first.ports, [
      { name: 'http', containerPort: 5000, protocol: 'TCP' },
      { containerPort: 5001, protocol: 'TCP' },
    ])
    assert.deepEqual(first.labels, { app: 'api' })
    assert.match(first.creationTimestamp ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)

    // A StatefulSet-style move: the pod is deleted, then re-created on another node.
    const t0 = performance.now()
    server.deletePod('shop', 'api-0')
    server.upsertPod({ namespace: 'shop', name: 'api-0', nodeName: 'node-b' })
    await until(() => reg.getPod('shop', 'api-0')?.nodeName === 'node-b', 'the pod on node-b')
    const moveMs = performance.now() - t0
    assert.notEqual(reg.getPod('shop', 'api-0')!.uid, first.uid)

    // A MODIFIED that changes the node (not possible in a real cluster, but handled).
    server.upsertPod({ namespace: 'shop', name: 'api-0', nodeName: 'node-a' })
    await until(() => reg.getPod('shop', 'api-0')?.nodeName === 'node-a', 'the pod back on node-a')

    // A status-only change (phase) is a 'modified'; an unchanged re-write is not an event.
    server.upsertPod({ namespace: 'shop', name: 'api-0', nodeName: 'node-a', phase: 'Succeeded' })
    await until(() => reg.getPod('shop', 'api-0')?.phase === 'Succeeded', 'the phase change')
    server.upsertPod({ namespace: 'shop', name: 'api-0', nodeName: 'node-a', phase: 'Succeeded' })

    server.deletePod('shop', 'api-0')
    await until(() => reg.getPod('shop', 'api-0') === undefined, 'the pod gone')

    // Node address change and agent-port annotation.
    server.upsertNode({
      name: 'node-b',
      addresses: [{ type: 'InternalDNS', address: 'node-b.new.internal' }],
      annotations: { [NODE_AGENT_PORT_ANNOTATION]: '12000' },
    })
    await until(
      () => reg.getNode('node-b')?.address === 'node-b.new.internal',
      'the new node address',
    )
    assert.deepEqual(reg.getNode('node-b'), {
      name: 'node-b',
      address: 'node-b.new.internal',
      port: 12000,
      tlsServerName: 'node-b.new.internal',
    })
    server.upsertNode({ name: 'node-c', addresses: [{ type: 'InternalIP', address: '10.9.9.9' }] })
    server.deleteNode('node-a')
    await until(
      () => reg.getNode('node-a') === undefined && reg.getNode('node-c') !== undefined,
      'node-a gone, node-c in',
    )
    assert.deepEqual(reg.getNode('node-c'), {
      name: 'node-c',
      address: '10.9.9.9',
      port: 10350,
      tlsServerName: 'node-c',
    })

    assert.deepEqual(events, [
      ['added', 'shop/api-0', 'node-a'],
      ['deleted', 'shop/api-0', 'node-a'],
      ['added', 'shop/api-0', 'node-b'],
      ['modified', 'shop/api-0', 'node-a'],
      ['modified', 'shop/api-0', 'node-a'],
      ['deleted', 'shop/api-0', 'node-a'],
    ])
    assert.deepEqual(nodeEvents, [
      ['added', 'node-a', 'node-a.cluster.internal'],
      ['added', 'node-b', 'node-b'],
      ['modified', 'node-b', 'node-b.new.internal'],
      ['added', 'node-c', '10.9.9.9'],
      ['deleted', 'node-a', 'node-a.cluster.internal'],
    ])
    assert.equal(listCount(server, '/api/v1/pods'), 1, 'no relist: one watch carried everything')
    t.diagnostic(`pod move visible after ${moveMs.toFixed(1)} ms`)
  })

  test('namespaces and a label selector limit what is watched', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    server.upsertPod({
      namespace: 'team-a',
      name: 'web',
      nodeName: 'node-a',
      labels: { app: 'web' },
    })
    server.upsertPod({ namespace: 'team-a', name: 'db', nodeName: 'node-a', labels: { app: 'db' } })
    server.upsertPod({
      namespace: 'team-c',
      name: 'web',
      nodeName: 'node-a',
      labels: { app: 'web' },
    })
    const { reg, events } = newRegistry(t, tokenCredentials(server), {
      namespaces: ['team-a', 'team-b'],
      labelSelector: 'app=web',
    })
    await reg.start()
    assert.deepEqual(
      reg.listPods().map((p) => `${p.namespace}/${p.name}`),
      ['team-a/web'],
    )
    assert.equal(reg.getPod('team-c', 'web'), undefined)
    assert.equal(
      server.requestsTo('/api/v1/namespaces/team-a/pods', 'list')[0]?.query.labelSelector,
      'app=web',
    )
    assert.equal(server.requestsTo('/api/v1/pods').length, 0, 'no cluster-wide pod request')
    await until(() => server.watchCount === 3, 'three watches (2 namespaces + nodes)')

    server.upsertPod({
      namespace: 'team-b',
      name: 'web',
      nodeName: 'node-b',
      labels: { app: 'web' },
    })
    server.upsertPod({
      namespace: 'team-c',
      name: 'web2',
      nodeName: 'node-b',
      labels: { app: 'web' },
    })
    await until(() => reg.getPod('team-b', 'web') !== undefined, 'team-b/web')
    // The pod stops matching the selector: the server sends DELETED.
    server.upsertPod({
      namespace: 'team-a',
      name: 'web',
      nodeName: 'node-a',
      labels: { app: 'other' },
    })
    await until(() => reg.getPod('team-a', 'web') === undefined, 'team-a/web filtered out')
    assert.equal(reg.getPod('team-c', 'web2'), undefined)
    assert.deepEqual(events, [
      ['added', 'team-a/web', 'node-a'],
      ['added', 'team-b/web', 'node-b'],
      ['deleted', 'team-a/web', 'node-a'],
    ])
  })

  test('client-certificate auth from a kubeconfig; a certificate from another CA is refused', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    server.upsertPod({ namespace: 'ns', name: 'p', nodeName: 'node-b' })
    const b64 = (s: string): string => Buffer.from(s).toString('base64')
    const kubeconfig = join(tmp, 'cert-kubeconfig')
    writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        'current-context: other',
        'clusters:',
        '- name: fake',
        '  cluster:',
        `    server: ${server.url}`,
        `    certificate-authority-data: ${b64(pki.caCert)}`,
        'contexts:',
        '- name: other',
        '  context: {cluster: fake, user: nobody}',
        '- name: gw',
        '  context: {cluster: fake, user: gateway, namespace: pfgate}',
        'users:',
        '- name: nobody',
        '  user: {}',
        '- name: gateway',
        '  user:',
        `    client-certificate-data: ${b64(pki.clientCert)}`,
        `    client-key-data: ${b64(pki.clientKey)}`,
        '',
      ].join('\n'),
    )
    const settings = parseKubeRegistryConfig(
      {
        source: 'kubernetes',
        kubeconfig,
        context: 'gw',
        agentPort: 10350,
        backoff: { initial: 20, max: 100 },
      },
      'test',
      tmp,
    )
    const reg = createKubeRegistry(settings, { env: {} })
    t.after(() => reg.close())
    await reg.start()
    assert.equal(reg.getPod('ns', 'p')?.nodeName, 'node-b')
    assert.ok(server.requests.length >= 2)
    assert.ok(
      server.requests.every((r) => r.auth === 'cert'),
      'every request authenticated by certificate',
    )

    const stranger: KubeCredentials = {
      server: server.url,
      ca: Buffer.from(pki.caCert),
      cert: Buffer.from(pki.strangerCert),
      key: Buffer.from(pki.strangerKey),
      insecureSkipTlsVerify: false,
      source: 'stranger',
    }
    const { reg: bad } = newRegistry(t, stranger)
    void bad.start().catch(() => undefined)
    await until(() => bad.status().lastError !== undefined, 'a failure')
    assert.equal(bad.isReady(), false)
    assert.match(bad.status().lastError!.message, /401 Unauthorized/)
  })

  test('a wrong token: clear error, not ready, retries with backoff, recovers when the token file is fixed', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    const tokenFile = join(tmp, 'wrong-token')
    writeFileSync(tokenFile, 'not-the-token\n')
    const creds: KubeCredentials = { ...tokenCredentials(server), tokenFile }
    delete creds.token
    const { reg } = newRegistry(t, creds, {
      backoff: { initialMs: 20, maxMs: 1000 },
      random: () => 1, // no jitter: delays 20, 40, 80, 160 ms
      tokenRefreshMs: 3_600_000, // only a 401 makes it re-read the file
    })
    const readyEvents: boolean[] = []
    reg.on('ready', (r) => readyEvents.push(r))
    let settled = false
    void reg.start().then(
      () => (settled = true),
      () => (settled = true),
    )
    const nodeLists = (): number[] =>
      server
        .requestsTo('/api/v1/nodes', 'list')
        .filter((r) => r.status === 401)
        .map((r) => r.at)
    await until(() => nodeLists().length >= 5, '5 refused attempts')
    assert.equal(reg.isReady(), false)
    assert.equal(settled, false, 'start() keeps waiting while retrying')
    const err = reg.status().lastError!
    assert.equal(err.code, 'PFG_ERR_CONFIG_INVALID')
    assert.match(
      err.message,
      /GET \/api\/v1\/(pods|nodes): 401 Unauthorized: Unauthorized \(the API server rejected the gateway's credentials from test\)/,
    )
    const at = nodeLists()
    const gaps = at.slice(1).map((v, i) => v - at[i]!)
    t.diagnostic(`gaps between refused attempts (ms): ${gaps.join(', ')}`)
    assert.ok(gaps[0]! >= 15, `first retry after ~20 ms, got ${gaps[0]}`)
    assert.ok(gaps[3]! >= 120, `fourth retry after ~160 ms, got ${gaps[3]}`)
    assert.ok(gaps[3]! > gaps[0]!, 'delays grow')

    writeFileSync(tokenFile, 'test-token\n')
    await until(() => reg.isReady(), 'ready after the fix', 5000)
    assert.deepEqual(readyEvents, [true])
    assert.equal(settled, true)
  })

  test('403 from RBAC names the permissions needed', async (t) => {
    const server = await startServer(t)
    server.forbidden.add('nodes')
    const { reg } = newRegistry(t, tokenCredentials(server))
    void reg.start().catch(() => undefined)
    await until(() => reg.status().lastError !== undefined, 'a failure')
    assert.equal(reg.isReady(), false)
    assert.match(
      reg.status().lastError!.message,
      /403 Forbidden: nodes is forbidden.*list and watch on pods and nodes/,
    )
  })

  test('in-cluster credentials; the rotated token file is re-read', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    server.setTokens(['sa-token-1'])
    const dir = join(tmp, 'serviceaccount')
    rmSync(dir, { recursive: true, force: true })
    const { mkdirSync } = await import('node:fs')
    mkdirSync(dir)
    writeFileSync(join(dir, 'token'), 'sa-token-1')
    writeFileSync(join(dir, 'ca.crt'), pki.caCert)
    writeFileSync(join(dir, 'namespace'), 'pfgate\n')
    const port = new URL(server.url).port
    const settings = parseKubeRegistryConfig(
      {
        source: 'kubernetes',
        agentPort: 10350,
        backoff: { initial: 20, max: 100 },
        tokenRefresh: '1h',
      },
      'test',
      tmp,
    )
    const reg = createKubeRegistry(settings, {
      env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: port },
      serviceAccountDir: dir,
    })
    t.after(() => reg.close())
    await reg.start()
    await until(() => server.watchCount === 2, 'watches open')

    // The kubelet rotates the token; the old one stops working; connections break.
    writeFileSync(join(dir, 'token'), 'sa-token-2')
    server.setTokens(['sa-token-2'])
    await server.dropConnections()
    server.upsertPod({ namespace: 'x', name: 'after-rotation', nodeName: 'node-a' })
    await until(
      () => reg.getPod('x', 'after-rotation') !== undefined,
      'an event after the rotation',
    )
    assert.ok(
      server.requests.some((r) => r.auth === 'rejected'),
      'the old token was refused once',
    )
    assert.equal(listCount(server, '/api/v1/pods'), 1, 'resumed the watch, no relist')
  })

  test('bookmarks advance the resourceVersion; server timeouts resume the watch without relisting', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    const { reg } = newRegistry(t, tokenCredentials(server))
    await reg.start()
    await until(() => server.watchCount === 2, 'watches open')

    // Node changes advance the global version; the pod watch learns it from a bookmark.
    server.upsertNode({ name: 'node-x' })
    server.upsertNode({ name: 'node-y' })
    server.sendBookmark()
    const rv = server.resourceVersion
    await until(
      () => reg.status().resources.every((r) => r.resourceVersion === rv),
      'bookmark versions',
    )
    server.endWatches()
    await until(
      () => server.requestsTo('/api/v1/pods', 'watch').length === 2 && server.watchCount === 2,
      'watches re-opened',
    )
    const rewatch = server.requestsTo('/api/v1/pods', 'watch')[1]!
    assert.equal(rewatch.query.resourceVersion, rv, 'the new watch starts at the bookmark')
    assert.equal(rewatch.query.allowWatchBookmarks, 'true')

    // Short server-side timeouts: every watch ends cleanly; events keep flowing.
    server.maxWatchMs = 100
    server.endWatches()
    for (let i = 0; i < 5; i++) {
      server.upsertPod({ namespace: 'ns', name: `p${i}`, nodeName: 'node-a' })
      await sleep(60)
    }
    await until(() => reg.listPods().length === 5, 'five pods through rotating watches')
    const watches = server.requestsTo('/api/v1/pods', 'watch').length
    assert.ok(watches >= 4, `watches re-opened after timeouts (${watches})`)
    assert.equal(listCount(server, '/api/v1/pods'), 1, 'never relisted')
    t.diagnostic(`pod watches opened: ${watches}, lists: 1`)
  })

  test('410 Gone as an HTTP status on reconnect: relists, and the missed changes become events', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    server.goneMode = 'status'
    server.upsertPod({ namespace: 'ns', name: 'stays', nodeName: 'node-a' })
    server.upsertPod({ namespace: 'ns', name: 'goes', nodeName: 'node-a' })
    server.upsertPod({ namespace: 'ns', name: 'moves', nodeName: 'node-a' })
    const { reg, events, nodeEvents } = newRegistry(t, tokenCredentials(server))
    await reg.start()
    await until(() => server.watchCount === 2, 'watches open')
    await server.dropConnections()
    // Changes while we are disconnected, then compaction: a resumed watch cannot replay them.
    server.deletePod('ns', 'goes')
    server.upsertPod({ namespace: 'ns', name: 'new', nodeName: 'node-b' })
    server.deletePod('ns', 'moves')
    server.upsertPod({ namespace: 'ns', name: 'moves', nodeName: 'node-b' })
    server.upsertNode({
      name: 'node-b',
      addresses: [{ type: 'Hostname', address: 'node-b.changed' }],
    })
    server.compact()
    await until(
      () =>
        reg.getPod('ns', 'goes') === undefined &&
        reg.getPod('ns', 'new') !== undefined &&
        reg.getPod('ns', 'moves')?.nodeName === 'node-b' &&
        reg.getNode('node-b')?.address === 'node-b.changed',
      'the relisted view',
    )
    assert.ok(
      server.requests.some((r) => r.status === 410),
      'a 410 was served',
    )
    assert.equal(listCount(server, '/api/v1/pods'), 2, 'exactly one relist of pods')
    assert.equal(reg.isReady(), true, 'stays ready through the relist')
    assert.deepEqual(events, [
      ['added', 'ns/goes', 'node-a'],
      ['added', 'ns/moves', 'node-a'],
      ['added', 'ns/stays', 'node-a'],
      // The relist's difference: nothing is lost, a re-created pod is delete + add.
      ['deleted', 'ns/goes', 'node-a'],
      ['deleted', 'ns/moves', 'node-a'],
      ['added', 'ns/moves', 'node-b'],
      ['added', 'ns/new', 'node-b'],
    ])
    assert.deepEqual(nodeEvents.slice(2), [['modified', 'node-b', 'node-b.changed']])
  })

  test('410 as an ERROR event on an open watch: relists without losing events', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    server.goneMode = 'event'
    server.upsertPod({ namespace: 'ns', name: 'a', nodeName: 'node-a' })
    const { reg, events } = newRegistry(t, tokenCredentials(server))
    await reg.start()
    await until(() => server.watchCount === 2, 'watches open')
    // Changes the open watch never sees (the watcher "fell behind"), then an ERROR 410.
    server.upsertPod({ namespace: 'ns', name: 'b', nodeName: 'node-b' }, { notify: false })
    server.deletePod('ns', 'a', { notify: false })
    server.compact()
    server.expireWatches()
    await until(
      () => reg.getPod('ns', 'b') !== undefined && reg.getPod('ns', 'a') === undefined,
      'the relisted view',
    )
    assert.equal(listCount(server, '/api/v1/pods'), 2, 'one relist')
    assert.deepEqual(events, [
      ['added', 'ns/a', 'node-a'],
      ['deleted', 'ns/a', 'node-a'],
      ['added', 'ns/b', 'node-b'],
    ])
    // And the watch after the relist works.
    server.upsertPod({ namespace: 'ns', name: 'c', nodeName: 'node-a' })
    await until(() => reg.getPod('ns', 'c') !== undefined, 'an event after the relist')
  })

  test('an abrupt drop in the middle of an event: reconnects with backoff and resumes from the last version', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    server.upsertPod({ namespace: 'ns', name: 'a', nodeName: 'node-a' })
    const { reg } = newRegistry(t, tokenCredentials(server))
    await reg.start()
    await until(() => server.watchCount === 2, 'watches open')
    server.upsertPod({ namespace: 'ns', name: 'seen', nodeName: 'node-a' })
    await until(() => reg.getPod('ns', 'seen') !== undefined, 'an event before the drop')
    const lastRv = reg.status().resources[0]!.resourceVersion
    const before = server.requestsTo('/api/v1/pods', 'watch').length
    await server.dropConnections({ partial: true })
    server.upsertPod({ namespace: 'ns', name: 'while-down', nodeName: 'node-b' })
    server.deletePod('ns', 'a')
    await until(
      () => reg.getPod('ns', 'while-down') !== undefined && reg.getPod('ns', 'a') === undefined,
      'the changes made while disconnected',
    )
    const resumed = server.requestsTo('/api/v1/pods', 'watch')[before]!
    assert.equal(resumed.query.resourceVersion, lastRv, 'resumed from the last version seen')
    assert.equal(listCount(server, '/api/v1/pods'), 1, 'no relist')
    assert.match(
      reg.status().lastError?.message ?? '',
      /ended inside an event|other side closed|socket/i,
    )
  })

  test('an event over the size bound is not trusted: relist', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    const { reg } = newRegistry(t, tokenCredentials(server), { maxEventBytes: 4096 })
    await reg.start()
    await until(() => server.watchCount === 2, 'watches open')
    server.upsertPod({
      namespace: 'ns',
      name: 'big',
      nodeName: 'node-a',
      annotations: { blob: 'x'.repeat(8000) },
    })
    await until(() => reg.getPod('ns', 'big') !== undefined, 'the big pod through a relist')
    assert.equal(listCount(server, '/api/v1/pods'), 2)
    assert.match(reg.status().lastError!.message, /longer than 4096 bytes/)
  })

  test('close() before the first sync rejects start(); close() leaves no sockets or timers', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    for (let i = 0; i < 30; i++)
      server.upsertPod({ namespace: 'ns', name: `p${i}`, nodeName: 'node-a' })
    // Let earlier tests' sockets finish closing, then take the baseline.
    await sleep(50)
    const count = (): Record<string, number> => {
      const out: Record<string, number> = {}
      for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1
      return out
    }
    const baseline = count()

    // 1. Closed while waiting for a held list.
    const release = server.holdLists()
    const { reg: early } = newRegistry(t, tokenCredentials(server))
    const start = early.start()
    await until(() => server.requests.length >= 2, 'lists in flight')
    await early.close()
    await assert.rejects(
      start,
      (err: unknown) => isAppError(err) && err.code === 'PFG_ERR_ROUTE_NOT_READY',
    )
    release()

    // 2. Closed while watching, with a token-refused one in backoff beside it.
    const { reg } = newRegistry(t, tokenCredentials(server))
    const { reg: refused } = newRegistry(t, tokenCredentials(server, 'wrong'), {
      backoff: { initialMs: 5000, maxMs: 5000 },
    })
    void refused.start().catch(() => undefined)
    await reg.start()
    await until(() => server.watchCount === 2, 'watches open')
    await until(() => refused.status().lastError !== undefined, 'refused is in backoff')
    const during = count()
    const readyEvents: boolean[] = []
    reg.on('ready', (r) => readyEvents.push(r))
    const t0 = performance.now()
    await Promise.all([reg.close(), refused.close()])
    const closeMs = performance.now() - t0
    await reg.close() // idempotent
    assert.equal(reg.isReady(), false)
    assert.deepEqual(readyEvents, [false])
    await until(() => server.watchCount === 0, 'the server sees the watches closed')
    await until(
      () => {
        const now = count()
        return Object.keys({ ...now, ...baseline }).every(
          (k) => (now[k] ?? 0) <= (baseline[k] ?? 0),
        )
      },
      `active resources back to the baseline ${JSON.stringify(baseline)}`,
      3000,
    )
    t.diagnostic(
      `active resources: baseline ${JSON.stringify(baseline)}, while running ${JSON.stringify(during)}, after close ${JSON.stringify(count())}; close took ${closeMs.toFixed(1)} ms`,
    )
    // Node names TLS client sockets TCPSocketWrap (20) or TLSWrap: count both.
    const sockets = (c: Record<string, number>): number => (c.TCPSocketWrap ?? 0) + (c.TLSWrap ?? 0)
    assert.ok(sockets(during) > sockets(baseline), 'the check can see our connections')
    assert.ok(closeMs < 1000, 'close does not wait for the 5 s backoff')
    await assert.rejects(reg.start(), /registry closed/)
  })

  test('2000 pods in 4 pages: time to sync', async (t) => {
    const server = await startServer(t)
    seedNodes(server)
    for (let i = 0; i < 2000; i++) {
      server.upsertPod({
        namespace: `ns-${i % 20}`,
        name: `pod-${i}`,
        nodeName: i % 2 ? 'node-a' : 'node-b',
        labels: { app: 'a', idx: String(i) },
      })
    }
    const { reg } = newRegistry(t, tokenCredentials(server))
    const t0 = performance.now()
    await reg.start()
    const ms = performance.now() - t0
    assert.equal(reg.listPods().length, 2000)
    assert.equal(server.requestsTo('/api/v1/pods', 'list').length, 4)
    t.diagnostic(`synced 2000 pods in ${ms.toFixed(0)} ms`)
  })
})
