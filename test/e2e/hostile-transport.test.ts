/**
 * Hostile and broken peers at the transport level, through the real gateway (dev cluster
 * processes, real TLS and HTTP/2): clients that misbehave on purpose with `node:http2` and
 * raw sockets, and peers that vanish.
 *
 * - before a request on it authenticates, an HTTP/2 connection gets a small stream
 *   allowance (refused beyond it by nghttp2) and a small window; an authenticated request
 *   raises both;
 * - every stream that is not a relayed forward is reset at the request deadline: a request
 *   that never ends, a refused forward the client never closes;
 * - connections that have authenticated nothing are capped per source address;
 * - a client whose link goes down (a proxy that stops relaying, closing nothing) is found
 *   by PINGs (HTTP/2, SPDY, WebSocket): its streams end with an audit record saying so,
 *   its connection and per-user slots are released;
 * - the buffer budget: windows shrink as streams multiply and grow back; readers that
 *   stall do not take the gateway's buffers past the budget (the streams stalled longest
 *   are reset, audited), and the others still deliver every byte;
 * - agent loss reaches a native client as RST_STREAM INTERNAL_ERROR (docs/protocol.md).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { connect as http2Connect } from 'node:http2'
import type { ClientHttp2Session, ClientHttp2Stream, SecureClientSessionOptions } from 'node:http2'
import { join } from 'node:path'
import { startTestCluster } from '../helpers/cluster.js'
import { h2Request, trackedSession } from '../helpers/h2.js'
import { eventually, startFreezableProxy } from '../helpers/net.js'
import type { FreezableProxy } from '../helpers/net.js'
import type { RawResponse } from '../helpers/raw-upgrade.js'
import {
  rawRequest,
  spdyUpgradeHeaders,
  wsUpgradeHeaders,
  RawWebSocket,
} from '../helpers/raw-upgrade.js'
import { SpdyTestClient } from '../protocol/spdy/spdy-test-client.js'
import type { AuditRecord } from '../../src/protocol/audit-record.js'
import type { RawStream } from '../helpers/gateway.js'
import {
  metricValue,
  openRaw,
  receivedAtLeast,
  scrape,
  trailPath,
  waitForRecords,
} from '../helpers/gateway.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import { RST } from '../../src/protocol/reset-codes.js'
import { PREAUTH_STREAM_WINDOW } from '../../src/gateway/connections.js'

const LIMITS = {
  streamsPerConnection: 500,
  unauthenticatedStreams: 100,
  connectionsPerSource: 8,
  streamOpenTimeout: '1s',
  requestTimeout: '4s',
  clientKeepalive: '1s',
  bufferBudget: '32MiB',
}
const MiB = 1024 * 1024

let cluster: DevCluster & { cleanup(): Promise<void> }
const sessions: ClientHttp2Session[] = []
const proxies: FreezableProxy[] = []

before(async () => {
  cluster = await startTestCluster({ limits: LIMITS })
})

after(async () => {
  for (const p of proxies) await p.close()
  for (const s of sessions) s.destroy()
  await cluster?.cleanup()
})

function session(): Promise<ClientHttp2Session> {
  return trackedSession(cluster, sessions)
}

/** A session on which a request has authenticated (an API GET with the token). */
async function authenticatedSession(): Promise<ClientHttp2Session> {
  const s = await session()
  const r = await h2Request(s, {
    ':method': 'GET',
    ':path': POD,
    authorization: `Bearer ${cluster.token}`,
  })
  assert.equal(r.status, 200)
  return s
}

/** A raw HTTP/2 client with `options` (e.g. one that assumes no stream limit, or never reads). */
function rawSession(options: SecureClientSessionOptions): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2Connect(cluster.gatewayUrl, {
      ca: readFileSync(join(cluster.dir, 'ca.crt')),
      ...options,
    })
    s.on('error', () => undefined)
    sessions.push(s)
    s.once('remoteSettings', () => resolve(s))
    s.once('close', () => reject(new Error('the gateway closed the connection')))
  })
}

