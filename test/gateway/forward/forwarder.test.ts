/**
 * The forward core in process, on fakes (harness.ts): the documented order of checks
 * (docs/protocol.md: header size → draining → authenticate → impersonation → names/port →
 * authorize → registry ready → pod → node → phase → agent known → limits → audit health →
 * agent dial and audit open at once → 200; a dial failure wins over an open-record failure) and the exact audit records of every path. What each
 * path did is pinned in pinned.json (pin.ts); a change of order or of a record fails here.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { RST } from '../../../src/protocol/reset-codes.js'
import { appError } from '../../../src/shared/errors.js'
import {
  ALICE,
  FAULTS,
  FakeStream,
  clientEndpoint,
  harness,
  refusal,
  request,
  stable,
  tick,
} from './harness.js'
import type { Fault, Harness } from './harness.js'
import { pinned } from './pin.js'

/** The code each fault is refused with, when every later fault is present too. */
const CODE: Record<Fault, string> = {
  'authz-unavailable': 'PFG_ERR_AUTH_UNAVAILABLE',
  'header-size': 'PFG_ERR_LIMIT_HEADER_TOO_LARGE',
  draining: 'PFG_ERR_RELAY_DRAINING',
  token: 'PFG_ERR_AUTH_INVALID',
  impersonation: 'PFG_ERR_AUTH_IMPERSONATION',
  port: 'PFG_ERR_ROUTE_BAD_PORT',
  name: 'PFG_ERR_ROUTE_BAD_NAME',
  forbidden: 'PFG_ERR_AUTH_FORBIDDEN',
  'not-ready': 'PFG_ERR_ROUTE_NOT_READY',
  'no-pod': 'PFG_ERR_ROUTE_POD_NOT_FOUND',
  'wrong-node': 'PFG_ERR_ROUTE_WRONG_NODE',
  'not-running': 'PFG_ERR_ROUTE_POD_NOT_RUNNING',
  'no-node': 'PFG_ERR_ROUTE_NODE_UNKNOWN',
  'conn-limit': 'PFG_ERR_LIMIT_STREAMS_PER_CONNECTION',
  'user-limit': 'PFG_ERR_LIMIT_STREAMS_PER_USER',
  'audit-unhealthy': 'PFG_ERR_AUDIT_UNAVAILABLE',
  'agent-refused': 'PFG_ERR_AGENT_CONNECT_REFUSED',
  'audit-open-fails': 'PFG_ERR_AUDIT_UNAVAILABLE',
}

/** What a refused open did: the error the client is told, the calls, the records. */
async function refused(h: Harness): Promise<unknown> {
  if (h.faults.has('draining')) await h.forwarder.drain(0)
  const err = await refusal(h.forwarder.open(request(h)))
  await tick()
  return {
    code: err.code,
    status: err.statusCode,
    message: err.message.replace(/ref [0-9a-f]{8}/, 'ref <ref>'),
    trace: h.trace,
    records: stable(h.records),
  }
}

test('each check refuses before every later one, with its own records', async () => {
  for (let i = 0; i < FAULTS.length; i++) {
    const fault = FAULTS[i] as Fault
    const h = harness({ faults: FAULTS.slice(i) })
    const seen = (await refused(h)) as { code: string }
    assert.equal(seen.code, CODE[fault], fault)
    pinned(`refused: ${fault} (and every later fault)`, seen)
  }
})

test('each check alone refuses with its own records', async () => {
  for (const fault of FAULTS) {
    const h = harness({ faults: [fault] })
    const seen = (await refused(h)) as { code: string }
    assert.equal(seen.code, CODE[fault], fault)
    pinned(`refused: ${fault} alone`, seen)
  }
})

test('an authorizer that cannot ask its server (RBAC): 503, recorded as auth-unavailable before the registry is asked', async () => {
  const h = harness({ faults: ['authz-unavailable', 'no-pod'] })
  const seen = (await refused(h)) as { code: string; status: number }
  assert.equal(seen.code, 'PFG_ERR_AUTH_UNAVAILABLE')
  assert.equal(seen.status, 503)
  pinned('refused: authorizer unavailable', seen)
})

