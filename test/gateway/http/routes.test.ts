/**
 * Every Fastify route of the gateway, in process with `inject`: health and readiness,
 * the Kubernetes API facade, the admin API and the node proxy's refusals, with the
 * authentication hook's answers (401, 403, default deny) and the `request.denied`
 * record each refusal leaves. Pins what clients see: status, content type and body.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { InjectOptions } from 'fastify'
import { inProcessGateway, recordsOf as recordsIn } from '../../helpers/in-process-gateway.js'
import type { InProcessGateway } from '../../helpers/in-process-gateway.js'

/** A Kubernetes failure Status as the gateway writes it (`ref`s replaced by `REF`). */
function failure(code: number, reason: string, message: string, cause?: string): unknown {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    code,
    ...(cause !== undefined ? { details: { causes: [{ reason: cause, message }] } } : {}),
  }
}

const JSON_TYPE = 'application/json; charset=utf-8'
const TABLE = 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json'

interface Answer {
  status: number
  type: string | undefined
  body: unknown
  headers: Record<string, unknown>
}

async function call(g: InProcessGateway, options: InjectOptions): Promise<Answer> {
  const r = await g.gateway.app.inject(options)
  const type = r.headers['content-type'] as string | undefined
  const text = r.body.replace(/\(ref [0-9a-f]{8}\)/g, '(ref REF)')
  return {
    status: r.statusCode,
    type,
    body: type?.startsWith('application/json') === true ? JSON.parse(text) : text,
    headers: r.headers,
  }
}

function bearer(token: string, extra: Record<string, string> = {}): Record<string, string> {
  return { authorization: `Bearer ${token}`, ...extra }
}

function recordsOf(g: InProcessGateway, run: () => Promise<unknown>): Promise<unknown[]> {
  return recordsIn(g.audit, run)
}

const DENIED = {
  schema: 'pfgate.audit/v2',
  type: 'request.denied',
  gateway: 'gw-test',
  sourceAddress: '127.0.0.1',
  userAgent: 'lightMyRequest',
}