/** HEADERS without END_STREAM; resolves with the response status or the RST code. */
function hangingRequest(
  s: ClientHttp2Session,
  path: string,
  token?: string,
  method = 'POST',
): { req: ClientHttp2Stream; outcome: Promise<{ status?: number; rstCode?: number }> } {
  const req = s.request(
    {
      ':method': method,
      ':path': path,
      port: '5000',
      ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
    },
    { endStream: false },
  )
  req.on('error', () => undefined)
  const outcome = new Promise<{ status?: number; rstCode?: number }>((resolve) => {
    req.once('response', (h) => resolve({ status: Number(h[':status']) }))
    req.once('close', () => resolve({ rstCode: req.rstCode }))
  })
  return { req, outcome }
}

const NATIVE = '/proxy/nodes/node-a/portForward/default/echo'
const POD = '/api/v1/namespaces/default/pods/echo'

describe('before authentication: a small stream allowance and window', () => {
  test('300 unauthenticated streams that never end: 100 answered, the rest refused; an authenticated request raises the allowance', async () => {
    // A client that does not wait for SETTINGS and never reads (window 0).
    const s = await rawSession({
      peerMaxConcurrentStreams: 1000,
      settings: { initialWindowSize: 0 },
    })
    const outcomes: { status?: number; rstCode?: number }[] = []
    for (let i = 0; i < 300; i++) {
      void hangingRequest(s, i % 3 === 0 ? NATIVE : POD).outcome.then((o) => outcomes.push(o))
    }
    // Before the request deadline (4 s) frees any slot: 100 answered; the others were
    // refused (REFUSED_STREAM, sent before the client had the SETTINGS) or wait in the
    // client for a free slot.
    const countAnswered = (): number => outcomes.filter((o) => o.status !== undefined).length
    await eventually(() => countAnswered() >= LIMITS.unauthenticatedStreams, 3000, '100 answers')
    await new Promise((r) => setTimeout(r, 500))
    const others = outcomes.filter((o) => o.status === undefined)
    assert.equal(countAnswered(), LIMITS.unauthenticatedStreams)
    assert.ok(
      others.every((o) => o.rstCode === RST.REFUSED_STREAM),
      JSON.stringify(others),
    )
    assert.equal(s.remoteSettings.maxConcurrentStreams, LIMITS.unauthenticatedStreams)
    assert.equal(s.remoteSettings.initialWindowSize, PREAUTH_STREAM_WINDOW)

    // One request that authenticates (on a connection whose 100 slots are taken: a new one).
    const t = await rawSession({ settings: { initialWindowSize: 0 } })
    const first = hangingRequest(t, POD, cluster.token, 'GET')
    assert.equal((await first.outcome).status, 200)
    await eventually(
      () => t.remoteSettings.maxConcurrentStreams === LIMITS.streamsPerConnection + 100,
      5000,
      'the raised allowance',
    )
    assert.equal(t.remoteSettings.initialWindowSize, 4 * 1024 * 1024)
    const more = await Promise.all(
      Array.from({ length: 300 }, () => hangingRequest(t, '/healthz', undefined, 'GET').outcome),
    )
    assert.equal(more.filter((o) => o.status === 200).length, 300)
    s.destroy()
    t.destroy()
  })
})

describe('the request deadline (limits.requestTimeout)', () => {
  test('a request that never ends and a refused forward never closed are reset; a relayed forward is not', async () => {
    const before = metricValue(
      await scrape(cluster.metricsPort as number),
      'pfgate_limit_hits_total',
      {
        limit: 'request-timeout',
      },
    )
    // Never reads (window 0): no answer can finish, so Node cannot close the streams
    // itself once answered (it resets a request whose answer is complete).
    const s = await rawSession({ settings: { initialWindowSize: 0 } })
    const t0 = Date.now()
    const health = hangingRequest(s, '/healthz', undefined, 'GET')
    const refused = hangingRequest(s, NATIVE, 'not-a-token')
    const live = await openRaw(
      await session(),
      { node: 'node-a', pod: 'echo', port: 5000 },
      cluster.token,
    )
    assert.equal(live.status, 200)
    assert.equal((await health.outcome).status, 200)
    assert.equal((await refused.outcome).status, 401)
    // The RST code the stream closed with; -1 if still open 4 s after the deadline.
    const closed = (r: ClientHttp2Stream): Promise<number> =>
      new Promise((resolve) => {
        if (r.closed) return resolve(r.rstCode ?? -1)
        const timer = setTimeout(() => resolve(-1), 8000)
        r.once('close', () => {
          clearTimeout(timer)
          resolve(r.rstCode ?? -1)
        })
      })
    assert.equal(await closed(health.req), RST.ENHANCE_YOUR_CALM)
    assert.equal(await closed(refused.req), RST.ENHANCE_YOUR_CALM)
    const took = Date.now() - t0
    assert.ok(took >= 3800 && took < 7000, `reset after ${took} ms`)
    // The relayed forward outlives the deadline.
    await new Promise((r) => setTimeout(r, 500))
    live.req.write('still here')
    await receivedAtLeast(live, 10)
    live.req.end()
    assert.equal((await live.closed).rstCode, 0)
    const after = metricValue(
      await scrape(cluster.metricsPort as number),
      'pfgate_limit_hits_total',
      {
        limit: 'request-timeout',
      },
    )
    assert.ok(after - before >= 2, `limit hits ${before} -> ${after}`)
    s.destroy()
  })
})

