/**
 * The gateway's server in process, with real clients on an ephemeral port: native
 * streams are taken off the raw HTTP/2 server before Fastify (refused with the
 * forwarder's Status and stream records), oversized headers on other HTTP/2 requests
 * are refused there too (431, request.denied), everything else reaches Fastify over
 * HTTP/2 and HTTP/1.1, HTTP/1.1 upgrades reach the upgrade handler, and the admin
 * API shows the live client session.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { ClientHttp2Session } from 'node:http2'
import { scrape } from '../../helpers/gateway.js'
import { h2Request } from '../../helpers/h2.js'
import { rawRequest, spdyUpgradeHeaders, wsUpgradeHeaders } from '../../helpers/raw-upgrade.js'
import { inProcessGateway, recordsOf } from '../../helpers/in-process-gateway.js'
import type { InProcessGateway } from '../../helpers/in-process-gateway.js'

const NATIVE = '/proxy/nodes/node-a/portForward/default/echo'

function unauthorized(): unknown {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: 'Unauthorized',
    reason: 'Unauthorized',
    code: 401,
    details: { causes: [{ reason: 'PFG_ERR_AUTH_MISSING', message: 'Unauthorized' }] },
  }
}

describe('gateway server (real HTTP/2 and HTTP/1.1 clients)', () => {
  let g: InProcessGateway
  let url: string
  let port: number
  let s: ClientHttp2Session
  let alice: string
  before(async () => {
    g = await inProcessGateway()
    url = await g.listen()
    port = Number(new URL(url).port)
    s = await g.connect(url)
    s.on('error', () => undefined)
    alice = await g.token('alice')
  })
  after(() => g.close())

  test('HTTP/2 requests that are not native streams reach the Fastify routes', async () => {
    const r = await h2Request(s, { ':method': 'GET', ':path': '/healthz' })
    assert.deepEqual(
      [r.status, r.headers['content-type'], r.body],
      [200, 'text/plain; charset=utf-8', 'ok'],
    )
    const api = await h2Request(s, {
      ':method': 'GET',
      ':path': '/api/v1',
      authorization: `Bearer ${alice}`,
    })
    assert.equal(api.status, 200)
    assert.equal((JSON.parse(api.body) as { kind: string }).kind, 'APIResourceList')
  })

  test('a native stream without a token: the forwarder refuses it (401, stream.denied)', async () => {
    let r: Awaited<ReturnType<typeof h2Request>> | undefined
    const recs = await recordsOf(g.audit, async () => {
      r = await h2Request(s, { ':method': 'POST', ':path': NATIVE, port: '7000' })
    })
    assert.equal(r?.status, 401)
    assert.equal(r?.headers['content-type'], 'application/json')
    assert.equal(r?.headers['www-authenticate'], 'Bearer realm="pfgate"')
    assert.deepEqual(JSON.parse(r?.body ?? ''), unauthorized())
    assert.deepEqual(recs, [
      {
        schema: 'pfgate.audit/v2',
        type: 'stream.denied',
        gateway: 'gw-test',
        sessionId: 'c-gw-test-1',
        sourceAddress: '127.0.0.1:PORT',
        protocol: 'native-h2',
        namespace: 'default',
        pod: 'echo',
        port: 7000,
        node: 'node-a',
        reason: 'unauthenticated',
        status: 401,
        error: { code: 'PFG_ERR_AUTH_MISSING', message: 'Unauthorized' },
      },
    ])
  })

  test('an authorized native stream reaches the agent hop (502 here: no agent), and the admin API shows its session', async () => {
    let r: Awaited<ReturnType<typeof h2Request>> | undefined
    const recs = await recordsOf(g.audit, async () => {
      r = await h2Request(s, {
        ':method': 'POST',
        ':path': NATIVE,
        port: '7000',
        authorization: `Bearer ${alice}`,
      })
    })
    assert.equal(r?.status, 502)
    const message = (JSON.parse(r?.body ?? '') as { message: string }).message
    assert.match(message, /^the node agent cannot be reached \(ref [0-9a-f]{8}\)$/)
    const session = {
      schema: 'pfgate.audit/v2',
      gateway: 'gw-test',
      sessionId: 'c-gw-test-1',
      sourceAddress: '127.0.0.1:PORT',
      protocol: 'native-h2',
      user: 'alice',
      groups: ['system:authenticated'],
      authSource: 'jwt',
    }
    // The open record is written while the agent is dialled: the failed dial's record
    // carries its stream id and closes it (docs/audit.md).
    assert.deepEqual(recs, [
      { ...session, type: 'session.opened' },
      {
        ...session,
        type: 'stream.opened',
        node: 'node-a',
        namespace: 'default',
        pod: 'echo',
        podUid: '11111111-1111-4111-8111-111111111111',
        port: 7000,
        streamId: 's-gw-test-1',
      },
      {
        ...session,
        type: 'stream.failed',
        namespace: 'default',
        pod: 'echo',
        port: 7000,
        podUid: '11111111-1111-4111-8111-111111111111',
        node: 'node-a',
        streamId: 's-gw-test-1',
        reason: 'agent-unavailable',
        status: 502,
        ref: 'REF',
        error: {
          code: 'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
          message: 'node agent node-a (127.0.0.1:1) unreachable: connect ECONNREFUSED 127.0.0.1:1',
        },
      },
    ])
    const root = await g.token('root')
    const sessions = await h2Request(s, {
      ':method': 'GET',
      ':path': '/admin/v1/sessions',
      authorization: `Bearer ${root}`,
    })
    assert.equal(sessions.status, 200)
    const items = (JSON.parse(sessions.body) as { items: Record<string, unknown>[] }).items
    assert.equal(items.length, 1)
    const { openedAt, sourceAddress, ...rest } = items[0] as {
      openedAt: string
      sourceAddress: string
    }
    assert.ok(!Number.isNaN(Date.parse(openedAt)))
    assert.match(sourceAddress, /^127\.0\.0\.1:\d+$/)
    assert.deepEqual(rest, {
      id: 'c-gw-test-1',
      users: ['alice'],
      user: 'alice',
      groups: ['system:authenticated'],
      protocol: 'native-h2',
      streams: 0,
      bytesClientToPod: 0,
      bytesPodToClient: 0,
    })
    const streams = await h2Request(s, {
      ':method': 'GET',
      ':path': '/admin/v1/streams',
      authorization: `Bearer ${root}`,
    })
    assert.deepEqual(JSON.parse(streams.body), { items: [] })
  })

  test('oversized headers on a non-native HTTP/2 request: 431 before Fastify, request.denied', async () => {
    let r: Awaited<ReturnType<typeof h2Request>> | undefined
    const recs = await recordsOf(g.audit, async () => {
      r = await h2Request(s, {
        ':method': 'GET',
        ':path': '/api/v1?x=1',
        authorization: `Bearer ${alice}`,
        'x-big': 'a'.repeat(20_000),
      })
    })
    const message = 'request headers too large (20559 bytes; limit 16384)'
    assert.equal(r?.status, 431)
    assert.deepEqual(JSON.parse(r?.body ?? ''), {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message,
      reason: 'RequestHeaderFieldsTooLarge',
      code: 431,
      details: { causes: [{ reason: 'PFG_ERR_LIMIT_HEADER_TOO_LARGE', message }] },
    })
    assert.deepEqual(recs, [
      {
        schema: 'pfgate.audit/v2',
        type: 'request.denied',
        gateway: 'gw-test',
        sourceAddress: '127.0.0.1:PORT',
        method: 'GET',
        path: '/api/v1',
        reason: 'limit:header-size',
        status: 431,
        error: { code: 'PFG_ERR_LIMIT_HEADER_TOO_LARGE', message },
      },
    ])
  })

  test('HTTP/1.1: plain requests reach Fastify; upgrades reach the upgrade handler', async () => {
    const plain = await rawRequest(port, g.ca, 'GET', '/healthz', { Connection: 'close' })
    plain.socket.destroy()
    assert.deepEqual([plain.status, plain.body], [200, 'ok'])
    let spdy: Awaited<ReturnType<typeof rawRequest>> | undefined
    const recs = await recordsOf(g.audit, async () => {
      spdy = await rawRequest(
        port,
        g.ca,
        'POST',
        '/api/v1/namespaces/default/pods/echo/portforward',
        spdyUpgradeHeaders(undefined),
      )
    })
    spdy?.socket.destroy()
    assert.equal(spdy?.status, 401)
    assert.equal(spdy?.headers['www-authenticate'], 'Bearer realm="pfgate"')
    assert.deepEqual(JSON.parse(spdy?.body ?? ''), unauthorized())
    assert.deepEqual(recs, [
      {
        schema: 'pfgate.audit/v2',
        type: 'stream.denied',
        gateway: 'gw-test',
        sessionId: 'c-gw-test-2',
        sourceAddress: '127.0.0.1:PORT',
        protocol: 'spdy',
        userAgent: 'pfgate-test/spdy',
        namespace: 'default',
        pod: 'echo',
        reason: 'unauthenticated',
        status: 401,
        error: { code: 'PFG_ERR_AUTH_MISSING', message: 'Unauthorized' },
      },
    ])
    const ws = await rawRequest(
      port,
      g.ca,
      'GET',
      '/api/v1/namespaces/default/pods/secret/portforward?ports=7000',
      wsUpgradeHeaders(alice, ['v4.channel.k8s.io']),
    )
    ws.socket.destroy()
    assert.equal(ws.status, 403)
  })
})

describe('gateway server shutdown', () => {
  test('the metrics listener serves /metrics only', async () => {
    const g = await inProcessGateway()
    try {
      const { metricsPort } = await g.gateway.listen(0, '127.0.0.1', { port: 0, host: '127.0.0.1' })
      assert.ok(metricsPort !== undefined)
      const text = await scrape(metricsPort)
      assert.match(text, /^# HELP pfgate_/m)
      const other = await fetch(`http://127.0.0.1:${metricsPort}/other`)
      assert.deepEqual([other.status, await other.text()], [404, 'not found\n'])
    } finally {
      await g.close()
    }
  })

  test('close: the connections of HTTP/2 clients end, the server stops listening', async () => {
    const g = await inProcessGateway()
    try {
      const url = await g.listen()
      const s = await g.connect(url)
      s.on('error', () => undefined)
      const closed = new Promise<void>((resolve) => s.once('close', () => resolve()))
      await g.gateway.close(100)
      await closed
      await assert.rejects(g.connect(url))
    } finally {
      await g.close()
    }
  })
})