describe('gateway routes (ready registry)', () => {
  let g: InProcessGateway
  let alice: string
  let root: string
  let bob: string
  before(async () => {
    g = await inProcessGateway()
    alice = await g.token('alice')
    root = await g.token('root')
    bob = await g.token('bob', ['viewers'])
  })
  after(() => g.close())

  test('health: /healthz, /livez, /readyz are public and plain', async () => {
    for (const url of ['/healthz', '/livez', '/readyz']) {
      const r = await call(g, { url })
      assert.deepEqual([r.status, r.type, r.body], [200, 'text/plain; charset=utf-8', 'ok'], url)
    }
  })

  test('/version is public and names the Kubernetes version kubectl picks its protocol by', async () => {
    const r = await call(g, { url: '/version' })
    assert.equal(r.status, 200)
    assert.equal(r.type, JSON_TYPE)
    assert.deepEqual(r.body, {
      major: '1',
      minor: '33',
      gitVersion: 'v1.33.0-pfgate',
      gitCommit: 'pfgate',
      gitTreeState: 'clean',
      buildDate: '2026-01-01T00:00:00Z',
      goVersion: `n/a (pfgate on node ${process.version})`,
      compiler: 'pfgate',
      platform: `${process.platform}/${process.arch}`,
    })
  })

  test('no token: 401 with a challenge and a request.denied record, on any non-public path', async () => {
    for (const url of [
      '/api/v1/namespaces/default/pods/echo',
      '/nowhere?x=1',
      '/admin/v1/streams',
    ]) {
      let r: Answer | undefined
      const recs = await recordsOf(g, async () => (r = await call(g, { url })))
      assert.equal(r?.status, 401, url)
      assert.equal(r?.headers['www-authenticate'], 'Bearer realm="pfgate"')
      assert.deepEqual(
        r?.body,
        failure(401, 'Unauthorized', 'Unauthorized', 'PFG_ERR_AUTH_MISSING'),
      )
      const path = url.split('?')[0] as string
      const target = url.includes('/pods/') ? { namespace: 'default', pod: 'echo' } : {}
      assert.deepEqual(recs, [
        {
          ...DENIED,
          method: 'GET',
          path,
          ...target,
          reason: 'unauthenticated',
          status: 401,
          error: { code: 'PFG_ERR_AUTH_MISSING', message: 'Unauthorized' },
        },
      ])
    }
  })

  test('a bad token: 401 with a ref the record explains', async () => {
    let r: Answer | undefined
    const recs = await recordsOf(
      g,
      async () => (r = await call(g, { url: '/api/v1', headers: bearer('nope') })),
    )
    assert.equal(r?.status, 401)
    assert.deepEqual(
      r?.body,
      failure(401, 'Unauthorized', 'Unauthorized (ref REF)', 'PFG_ERR_AUTH_INVALID'),
    )
    assert.deepEqual(recs, [
      {
        ...DENIED,
        method: 'GET',
        path: '/api/v1',
        reason: 'unauthenticated',
        status: 401,
        ref: 'REF',
        error: {
          code: 'PFG_ERR_AUTH_INVALID',
          message: 'Unauthorized (ref REF): ERR_JWS_INVALID: Invalid Compact JWS',
        },
      },
    ])
  })

  test('impersonation headers are refused after authentication', async () => {
    let r: Answer | undefined
    const url = '/api/v1/namespaces/default/pods/echo'
    const recs = await recordsOf(
      g,
      async () =>
        (r = await call(g, { url, headers: bearer(alice, { 'impersonate-user': 'root' }) })),
    )
    const message =
      'users "root" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope: pfgate does not support impersonation (impersonate-user)'
    assert.equal(r?.status, 403)
    assert.deepEqual(r?.body, failure(403, 'Forbidden', message, 'PFG_ERR_AUTH_IMPERSONATION'))
    assert.deepEqual(recs, [
      {
        ...DENIED,
        user: 'alice',
        groups: ['system:authenticated'],
        authSource: 'jwt',
        method: 'GET',
        path: url,
        namespace: 'default',
        pod: 'echo',
        reason: 'impersonation',
        status: 403,
        error: { code: 'PFG_ERR_AUTH_IMPERSONATION', message },
      },
    ])
  })

  test('the pod: object, table, forbidden (no existence leak), not found, bad name', async () => {
    const url = '/api/v1/namespaces/default/pods/echo'
    const obj = await call(g, { url, headers: bearer(alice) })
    assert.equal(obj.status, 200)
    assert.equal(obj.type, JSON_TYPE)
    const pod = obj.body as { kind: string; metadata: Record<string, unknown>; spec: unknown }
    assert.equal(pod.kind, 'Pod')
    assert.equal(pod.metadata.uid, '11111111-1111-4111-8111-111111111111')
    assert.deepEqual(pod.spec, {
      nodeName: 'node-a',
      containers: [
        {
          name: 'main',
          image: 'pfgate.local/demo',
          ports: [{ name: 'tcp', containerPort: 7000, protocol: 'TCP' }],
        },
      ],
    })
    const table = await call(g, { url, headers: bearer(alice, { accept: TABLE }) })
    assert.equal(table.status, 200)
    const rows = (table.body as { kind: string; rows: { cells: unknown[] }[] }).rows
    assert.equal((table.body as { kind: string }).kind, 'Table')
    assert.deepEqual(
      rows.map((x) => x.cells[0]),
      ['echo'],
    )

    for (const [who, user, name] of [
      [alice, 'alice', 'secret'],
      [root, 'root', 'gone'],
    ] as const) {
      let r: Answer | undefined
      const path = `/api/v1/namespaces/default/pods/${name}`
      const recs = await recordsOf(
        g,
        async () => (r = await call(g, { url: path, headers: bearer(who) })),
      )
      const message = `pods "${name}" is forbidden: user "${user}" cannot get resource "pods" in namespace "default"`
      assert.equal(r?.status, 403)
      assert.deepEqual(r?.body, failure(403, 'Forbidden', message, 'PFG_ERR_AUTH_FORBIDDEN'))
      assert.deepEqual(recs, [
        {
          ...DENIED,
          user,
          groups: ['system:authenticated'],
          authSource: 'jwt',
          method: 'GET',
          path,
          namespace: 'default',
          pod: name,
          reason: 'forbidden',
          status: 403,
          error: { code: 'PFG_ERR_AUTH_FORBIDDEN', message },
        },
      ])
    }
    const gone = await call(g, { url: '/api/v1/namespaces/other/pods/gone', headers: bearer(bob) })
    assert.equal(gone.status, 404)
    assert.deepEqual(
      gone.body,
      failure(404, 'NotFound', 'pods "gone" not found', 'PFG_ERR_ROUTE_POD_NOT_FOUND'),
    )
    const bad = await call(g, {
      url: '/api/v1/namespaces/Bad_NS/pods/echo',
      headers: bearer(alice),
    })
    assert.equal(bad.status, 400)
    assert.deepEqual(
      bad.body,
      failure(
        400,
        'BadRequest',
        `invalid namespace "Bad_NS": must be a DNS-1123 label (lower-case alphanumerics and '-', at most 63 characters)`,
        'PFG_ERR_ROUTE_BAD_NAME',
      ),
    )
    const badPod = await call(g, {
      url: '/api/v1/namespaces/default/pods/Echo',
      headers: bearer(alice),
    })
    assert.equal(badPod.status, 400)
  })

  test('pod lists: what the user may forward to, by namespace, label, sorted; table; refusals', async () => {
    const names = async (url: string, token: string): Promise<string[]> => {
      const r = await call(g, { url, headers: bearer(token) })
      assert.equal(r.status, 200, url)
      assert.equal(r.type, JSON_TYPE)
      const list = r.body as {
        kind: string
        items: { metadata: { namespace: string; name: string } }[]
      }
      assert.equal(list.kind, 'PodList')
      return list.items.map((p) => `${p.metadata.namespace}/${p.metadata.name}`)
    }
    assert.deepEqual(await names('/api/v1/namespaces/default/pods', alice), [
      'default/echo',
      'default/web',
    ])
    assert.deepEqual(await names('/api/v1/pods', alice), ['default/echo', 'default/web'])
    assert.deepEqual(await names('/api/v1/pods', bob), ['other/db'])
    assert.deepEqual(await names('/api/v1/namespaces/default/pods', bob), [])
    assert.deepEqual(await names('/api/v1/pods?labelSelector=app%3Dweb', alice), ['default/web'])
    assert.deepEqual(await names('/api/v1/pods?labelSelector=app!%3Dweb', alice), ['default/echo'])
    const table = await call(g, {
      url: '/api/v1/namespaces/default/pods',
      headers: bearer(alice, { accept: TABLE }),
    })
    assert.deepEqual(
      (table.body as { rows: { cells: unknown[] }[] }).rows.map((x) => x.cells[0]),
      ['echo', 'web'],
    )
    const refusals: [string, number, unknown][] = [
      [
        '/api/v1/pods?watch=true',
        405,
        failure(
          405,
          'MethodNotAllowed',
          'the server does not allow this method on the requested resource (watch pods)',
          'PFG_ERR_ROUTE_METHOD_NOT_ALLOWED',
        ),
      ],
      [
        '/api/v1/namespaces/default/pods?watch=1',
        405,
        failure(
          405,
          'MethodNotAllowed',
          'the server does not allow this method on the requested resource (watch pods)',
          'PFG_ERR_ROUTE_METHOD_NOT_ALLOWED',
        ),
      ],
      [
        '/api/v1/pods?fieldSelector=a%3Db',
        400,
        failure(
          400,
          'BadRequest',
          'field selectors are not supported on pods here',
          'PFG_ERR_ROUTE_BAD_QUERY',
        ),
      ],
      [
        '/api/v1/pods?labelSelector=%3D%3D',
        400,
        failure(
          400,
          'BadRequest',
          'unable to parse label selector "==": invalid label key',
          'PFG_ERR_ROUTE_BAD_QUERY',
        ),
      ],
    ]
    for (const [url, status, body] of refusals) {
      const r = await call(g, { url, headers: bearer(alice) })
      assert.deepEqual([r.status, r.body], [status, body], url)
    }
    const bad = await call(g, { url: '/api/v1/namespaces/Bad_NS/pods', headers: bearer(alice) })
    assert.equal(bad.status, 400)
  })

  test('discovery: legacy documents, aggregated ones on request, the core resource list', async () => {
    const api = await call(g, { url: '/api', headers: bearer(alice, { host: 'gw.example:8443' }) })
    assert.deepEqual([api.status, api.type, api.headers.vary], [200, JSON_TYPE, 'Accept'])
    assert.deepEqual(api.body, {
      kind: 'APIVersions',
      versions: ['v1'],
      serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: 'gw.example:8443' }],
    })
    const apis = await call(g, { url: '/apis', headers: bearer(alice) })
    assert.deepEqual([apis.status, apis.type, apis.headers.vary], [200, JSON_TYPE, 'Accept'])
    const apps = { groupVersion: 'apps/v1', version: 'v1' }
    assert.deepEqual(apis.body, {
      kind: 'APIGroupList',
      apiVersion: 'v1',
      groups: [{ name: 'apps', versions: [apps], preferredVersion: apps }],
    })
    for (const [root, v] of [
      ['api', 'v2'],
      ['apis', 'v2beta1'],
    ] as const) {
      const accept = `application/json;g=apidiscovery.k8s.io;v=${v};as=APIGroupDiscoveryList,application/json`
      const r = await call(g, { url: `/${root}`, headers: bearer(alice, { accept }) })
      assert.equal(r.status, 200)
      // Verbatim, without a charset, as kube-apiserver sends it.
      assert.equal(r.type, `application/json;g=apidiscovery.k8s.io;v=${v};as=APIGroupDiscoveryList`)
      assert.equal(r.headers.vary, 'Accept')
      const body = r.body as { kind: string; apiVersion: string; items: unknown[] }
      assert.deepEqual(
        [body.kind, body.apiVersion],
        ['APIGroupDiscoveryList', `apidiscovery.k8s.io/${v}`],
      )
      assert.equal(body.items.length, 1, 'the core group under /api, apps under /apis')
    }
    const v1 = await call(g, { url: '/api/v1', headers: bearer(alice) })
    assert.deepEqual([v1.status, v1.type], [200, JSON_TYPE])
    assert.deepEqual(v1.body, {
      kind: 'APIResourceList',
      groupVersion: 'v1',
      resources: [
        {
          name: 'pods',
          singularName: 'pod',
          namespaced: true,
          kind: 'Pod',
          verbs: ['get', 'list'],
          shortNames: ['po'],
        },
        {
          name: 'pods/portforward',
          singularName: '',
          namespaced: true,
          kind: 'PodPortForwardOptions',
          verbs: ['create', 'get'],
        },
        {
          name: 'services',
          singularName: 'service',
          namespaced: true,
          kind: 'Service',
          verbs: ['get'],
          shortNames: ['svc'],
        },
      ],
    })
  })

  test('writes to a pod are 405; port-forward without an upgrade is 400; native over HTTP/1.1 is 400', async () => {
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE'] as const) {
      const r = await call(g, {
        method,
        url: '/api/v1/namespaces/default/pods/echo',
        headers: bearer(alice),
      })
      assert.equal(r.status, 405, method)
      assert.deepEqual(
        r.body,
        failure(
          405,
          'MethodNotAllowed',
          `the server does not allow this method on the requested resource (${method} pods)`,
          'PFG_ERR_ROUTE_METHOD_NOT_ALLOWED',
        ),
      )
    }
    for (const [method, url] of [
      ['POST', '/api/v1/namespaces/default/pods/echo/portforward'],
      ['GET', '/api/v1/namespaces/default/pods/echo/portforward'],
      ['GET', '/api/v1/nodes/node-a/proxy/portForward/default/echo'],
    ] as const) {
      const r = await call(g, { method, url, headers: bearer(alice) })
      assert.equal(r.status, 400, url)
      assert.deepEqual(
        r.body,
        failure(400, 'BadRequest', 'Upgrade request required', 'PFG_ERR_PROTO_UPGRADE_REQUIRED'),
      )
    }
    const native = await call(g, {
      method: 'POST',
      url: '/proxy/nodes/node-a/portForward/default/echo',
      headers: bearer(alice),
    })
    assert.equal(native.status, 400)
    assert.deepEqual(
      native.body,
      failure(
        400,
        'BadRequest',
        'native port-forward needs HTTP/2 (or a SPDY/WebSocket upgrade on the Kubernetes paths)',
        'PFG_ERR_PROTO_HTTP2_REQUIRED',
      ),
    )
  })

  test('errors that are not ours: a Status with their status and message', async () => {
    const r = await call(g, {
      method: 'POST',
      url: '/api/v1/namespaces/default/pods/echo',
      headers: bearer(alice, { 'content-type': 'application/json' }),
      payload: '{',
    })
    assert.equal(r.status, 400)
    assert.deepEqual(
      r.body,
      failure(
        400,
        'BadRequest',
        "Body is not valid JSON but content-type is set to 'application/json'",
      ),
    )
  })

  test('unknown paths: 404 Status once authenticated (no query in the message)', async () => {
    const r = await call(g, { url: '/nowhere?x=1', headers: bearer(alice) })
    assert.equal(r.status, 404)
    assert.deepEqual(
      r.body,
      failure(
        404,
        'NotFound',
        'the server could not find the requested resource (GET /nowhere)',
        'PFG_ERR_ROUTE_NOT_FOUND',
      ),
    )
  })

  test('admin API: admins only; empty tables; unknown ids are 404', async () => {
    for (const [method, url] of [
      ['GET', '/admin/v1/sessions'],
      ['GET', '/admin/v1/streams'],
      ['DELETE', '/admin/v1/streams/s-1'],
      ['DELETE', '/admin/v1/sessions/x-1'],
      ['GET', '/proxy/nodes/node-a/healthz'],
    ] as const) {
      let r: Answer | undefined
      const recs = await recordsOf(
        g,
        async () => (r = await call(g, { method, url, headers: bearer(alice) })),
      )
      const message = 'user "alice" is not an admin'
      assert.equal(r?.status, 403, url)
      assert.deepEqual(r?.body, failure(403, 'Forbidden', message, 'PFG_ERR_AUTH_FORBIDDEN'))
      assert.deepEqual(recs, [
        {
          ...DENIED,
          user: 'alice',
          groups: ['system:authenticated'],
          authSource: 'jwt',
          method,
          path: url,
          reason: 'forbidden',
          status: 403,
          error: { code: 'PFG_ERR_AUTH_FORBIDDEN', message },
        },
      ])
    }
    for (const url of ['/admin/v1/sessions', '/admin/v1/streams']) {
      const r = await call(g, { url, headers: bearer(root) })
      assert.deepEqual([r.status, r.type, r.body], [200, JSON_TYPE, { items: [] }], url)
    }
    for (const [kind, id] of [
      ['stream', 's-1'],
      ['session', 'x-1'],
    ] as const) {
      const r = await call(g, {
        method: 'DELETE',
        url: `/admin/v1/${kind}s/${id}`,
        headers: bearer(root),
      })
      assert.equal(r.status, 404)
      assert.deepEqual(
        r.body,
        failure(404, 'NotFound', `no live ${kind} "${id}"`, 'PFG_ERR_ROUTE_NOT_FOUND'),
      )
    }
  })

  test('node proxy: unknown node and path are 404; an unreachable agent is 502 with a ref', async () => {
    const cases: [string, number, unknown][] = [
      [
        '/proxy/nodes/node-z/healthz',
        404,
        failure(404, 'NotFound', 'nodes "node-z" not found', 'PFG_ERR_ROUTE_NOT_FOUND'),
      ],
      [
        '/proxy/nodes/node-a/etc',
        404,
        failure(
          404,
          'NotFound',
          'the node proxy serves only /healthz and /readyz and /metrics (not /etc)',
          'PFG_ERR_ROUTE_NOT_FOUND',
        ),
      ],
      [
        '/proxy/nodes/node-a/metrics',
        502,
        failure(
          502,
          'ServiceUnavailable',
          'node agent node-a cannot be reached (ref REF)',
          'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
        ),
      ],
    ]
    for (const [url, status, body] of cases) {
      const r = await call(g, { url, headers: bearer(root) })
      assert.deepEqual([r.status, r.body], [status, body], url)
    }
  })
})