describe('unauthenticated connections per source (limits.connectionsPerSource)', () => {
  test('over the cap a connection is closed at accept; one that authenticates stops counting', async () => {
    // HTTP/2 connections that never send a request (they do answer PINGs).
    const open = (): Promise<ClientHttp2Session | undefined> =>
      new Promise((resolve) => {
        const c = http2Connect(cluster.gatewayUrl, {
          ca: readFileSync(join(cluster.dir, 'ca.crt')),
        })
        c.on('error', () => resolve(undefined))
        c.once('close', () => resolve(undefined))
        c.once('remoteSettings', () => resolve(c))
      })
    const unauthenticated = async (): Promise<number> =>
      metricValue(await scrape(cluster.metricsPort as number), 'pfgate_client_connections', {
        state: 'unauthenticated',
      })
    // Earlier tests' connections are gone.
    await eventually(
      async () => (await unauthenticated()) === 0,
      5000,
      'no unauthenticated connection',
    )
    const held: ClientHttp2Session[] = []
    try {
      for (let i = 0; i < LIMITS.connectionsPerSource; i++) {
        const sock = await open()
        assert.ok(sock !== undefined, `connection ${i + 1} accepted`)
        held.push(sock)
      }
      assert.equal(await unauthenticated(), LIMITS.connectionsPerSource)
      assert.equal(await open(), undefined, 'one more is closed at accept')
      // One of them authenticates (an HTTP/2 request with a token): a slot is free again.
      held.pop()?.destroy()
      await new Promise((r) => setTimeout(r, 100))
      await authenticatedSession()
      const another = await open()
      assert.ok(another !== undefined, 'an authenticated connection does not count')
      held.push(another)
      assert.equal(await open(), undefined)
    } finally {
      for (const sock of held) sock.destroy()
    }
    const m = await scrape(cluster.metricsPort as number)
    assert.ok(metricValue(m, 'pfgate_limit_hits_total', { limit: 'connections-per-source' }) >= 2)
  })
})

/** A proxy in front of the gateway, for a client whose link will go down. */
async function proxy(): Promise<FreezableProxy> {
  const p = await startFreezableProxy(cluster.gatewayPort)
  proxies.push(p)
  return p
}

/** The gateway's live sessions (admin API). */
async function liveSessions(): Promise<{ id: string; sourceAddress: string }[]> {
  const s = await session()
  const r = await h2Request(s, {
    ':method': 'GET',
    ':path': '/admin/v1/sessions',
    authorization: `Bearer ${cluster.token}`,
  })
  s.destroy()
  return (JSON.parse(r.body) as { items: { id: string; sourceAddress: string }[] }).items
}

/**
 * After the link behind `p` went down: the stream's close record and its session's say
 * `client-unresponsive`, and the session is gone from the gateway.
 */
async function endedUnresponsive(p: FreezableProxy, streamId: string): Promise<void> {
  const rec = await waitForRecords(
    trailPath(cluster),
    (rs) => rs.find((r) => r.type === 'stream.closed' && r.streamId === streamId),
    `the close record of ${streamId}`,
    10_000,
  )
  assert.equal(rec.endedBy, 'client')
  assert.equal(rec.reason, 'client-unresponsive')
  assert.equal(rec.error?.code, 'PFG_ERR_RELAY_CLIENT_LOST')
  const closed: AuditRecord = await waitForRecords(
    trailPath(cluster),
    (rs) => rs.find((r) => r.type === 'session.closed' && r.sessionId === rec.sessionId),
    'the session.closed record',
  )
  assert.equal(closed.reason, 'client-unresponsive')
  const sources = p.upstreams.map((u) => `127.0.0.1:${u.localPort}`)
  await eventually(
    async () => !(await liveSessions()).some((x) => sources.includes(x.sourceAddress)),
    5000,
    'the session to be gone',
  )
}

