/**
 * The node proxy through the real gateway (dev cluster processes): admins reach each
 * agent's /healthz, /readyz and /metrics over HTTP/2 and HTTP/1.1, everyone else gets 401/403,
 * other paths 404 `Status`; a recording upstream on the agent hop shows the gateway's
 * client certificate, the node's TLS server name, and that no credential of the client
 * is passed on; an unreachable agent is a 502 `Status`.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { createSecureServer } from 'node:http2'
import type { Http2SecureServer, IncomingHttpHeaders } from 'node:http2'
import { createServer as createNetServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { join } from 'node:path'
import { startTestCluster } from '../helpers/cluster.js'
import { connectGateway, h2Request } from '../helpers/h2.js'
import { eventually } from '../helpers/net.js'
import { extendRegistry, tokenFor } from '../helpers/gateway.js'
import { issueCert } from '../../src/dev/pki.js'
import { GATEWAY_IDENTITY_URI } from '../../src/protocol/constants.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import type { ClientHttp2Session } from 'node:http2'

let cluster: DevCluster & { cleanup(): Promise<void> }
let session: ClientHttp2Session
let developerToken: string
/** A recording "agent" for node-x: what reached it, and who connected. */
let recorder: Http2SecureServer
const seen: { headers: IncomingHttpHeaders; peer: string; servername: string | false }[] = []
let deadPort = 0

before(async () => {
  cluster = await startTestCluster()
  developerToken = await tokenFor(cluster, 'devon', ['pfgate:developers'])
  session = await connectGateway(cluster.gatewayUrl, cluster.dir)
  // node-x: an HTTP/2 mTLS server with a certificate from the cluster CA for "node-x".
  const ca = {
    cert: readFileSync(join(cluster.dir, 'ca.crt'), 'utf8'),
    key: readFileSync(join(cluster.dir, 'ca.key'), 'utf8'),
  }
  const serving = await issueCert(ca, { commonName: 'pfgate-agent-node-x', dnsNames: ['node-x'] })
  recorder = createSecureServer({
    cert: serving.cert,
    key: serving.key,
    ca: ca.cert,
    requestCert: true,
    rejectUnauthorized: true,
  })
  recorder.on('stream', (stream, headers) => {
    const socket = stream.session?.socket as TLSSocket
    const san = socket.getPeerCertificate().subjectaltname ?? ''
    seen.push({ headers, peer: san, servername: socket.servername ?? false })
    stream.respond({ ':status': 200, 'content-type': 'text/plain' })
    stream.end('recorded')
  })
  await new Promise<void>((r) => recorder.listen(0, '127.0.0.1', r))
  // node-y: a port where nothing listens.
  const probe = createNetServer()
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r))
  deadPort = (probe.address() as AddressInfo).port
  await new Promise((r) => probe.close(r))
  extendRegistry(cluster, {
    nodes: [
      {
        name: 'node-x',
        address: '127.0.0.1',
        port: (recorder.address() as AddressInfo).port,
        tlsServerName: 'node-x',
      },
      { name: 'node-y', address: '127.0.0.1', port: deadPort, tlsServerName: 'node-y' },
    ],
  })
  // The static registry is reloaded when its file changes.
  await eventually(
    async () => (await get('/proxy/nodes/node-x/healthz')).status !== 404,
    10_000,
    'the registry reload',
  )
})

after(async () => {
  session?.close()
  recorder?.close()
  await cluster?.cleanup()
})

function get(
  path: string,
  token: string | null = cluster.token,
  extra: Record<string, string> = {},
  method = 'GET',
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return h2Request(session, {
    ':method': method,
    ':path': path,
    ...(token !== null ? { authorization: `Bearer ${token}` } : {}),
    ...extra,
  })
}

