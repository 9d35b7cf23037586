/**
 * Picking a ready pod for a service or workload connection: the selector, readiness,
 * service ports and named target ports, authorization per pod, and the errors a client
 * sees when nothing fits. The registry is the real static one, fed a view.
 *
 * @module
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { resolveTarget, selects } from '../../../src/gateway/registry/resolve-target.js'
import { StaticRegistry, parseRegistry } from '../../../src/gateway/registry/static-registry.js'
import type { PodInfo } from '../../../src/gateway/registry/types.js'
import { isAppError } from '../../../src/shared/errors.js'

function registry(pods: Record<string, unknown>[]): StaticRegistry {
  return new StaticRegistry(
    parseRegistry(
      {
        nodes: [
          { name: 'node-a', address: '127.0.0.1', port: 1 },
          { name: 'node-b', address: '127.0.0.1', port: 2 },
        ],
        pods,
        services: [
          {
            namespace: 'default',
            name: 'web',
            selector: { app: 'web' },
            ports: [
              { name: 'http', port: 80, targetPort: 'http' },
              { name: 'metrics', port: 9090, targetPort: 9100 },
              { port: 7000 },
            ],
          },
          { namespace: 'default', name: 'manual', ports: [{ port: 80 }] },
        ],
        workloads: [
          { kind: 'Deployment', namespace: 'default', name: 'web', selector: { app: 'web' } },
          { kind: 'StatefulSet', namespace: 'default', name: 'db', selector: { app: 'db' } },
        ],
      },
      'test',
    ),
  )
}

const web = (
  name: string,
  node: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> => ({
  namespace: 'default',
  name,
  node,
  labels: { app: 'web', 'pod-template-hash': 'abc' },
  ports: [{ name: 'http', containerPort: 8080 }],
  ...extra,
})

const all = (): boolean => true
const codeOf = (fn: () => unknown): string => {
  try {
    fn()
  } catch (err) {
    assert.ok(isAppError(err), String(err))
    return `${err.code} ${err.message}`
  }
  return 'no error'
}

test('a selector selects pods holding all its labels; an empty or missing one selects none', () => {
  assert.ok(selects({ app: 'web' }, { app: 'web', x: 'y' }))
  assert.ok(!selects({ app: 'web', tier: 'a' }, { app: 'web' }))
  assert.ok(!selects({}, { app: 'web' }))
  assert.ok(!selects(undefined, { app: 'web' }))
})

test('a service port maps to the named target port of the pod picked, per connection', () => {
  const r = registry([web('web-1', 'node-a'), web('web-2', 'node-b')])
  const seen = new Set<string>()
  for (let i = 0; i < 2; i++) {
    const got = resolveTarget(
      r,
      { namespace: 'default', kind: 'service', name: 'web', port: 80 },
      all,
      () => i,
    )
    assert.equal(got.port, 8080)
    assert.equal(got.asked, 'svc/web:80')
    seen.add(got.pod.name)
  }
  assert.deepEqual([...seen].sort(), ['web-1', 'web-2'])
  // By service port name; a numeric target port; no target port = the port itself.
  const byName = resolveTarget(
    r,
    { namespace: 'default', kind: 'service', name: 'web', port: 'metrics' },
    all,
  )
  assert.equal(byName.port, 9100)
  assert.equal(byName.asked, 'svc/web:metrics')
  assert.equal(
    resolveTarget(r, { namespace: 'default', kind: 'service', name: 'web', port: 7000 }, all).port,
    7000,
  )
})

test('only Running, ready, scheduled pods are picked; none gives a 503 per connection', () => {
  const r = registry([
    web('web-1', 'node-a', { ready: false }),
    web('web-2', 'node-b', { phase: 'Pending' }),
    web('web-3', ''),
    web('web-4', 'node-b'),
  ])
  for (let i = 0; i < 10; i++) {
    const got = resolveTarget(
      r,
      { namespace: 'default', kind: 'deployment', name: 'web', port: 'http' },
      all,
    )
    assert.equal(got.pod.name, 'web-4')
    assert.equal(got.port, 8080)
    assert.equal(got.asked, 'deploy/web:http')
  }
  r.replace({
    ...parseRegistry({ pods: [web('web-1', 'node-a', { ready: false })] }, 't'),
    services: [],
    workloads: [],
  })
  assert.equal(
    codeOf(() =>
      resolveTarget(r, { namespace: 'default', kind: 'deployment', name: 'web', port: 80 }, all),
    ),
    'PFG_ERR_ROUTE_TARGET_NOT_FOUND deployments.apps "web" not found',
  )
  const r2 = registry([web('web-1', 'node-a', { ready: false })])
  assert.equal(
    codeOf(() =>
      resolveTarget(r2, { namespace: 'default', kind: 'service', name: 'web', port: 80 }, all),
    ),
    'PFG_ERR_ROUTE_NO_READY_POD no endpoints available for service "web"',
  )
  assert.equal(
    codeOf(() =>
      resolveTarget(r2, { namespace: 'default', kind: 'deployment', name: 'web', port: 80 }, all),
    ),
    'PFG_ERR_ROUTE_NO_READY_POD no ready pods available for deployment "web"',
  )
  // A service without a selector (manual endpoints) has no pod here.
  assert.match(
    codeOf(() =>
      resolveTarget(r2, { namespace: 'default', kind: 'service', name: 'manual', port: 80 }, all),
    ),
    /^PFG_ERR_ROUTE_NO_READY_POD/,
  )
})

test('unknown services, service ports and named ports are refused in kubectl words', () => {
  const r = registry([web('web-1', 'node-a')])
  assert.equal(
    codeOf(() =>
      resolveTarget(r, { namespace: 'default', kind: 'service', name: 'nosuch', port: 80 }, all),
    ),
    'PFG_ERR_ROUTE_TARGET_NOT_FOUND services "nosuch" not found',
  )
  assert.equal(
    codeOf(() =>
      resolveTarget(r, { namespace: 'other', kind: 'service', name: 'web', port: 80 }, all),
    ),
    'PFG_ERR_ROUTE_TARGET_NOT_FOUND services "web" not found',
  )
  assert.equal(
    codeOf(() =>
      resolveTarget(r, { namespace: 'default', kind: 'service', name: 'web', port: 81 }, all),
    ),
    'PFG_ERR_ROUTE_BAD_PORT Service web does not have a service port 81',
  )
  assert.equal(
    codeOf(() =>
      resolveTarget(r, { namespace: 'default', kind: 'statefulset', name: 'db', port: 80 }, all),
    ),
    'PFG_ERR_ROUTE_NO_READY_POD no ready pods available for statefulset "db"',
  )
  assert.equal(
    codeOf(() =>
      resolveTarget(
        r,
        { namespace: 'default', kind: 'deployment', name: 'web', port: 'grpc' },
        all,
      ),
    ),
    `PFG_ERR_ROUTE_BAD_PORT no ready pod of deployment "web" has a port named 'grpc'`,
  )
})

test('pods the user may not forward to are never picked; none allowed is a 403', () => {
  const r = registry([web('web-1', 'node-a'), web('web-2', 'node-b')])
  const onlyTwo = (pod: PodInfo, port: number): boolean => pod.name === 'web-2' && port === 8080
  for (let i = 0; i < 10; i++) {
    assert.equal(
      resolveTarget(r, { namespace: 'default', kind: 'service', name: 'web', port: 80 }, onlyTwo)
        .pod.name,
      'web-2',
    )
  }
  assert.match(
    codeOf(() =>
      resolveTarget(r, { namespace: 'default', kind: 'service', name: 'web', port: 9090 }, onlyTwo),
    ),
    /^PFG_ERR_AUTH_FORBIDDEN /,
  )
})

test('the static registry file validates services and workloads', () => {
  assert.throws(
    () =>
      parseRegistry(
        { workloads: [{ kind: 'DaemonSet', namespace: 'd', name: 'x', selector: {} }] },
        'f',
      ),
    /kind/,
  )
  assert.throws(
    () =>
      parseRegistry(
        { services: [{ namespace: 'd', name: 'x', ports: [{ port: 80, targetPort: 0 }] }] },
        'f',
      ),
    /targetPort/,
  )
})