test('no token at all: 401 before anything else is looked at', async () => {
  const h = harness({ faults: ['name', 'forbidden', 'no-pod'] })
  const err = await refusal(h.forwarder.open({ ...request(h), authorization: undefined }))
  assert.equal(err.code, 'PFG_ERR_AUTH_MISSING')
  pinned('refused: no token', { code: err.code, trace: h.trace, records: stable(h.records) })
})

test('an unexpected exception from the agent pool is reported with a ref, its details recorded', async () => {
  const h = harness()
  h.agent.behaviour = 'throw'
  const err = await refusal(h.forwarder.open(request(h)))
  pinned('refused: unexpected exception', {
    code: err.code,
    status: err.statusCode,
    message: err.message.replace(/ref [0-9a-f]{8}/, 'ref <ref>'),
    records: stable(h.records),
  })
})

test('the open timeout bounds the agent dial (504)', async () => {
  const h = harness({ limits: { streamOpenTimeoutMs: 30 } })
  h.agent.behaviour = 'hang'
  const err = await refusal(h.forwarder.open(request(h)))
  assert.equal(err.code, 'PFG_ERR_LIMIT_OPEN_TIMEOUT')
  pinned('refused: open timeout', {
    code: err.code,
    status: err.statusCode,
    records: stable(h.records),
  })
})

test('a client that leaves during the open: the dial is abandoned and recorded as client-gone', async () => {
  const h = harness()
  h.agent.behaviour = 'hang'
  const ac = new AbortController()
  const p = refusal(h.forwarder.open({ ...request(h), signal: ac.signal }))
  await tick()
  ac.abort()
  const err = await p
  pinned('refused: client left during the open', {
    code: err.code,
    status: err.statusCode,
    records: stable(h.records),
  })
})

/** Opens one stream on `h` and starts it; returns the pieces. */
async function opened(h: Harness) {
  const req = request(h)
  const o = await h.forwarder.open(req)
  const client = new FakeStream()
  const aborts: string[] = []
  const live = o.start(clientEndpoint(client, aborts))
  const upstream = h.upstreams.at(-1) as FakeStream
  return { o, req, client, aborts, live, upstream }
}

test('a stream that opens: the calls in order, then stream.opened before 200', async () => {
  const h = harness()
  const o = await h.forwarder.open(request(h))
  pinned('opened: trace', {
    streamId: o.streamId,
    identity: o.identity,
    pod: o.pod.name,
    node: o.node.name,
    trace: h.trace,
    records: stable(h.records),
  })
  // Nothing is live before start(); one stream after it.
  assert.equal(h.forwarder.streams().length, 0)
  o.start(clientEndpoint(new FakeStream(), []))
  assert.equal(h.forwarder.streams().length, 1)
  pinned(
    'opened: admin view',
    h.forwarder.streams().map((s) => s.view()),
  )
})

/** How a started stream ends, and the records it leaves (after the open's). */
const ENDS: Record<string, (h: Harness, s: Awaited<ReturnType<typeof opened>>) => Promise<void>> = {
  'client EOF first': async (h, s) => {
    s.client.feed('ping')
    s.client.eof()
    await tick()
    h.clock.now += 250
    s.upstream.feed('pong!')
    s.upstream.eof()
  },
  'pod EOF first': async (h, s) => {
    s.upstream.feed('banner')
    s.upstream.eof()
    await tick()
    h.clock.now += 10
    s.client.eof()
  },
  'client reset': async (h, s) => {
    s.client.feed('x')
    await tick()
    h.clock.now += 5
    s.client.destroy(new Error('read ECONNRESET'))
  },
  'client closed without error': async (_h, s) => {
    s.client.peerReset(RST.CANCEL)
  },
  'pod reset (CONNECT_ERROR)': async (_h, s) => {
    s.upstream.peerReset(RST.CONNECT_ERROR)
  },
  'agent stream lost (INTERNAL_ERROR)': async (_h, s) => {
    s.upstream.peerReset(RST.INTERNAL_ERROR)
  },
  'agent stream error': async (_h, s) => {
    s.upstream.destroy(new Error('stream errored: NGHTTP2_INTERNAL_ERROR'))
  },
  'admin kills the stream': async (h, s) => {
    assert.equal(h.forwarder.killStream(s.o.streamId, 'root'), true)
    assert.equal(h.forwarder.killStream('s-nope', 'root'), false)
  },
  'admin kills the session': async (h, s) => {
    assert.equal(h.forwarder.killSession(s.req.session.id, 'root'), true)
    h.forwarder.endSession(s.req.session)
  },
  'client unresponsive': async (h, s) => {
    h.forwarder.clientUnresponsive(s.req.session, 'no PING answer within 1000 ms')
    h.forwarder.endSession(s.req.session)
  },
  'drain deadline': async (h) => {
    await h.forwarder.drain(0)
  },
  'connection closed (session.closed)': async (h, s) => {
    s.client.eof()
    s.upstream.eof()
    await tick()
    h.clock.now += 1000
    h.forwarder.endSession(s.req.session)
  },
}