/** An upgrade (101) through the proxy `p`. */
async function upgradeVia(
  p: FreezableProxy,
  method: string,
  path: string,
  headers: Record<string, string>,
): Promise<RawResponse> {
  const ca = readFileSync(join(cluster.dir, 'ca.crt'))
  const res = await rawRequest(p.port, ca, method, path, headers)
  assert.equal(res.status, 101, res.body)
  res.socket.on('error', () => undefined)
  return res
}

/**
 * With the last `protocol` stream open: a quiet while (answered PINGs keep it), then the
 * link behind `p` goes down, and the gateway must find it.
 */
async function cutWhenQuiet(p: FreezableProxy, protocol: string): Promise<void> {
  const opened = await waitForRecords(
    trailPath(cluster),
    (rs) => rs.findLast((r) => r.type === 'stream.opened' && r.protocol === protocol),
    'the open record',
  )
  await new Promise((r) => setTimeout(r, 2500))
  p.freeze()
  await endedUnresponsive(p, opened.streamId as string)
}

describe('vanished clients (limits.clientKeepalive)', () => {
  test('native HTTP/2: the link goes down mid-stream; PINGs find it within two intervals', async () => {
    const p = await proxy()
    const s = await new Promise<ClientHttp2Session>((resolve, reject) => {
      const c = http2Connect(`https://127.0.0.1:${p.port}`, {
        ca: readFileSync(join(cluster.dir, 'ca.crt')),
      })
      c.on('error', () => undefined)
      sessions.push(c)
      c.once('connect', () => resolve(c))
      c.once('close', () => reject(new Error('closed')))
    })
    const st = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token)
    assert.equal(st.status, 200)
    st.req.write('hello')
    await receivedAtLeast(st, 5)
    // Healthy: PINGs are answered, so a second of quiet ends nothing.
    await new Promise((r) => setTimeout(r, 2500))
    st.req.write('again')
    await receivedAtLeast(st, 10)
    const t0 = Date.now()
    p.freeze()
    await endedUnresponsive(p, st.streamId as string)
    assert.ok(Date.now() - t0 < 6000, `found after ${Date.now() - t0} ms`)
  })

  test('SPDY (kubectl): the link goes down; SPDY PINGs find it', async () => {
    const p = await proxy()
    const res = await upgradeVia(p, 'POST', `${POD}/portforward`, spdyUpgradeHeaders(cluster.token))
    const client = new SpdyTestClient(res.socket)
    const err = await client.openStream({ streamtype: 'error', port: '5000', requestid: '0' })
    await err.replied
    err.end()
    const data = await client.openStream({ streamtype: 'data', port: '5000', requestid: '0' })
    await data.replied
    data.write(Buffer.from('hi'))
    await eventually(() => data.received === 2, 5000, 'the echo')
    await cutWhenQuiet(p, 'spdy')
  })

  test('WebSocket v4 channels: the link goes down; WebSocket pings find it', async () => {
    const p = await proxy()
    const res = await upgradeVia(
      p,
      'GET',
      `${POD}/portforward?ports=5000`,
      wsUpgradeHeaders(cluster.token, ['v4.channel.k8s.io']),
    )
    const ws = new RawWebSocket(res.socket, res.rest)
    await eventually(() => ws.messages.length >= 2, 5000, 'the port prefixes')
    ws.sendBinary(Buffer.from([0, 0x61]))
    await eventually(() => ws.messages.length >= 3, 5000, 'the echo')
    await cutWhenQuiet(p, 'ws-v4')
  })
})