/** The same over HTTP/1.1 (no ALPN h2), as curl --http1.1 would. */
function get1(path: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, cluster.gatewayUrl)
    const req = httpsRequest(
      url,
      {
        ca: readFileSync(join(cluster.dir, 'ca.crt')),
        headers: { authorization: `Bearer ${token}` },
        agent: false,
      },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

function statusOf(body: string): { kind: string; code: number; reason: string; message: string } {
  return JSON.parse(body) as { kind: string; code: number; reason: string; message: string }
}

describe('admins reach each agent through the gateway', () => {
  test('/healthz of node-a and node-b over HTTP/2 and HTTP/1.1', async () => {
    for (const node of ['node-a', 'node-b']) {
      const h2 = await get(`/proxy/nodes/${node}/healthz`)
      assert.deepEqual([h2.status, h2.body], [200, 'ok'], `${node} over HTTP/2`)
      const h1 = await get1(`/proxy/nodes/${node}/healthz`, cluster.token)
      assert.deepEqual([h1.status, h1.body], [200, 'ok'], `${node} over HTTP/1.1`)
    }
    const head = await get('/proxy/nodes/node-a/healthz', cluster.token, {}, 'HEAD')
    assert.equal(head.status, 200)
    // Readiness too (a static-dialer agent depends on no runtime).
    const ready = await get('/proxy/nodes/node-a/readyz')
    assert.deepEqual([ready.status, ready.body], [200, 'ok: static dialer\n'])
  })

  test('/metrics is the named agent’s own Prometheus text', async () => {
    for (const node of ['node-a', 'node-b']) {
      const r = await get(`/proxy/nodes/${node}/metrics`)
      assert.equal(r.status, 200)
      assert.match(String(r.headers['content-type']), /^text\/plain/)
      // The agent labels its metrics with its node name: this is really that agent.
      assert.match(r.body, new RegExp(`^pfgate_agent_sessions\\{node="${node}"\\} [1-9]`, 'm'))
      const other = node === 'node-a' ? 'node-b' : 'node-a'
      assert.doesNotMatch(r.body, new RegExp(`node="${other}"`))
    }
  })
})

describe('everyone else is refused; default deny', () => {
  test('no token 401, a bad token 401, a developer 403 — with Status bodies', async () => {
    const none = await get('/proxy/nodes/node-a/metrics', null)
    assert.equal(none.status, 401)
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="pfgate"')
    assert.equal(statusOf(none.body).reason, 'Unauthorized')
    const bad = await get('/proxy/nodes/node-a/metrics', `${cluster.token.slice(0, -3)}xyz`)
    assert.equal(bad.status, 401)
    assert.match(statusOf(bad.body).message, /^Unauthorized \(ref [0-9a-f]{8}\)$/)
    const dev = await get('/proxy/nodes/node-a/metrics', developerToken)
    assert.equal(dev.status, 403)
    assert.deepEqual([statusOf(dev.body).kind, statusOf(dev.body).reason], ['Status', 'Forbidden'])
    assert.doesNotMatch(dev.body, /pfgate_agent/)
  })

  test('other paths, methods and nodes: 404 Status, nothing reaches an agent', async () => {
    const before = seen.length
    for (const [path, method] of [
      ['/proxy/nodes/node-x/', 'GET'],
      ['/proxy/nodes/node-x/livez', 'GET'],
      ['/proxy/nodes/node-x/portForward', 'GET'],
      ['/proxy/nodes/node-x/healthz/more', 'GET'],
      ['/proxy/nodes/node-x/%2e%2e/admin/v1/streams', 'GET'],
      ['/proxy/nodes/node-x/metrics', 'POST'],
      ['/proxy/nodes/node-x/healthz', 'DELETE'],
      ['/proxy/nodes/no-such-node/healthz', 'GET'],
    ] as const) {
      const r = await get(path, cluster.token, {}, method)
      assert.equal(r.status, 404, `${method} ${path}: ${r.body}`)
      assert.deepEqual([statusOf(r.body).kind, statusOf(r.body).code], ['Status', 404])
    }
    assert.equal(seen.length, before, 'no request reached the recording agent')
  })
})

describe('the agent hop', () => {
  test('the gateway’s client certificate, the node’s TLS name, and no client credential', async () => {
    seen.length = 0
    const r = await get('/proxy/nodes/node-x/metrics', cluster.token, {
      cookie: 'session=secret-cookie',
      'x-api-key': 'secret-key',
      'proxy-authorization': 'Basic c2VjcmV0',
      'user-agent': 'node-proxy-test/1',
    })
    assert.deepEqual([r.status, r.body], [200, 'recorded'])
    assert.equal(seen.length, 1)
    const got = seen[0]!
    assert.match(got.peer, new RegExp(`URI:${GATEWAY_IDENTITY_URI.replace(/[/.]/g, '\\$&')}`))
    assert.equal(got.servername, 'node-x')
    assert.equal(got.headers[':path'], '/metrics')
    assert.equal(got.headers['user-agent'], 'node-proxy-test/1')
    const text = JSON.stringify(got.headers)
    for (const secret of [cluster.token, 'Bearer', 'secret-cookie', 'secret-key', 'c2VjcmV0']) {
      assert.ok(!text.includes(secret), `${secret.slice(0, 12)}… must not reach the agent`)
    }
  })

  test('an agent that cannot be reached: 502 Status', async () => {
    const r = await get('/proxy/nodes/node-y/healthz')
    assert.equal(r.status, 502, r.body)
    assert.equal(statusOf(r.body).kind, 'Status')
    assert.match(statusOf(r.body).message, /node agent node-y cannot be reached/)
  })
})