for (const [name, end] of Object.entries(ENDS)) {
  test(`a stream ends: ${name}`, async () => {
    const h = harness()
    const s = await opened(h)
    const before = h.records.length
    h.clock.now += 1500
    await end(h, s)
    await tick(5)
    await h.forwarder.settle()
    assert.equal(h.forwarder.streams().length, 0, 'the stream is gone from the table')
    pinned(`ended: ${name}`, {
      records: stable(h.records.slice(before)),
      clientAborts: s.aborts,
      upstreamRst: s.upstream.rstCode ?? null,
      clientRst: s.client.rstCode ?? null,
      written: {
        toPod: Buffer.concat(s.upstream.written).toString(),
        toClient: Buffer.concat(s.client.written).toString(),
      },
    })
  })
}

test('a stream the client left before start: cancel records client-gone', async () => {
  const h = harness()
  const o = await h.forwarder.open(request(h))
  const before = h.records.length
  h.clock.now += 20
  o.cancel('client went away before the stream opened')
  o.cancel('again')
  await h.forwarder.settle()
  pinned('ended: cancelled before start', {
    records: stable(h.records.slice(before)),
    upstreamRst: h.upstreams[0]?.rstCode,
  })
  // The stream's slot is free again (per user, per connection).
  assert.equal(h.forwarder.streams().length, 0)
})

test('the sweeper ends idle streams and streams past their lifetime', async () => {
  for (const [limit, limits] of [
    ['idle', { idleTimeoutMs: 400 }],
    ['lifetime', { maxLifetimeMs: 400 }],
  ] as const) {
    const h = harness({ limits })
    const s = await opened(h)
    const before = h.records.length
    h.clock.now += 399
    await tick(150)
    assert.equal(h.forwarder.streams().length, 1, `${limit}: not yet`)
    h.clock.now += 1
    for (let i = 0; i < 40 && h.forwarder.streams().length > 0; i++) await tick(50)
    await h.forwarder.settle()
    pinned(`ended: ${limit} limit`, {
      records: stable(h.records.slice(before)),
      clientAborts: s.aborts,
      upstreamRst: s.upstream.rstCode ?? null,
    })
  }
})

test('limits count streams being opened and live ones, per connection and per user', async () => {
  const h = harness({ limits: { streamsPerConnection: 2, streamsPerUser: 3 } })
  const session = h.forwarder.newSession({
    protocol: 'spdy',
    sourceAddress: '192.0.2.8:1',
    terminate: () => {},
  })
  const a = await h.forwarder.open(request(h, session))
  a.start(clientEndpoint(new FakeStream(), []))
  await h.forwarder.open(request(h, session))
  const third = await refusal(h.forwarder.open(request(h, session)))
  assert.equal(third.code, 'PFG_ERR_LIMIT_STREAMS_PER_CONNECTION')
  const other = await h.forwarder.open(request(h))
  assert.ok(other.streamId)
  const fourth = await refusal(h.forwarder.open(request(h)))
  assert.equal(fourth.code, 'PFG_ERR_LIMIT_STREAMS_PER_USER')
  other.cancel('gone')
  const again = await h.forwarder.open(request(h))
  assert.ok(again.streamId)
})