describe('gateway routes (registry not synced, audit down, draining)', () => {
  let g: InProcessGateway
  before(async () => {
    g = await inProcessGateway({ ready: false })
  })
  after(() => g.close())

  test('the pod and pod lists are 503 until the registry syncs; /readyz says why it is not ready', async () => {
    const alice = await g.token('alice')
    const notReady = failure(
      503,
      'ServiceUnavailable',
      'the pod registry has not synced yet; retry shortly',
      'PFG_ERR_ROUTE_NOT_READY',
    )
    for (const url of ['/api/v1/namespaces/default/pods/echo', '/api/v1/pods']) {
      const r = await call(g, { url, headers: bearer(alice) })
      assert.deepEqual([r.status, r.body], [503, notReady], url)
    }
    // Authorization comes first: no existence leak even while not ready.
    const forbidden = await call(g, {
      url: '/api/v1/namespaces/default/pods/secret',
      headers: bearer(alice),
    })
    assert.equal(forbidden.status, 403)
    const readyz = async (): Promise<Answer> => call(g, { url: '/readyz' })
    const not = (why: string): unknown =>
      failure(503, 'ServiceUnavailable', `not ready: ${why}`, 'PFG_ERR_ROUTE_NOT_READY')
    assert.deepEqual(
      [(await readyz()).status, (await readyz()).body],
      [503, not('registry not synced')],
    )
    g.audit.up = false
    assert.deepEqual((await readyz()).body, not('registry not synced, audit sink unavailable'))
    await g.registry.start()
    assert.deepEqual((await readyz()).body, not('audit sink unavailable'))
    g.audit.up = true
    assert.deepEqual((await readyz()).body, 'ok')
    await g.forwarder.drain(0)
    assert.deepEqual((await readyz()).body, not('shutting down'))
  })
})