describe('the buffer budget (limits.bufferBudget)', () => {
  test('windows shrink as streams multiply, and grow back when they end', async () => {
    const s = await authenticatedSession()
    await eventually(() => s.remoteSettings.initialWindowSize === 4 * MiB, 5000, 'the full window')
    const open = await Promise.all(
      Array.from({ length: 40 }, () =>
        openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token),
      ),
    )
    assert.ok(open.every((o) => o.status === 200))
    // 40 streams sharing 32 MiB: 128 KiB windows (src/gateway/buffer-budget.ts, sizesFor).
    await eventually(
      () => s.remoteSettings.initialWindowSize === 128 * 1024,
      5000,
      `a 128 KiB window (now ${s.remoteSettings.initialWindowSize})`,
    )
    for (const o of open) o.req.end()
    await Promise.all(open.map((o) => o.closed))
    await eventually(
      () => s.remoteSettings.initialWindowSize === 4 * MiB,
      5000,
      'the full window again',
    )
  })

  test('24 readers stall one after another: the buffers stay within the budget; the others lose no byte', async () => {
    const external = async (): Promise<number> =>
      metricValue(
        await scrape(cluster.metricsPort as number),
        'pfgate_gateway_nodejs_external_memory_bytes',
      )
    const before = await external()
    const s = await session()
    const size = 8 * MiB
    const chunk = Buffer.alloc(64 * 1024, 0x5a)
    const streams: RawStream[] = []
    // One after another: each stalls with the large window it got while streams were few
    // (bytes already taken stay when later streams shrink the windows).
    for (let i = 0; i < 24; i++) {
      const st = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token)
      streams.push(st)
      assert.equal(st.status, 200)
      // Never read: the echo piles up in the gateway (and the agent and the pod).
      st.req.pause()
      let sent = 0
      const pump = (): void => {
        while (sent < size) {
          sent += chunk.length
          if (!st.req.write(chunk)) return void st.req.once('drain', pump)
        }
        st.req.end()
      }
      pump()
      await new Promise((r) => setTimeout(r, 150))
    }
    // Settled: the backstop has reset what did not fit (it sweeps twice a second). At least
    // 4 s, then until the external memory is back within the bound (on a loaded machine the
    // last stalls, their sweep and the collection of the freed buffers can take longer).
    await new Promise((r) => setTimeout(r, 4000))
    let grew = Infinity
    await eventually(
      async () => (grew = (await external()) - before) <= 48 * MiB,
      20_000,
      'the external memory within the bound',
    ).catch(() => undefined)
    assert.ok(grew <= 48 * MiB, `the gateway's buffers grew by ${(grew / MiB).toFixed(1)} MiB`)
    // The windows may have kept it within the budget, or the backstop reset some streams
    // (that depends on how fast the bytes came: test/gateway/buffer-budget.test.ts checks
    // which the backstop picks); each one reset is audited.
    const reset = streams.filter((st) => st.req.closed && st.req.rstCode === RST.ENHANCE_YOUR_CALM)
    const records = await waitForRecords(
      trailPath(cluster),
      (rs) => {
        const ids = new Set(reset.map((st) => st.streamId))
        const mine = rs.filter((r) => r.type === 'stream.closed' && ids.has(r.streamId))
        return mine.length === reset.length ? mine : undefined
      },
      'the close records of the reset streams',
    )
    for (const r of records) {
      assert.equal(r.endedBy, 'limit')
      assert.equal(r.reason, 'limit:buffer-budget')
      assert.equal(r.error?.code, 'PFG_ERR_LIMIT_BUFFER_BUDGET')
    }
    // The others, read at last, deliver every byte they were sent.
    const alive = streams.filter((st) => !st.req.closed)
    assert.ok(alive.length >= 1, 'not every stream was reset')
    for (const st of alive) st.req.resume()
    const ends = await Promise.all(alive.map((st) => st.closed))
    for (const [i, st] of alive.entries()) {
      assert.equal(ends[i]?.rstCode, 0, JSON.stringify(ends[i]))
      assert.equal(st.received().length, size)
    }
  })
})

describe('RST codes after 200', () => {
  test('the agent is lost mid-stream: the native client gets INTERNAL_ERROR, audited as an agent failure', async () => {
    const s = await session()
    const st = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token)
    assert.equal(st.status, 200)
    st.req.write('hello')
    await receivedAtLeast(st, 5)
    await cluster.kill('agent:node-a', 'SIGKILL')
    const how = await st.closed
    assert.equal(how.rstCode, RST.INTERNAL_ERROR, JSON.stringify(how))
    assert.equal(how.ended, false, 'a reset, never a clean end first')
    const rec = await waitForRecords(
      trailPath(cluster),
      (rs) => rs.find((r) => r.type === 'stream.closed' && r.streamId === st.streamId),
      'the stream.closed record',
    )
    assert.equal(rec.endedBy, 'error')
    assert.equal(rec.reason, 'agent-failed')
  })
})