test('admit: an upgrade is checked like a stream, ports up front or any port of the pod', async () => {
  const h = harness()
  const session = h.forwarder.newSession({
    protocol: 'ws-v4',
    sourceAddress: '[2001:db8::1]:5000',
    terminate: () => {},
  })
  const id = await h.forwarder.admit({
    session,
    authorization: 'Bearer good',
    namespace: 'default',
    pod: 'echo',
    ports: [8080, 9090],
  })
  assert.deepEqual(id, ALICE)
  const spdy = h.forwarder.newSession({
    protocol: 'spdy',
    sourceAddress: '192.0.2.9:5000',
    userAgent: 'kubectl/v1.33.0',
    terminate: () => {},
  })
  await h.forwarder.admit({
    session: spdy,
    authorization: 'Bearer good',
    namespace: 'default',
    pod: 'echo',
  })
  const results: unknown[] = []
  for (const fault of [
    'token',
    'port',
    'forbidden',
    'no-pod',
    'not-running',
    'draining',
  ] as const) {
    const hf = harness({ faults: [fault] })
    if (fault === 'draining') await hf.forwarder.drain(0)
    const s = hf.forwarder.newSession({
      protocol: 'ws-spdy',
      sourceAddress: '192.0.2.10:5000',
      terminate: () => {},
    })
    const err = await refusal(
      hf.forwarder.admit({
        session: s,
        authorization: 'Bearer good',
        namespace: 'default',
        pod: 'echo',
        node: 'node-a',
        ports: fault === 'port' ? appError('PFG_ERR_ROUTE_BAD_PORT', 'bad port "0"') : [8080],
        userAgent: 'kubectl/v1.33.0',
      }),
    )
    results.push({ fault, code: err.code, trace: hf.trace, records: stable(hf.records) })
  }
  pinned('admit', { trace: h.trace, records: stable(h.records), refused: results })
})

test('requestDenied: a refused API request and its record', async () => {
  const h = harness()
  const unauth = h.forwarder.requestDenied(
    {
      method: 'GET',
      path: '/api/v1/namespaces/default/pods/echo',
      sourceAddress: '192.0.2.1:1',
      namespace: 'default',
      pod: 'echo',
    },
    appError('PFG_ERR_AUTH_MISSING', 'Unauthorized'),
  )
  const forbidden = h.forwarder.requestDenied(
    {
      method: 'GET\n',
      path: '/api/v1/namespaces/x/pods/Bad\nName',
      sourceAddress: '192.0.2.1:2',
      userAgent: 'curl/8',
      namespace: 'x',
      pod: 'Bad\nName',
      identity: ALICE,
    },
    appError('PFG_ERR_AUTH_FORBIDDEN', 'user "alice" cannot get pods in x'),
  )
  const hidden = h.forwarder.requestDenied(
    { method: 'GET', path: '/api', sourceAddress: '192.0.2.1:3' },
    appError('PFG_ERR_RELAY_AGENT_UNAVAILABLE', 'agent 10.0.0.1:10250: ECONNREFUSED'),
  )
  pinned('requestDenied', {
    told: [unauth, forbidden, hidden].map((e) => ({
      code: e.code,
      status: e.statusCode,
      message: e.message.replace(/ref [0-9a-f]{8}/, 'ref <ref>'),
    })),
    records: stable(h.records),
  })
})

test('a connection with several users: session.opened by the first, session.closed names all', async () => {
  const h = harness()
  const session = h.forwarder.newSession({
    protocol: 'native-h2',
    sourceAddress: '192.0.2.7:40000',
    terminate: () => {},
  })
  const o = await h.forwarder.open(request(h, session))
  o.cancel('gone')
  // A second user on the same connection (the fake authenticator knows one token: swap it).
  session.addIdentity({ user: 'bob', groups: ['ops'], expiresAt: 0 })
  h.clock.now += 3000
  h.forwarder.endSession(session)
  h.forwarder.endSession(session)
  await h.forwarder.settle()
  pinned('session records', stable(h.records))
})
