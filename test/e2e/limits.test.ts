/**
 * Every limit through the real gateway (dev cluster processes, small limits): concurrent
 * streams per connection and per user (429), the stream-open timeout (504, against an
 * agent address that never answers TLS), idle timeout and maximum lifetime (RST_STREAM
 * ENHANCE_YOUR_CALM after 200), and the header size (431 on HTTP/2 and HTTP/1.1). Each
 * one: the client's status or reset, the audit record with its reason, the metric.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { connect as tlsConnect } from 'node:tls'
import { createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import { join } from 'node:path'
import type { ClientHttp2Session } from 'node:http2'
import { startTestCluster } from '../helpers/cluster.js'
import { h2Request, trackedSession } from '../helpers/h2.js'
import { eventually } from '../helpers/net.js'
import {
  extendRegistry,
  metricValue,
  openRaw,
  receivedAtLeast,
  scrape,
  tokenFor,
  trailPath,
  waitForRecords,
} from '../helpers/gateway.js'
import type { RawStream } from '../helpers/gateway.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import { RST } from '../../src/protocol/reset-codes.js'

const LIMITS = {
  streamsPerConnection: 3,
  streamsPerUser: 5,
  streamOpenTimeout: '600ms',
  idleTimeout: '1500ms',
  maxLifetime: '4s',
  maxHeaderSize: '4KiB',
}

let cluster: DevCluster & { cleanup(): Promise<void> }
let blackhole: Server
const blackholeSockets = new Set<Socket>()
const sessions: ClientHttp2Session[] = []

before(async () => {
  cluster = await startTestCluster({ limits: LIMITS })
  // An "agent" that accepts TCP and then says nothing: the TLS handshake never completes.
  blackhole = createServer((s) => {
    blackholeSockets.add(s)
    s.on('error', () => undefined)
    s.on('close', () => blackholeSockets.delete(s))
  })
  await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', r))
  extendRegistry(cluster, {
    nodes: [
      {
        name: 'node-slow',
        address: '127.0.0.1',
        port: (blackhole.address() as AddressInfo).port,
        tlsServerName: 'node-slow',
      },
    ],
    pods: [
      {
        namespace: 'default',
        name: 'slow',
        node: 'node-slow',
        phase: 'Running',
        ports: [{ containerPort: 80 }],
      },
    ],
  })
  const s = await session()
  await eventually(
    async () => {
      const r = await h2Request(s, {
        ':method': 'GET',
        ':path': '/api/v1/namespaces/default/pods/slow',
        authorization: `Bearer ${cluster.token}`,
      })
      return r.status === 200
    },
    10_000,
    'the registry reload',
  )
})

after(async () => {
  for (const s of sessions) s.destroy()
  for (const s of blackholeSockets) s.destroy()
  await new Promise((r) => blackhole?.close(r))
  await cluster?.cleanup()
})

function session(): Promise<ClientHttp2Session> {
  return trackedSession(cluster, sessions)
}

async function metrics(): Promise<string> {
  return scrape(cluster.metricsPort as number)
}

/** Opens an echo stream and checks that it carries bytes. */
async function openEcho(s: ClientHttp2Session, token: string): Promise<RawStream> {
  const st = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, token)
  assert.equal(st.status, 200, st.received().toString())
  st.req.write('ping')
  await receivedAtLeast(st, 4)
  return st
}

/** Ends an echo stream normally (half-close; the echo pod ends its side). */
async function closeEcho(st: RawStream): Promise<void> {
  st.req.end()
  const how = await st.closed
  assert.equal(how.rstCode, 0)
}

function statusBody(st: RawStream): { code: number; message: string; cause?: string } {
  const s = JSON.parse(st.received().toString()) as {
    kind: string
    code: number
    message: string
    details?: { causes?: { reason: string }[] }
  }
  assert.equal(s.kind, 'Status')
  return { code: s.code, message: s.message, cause: s.details?.causes?.[0]?.reason }
}

describe('concurrency limits (429)', () => {
  test('streams per client connection', async () => {
    const before = metricValue(await metrics(), 'pfgate_limit_hits_total', {
      limit: 'streams-per-connection',
    })
    const token = await tokenFor(cluster, 'conn-user', ['pfgate:developers'])
    const s = await session()
    const open = [await openEcho(s, token), await openEcho(s, token), await openEcho(s, token)]
    const fourth = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, token)
    await fourth.closed
    assert.equal(fourth.status, 429)
    const body = statusBody(fourth)
    assert.equal(body.cause, 'PFG_ERR_LIMIT_STREAMS_PER_CONNECTION')
    assert.match(body.message, /limit 3/)
    // Another connection of the same user is not affected; closing one frees a slot here.
    const other = await openEcho(await session(), token)
    await closeEcho(open.pop() as RawStream)
    open.push(await openEcho(s, token))
    for (const st of [...open, other]) await closeEcho(st)

    const rec = await waitForRecords(
      trailPath(cluster),
      (rs) =>
        rs.find(
          (r) =>
            r.type === 'stream.denied' &&
            r.user === 'conn-user' &&
            r.reason === 'limit:streams-per-connection',
        ),
      'the denial',
    )
    assert.equal(rec.status, 429)
    assert.equal(rec.error?.code, 'PFG_ERR_LIMIT_STREAMS_PER_CONNECTION')
    const m = await metrics()
    assert.equal(
      metricValue(m, 'pfgate_limit_hits_total', { limit: 'streams-per-connection' }),
      before + 1,
    )
    assert.ok(
      metricValue(m, 'pfgate_streams_rejected_total', {
        reason: 'limit:streams-per-connection',
        status: '429',
      }) >= 1,
    )
  })

  test('streams per user, across connections; other users unaffected', async () => {
    const token = await tokenFor(cluster, 'busy-user', ['pfgate:developers'])
    const [s1, s2] = [await session(), await session()]
    const open: RawStream[] = []
    for (let i = 0; i < 3; i++) open.push(await openEcho(s1, token))
    for (let i = 0; i < 2; i++) open.push(await openEcho(s2, token))
    const sixth = await openRaw(s2, { node: 'node-a', pod: 'echo', port: 5000 }, token)
    await sixth.closed
    assert.equal(sixth.status, 429)
    assert.equal(statusBody(sixth).cause, 'PFG_ERR_LIMIT_STREAMS_PER_USER')
    // A different user on the same connection still gets a stream.
    const other = await openEcho(s2, await tokenFor(cluster, 'calm-user', ['pfgate:developers']))
    await closeEcho(other)
    for (const st of open) await closeEcho(st)
    // With the user's streams closed, the user can open again.
    await closeEcho(await openEcho(s2, token))

    const rec = await waitForRecords(
      trailPath(cluster),
      (rs) => rs.find((r) => r.type === 'stream.denied' && r.reason === 'limit:streams-per-user'),
      'the denial',
    )
    assert.deepEqual(
      [rec.user, rec.status, rec.error?.code],
      ['busy-user', 429, 'PFG_ERR_LIMIT_STREAMS_PER_USER'],
    )
    assert.equal(
      metricValue(await metrics(), 'pfgate_limit_hits_total', { limit: 'streams-per-user' }),
      1,
    )
  })
})

describe('stream-open timeout (504)', () => {
  test('an agent that never completes TLS: 504 after the open timeout, not after the agent connect timeout', async () => {
    const s = await session()
    const started = Date.now()
    const st = await openRaw(s, { node: 'node-slow', pod: 'slow', port: 80 }, cluster.token)
    const took = Date.now() - started
    await st.closed
    assert.equal(st.status, 504)
    assert.equal(statusBody(st).cause, 'PFG_ERR_LIMIT_OPEN_TIMEOUT')
    assert.ok(took >= 550 && took < 2500, `answered after ${took} ms (limit 600 ms)`)
    const rec = await waitForRecords(
      trailPath(cluster),
      (rs) => rs.find((r) => r.type === 'stream.failed' && r.pod === 'slow'),
      'the failure',
    )
    assert.deepEqual(
      [rec.reason, rec.status, rec.error?.code],
      ['limit:open-timeout', 504, 'PFG_ERR_LIMIT_OPEN_TIMEOUT'],
    )
    assert.ok(
      metricValue(await metrics(), 'pfgate_limit_hits_total', { limit: 'open-timeout' }) >= 1,
    )
  })
})

describe('after 200: idle timeout and maximum lifetime (RST_STREAM ENHANCE_YOUR_CALM)', () => {
  test('a stream with no bytes either way for 1.5 s is reset; its close record says why', async () => {
    const s = await session()
    const st = await openEcho(s, cluster.token)
    const payload = randomBytes(10_000)
    st.req.write(payload)
    await receivedAtLeast(st, 4 + payload.length)
    const quietFrom = Date.now()
    const how = await st.closed
    const after = Date.now() - quietFrom
    assert.equal(how.rstCode, RST.ENHANCE_YOUR_CALM, JSON.stringify(how))
    assert.ok(after >= 1400 && after < 3500, `reset ${after} ms after the last byte`)
    const rec = await waitForRecords(
      trailPath(cluster),
      (rs) => rs.find((r) => r.type === 'stream.closed' && r.streamId === st.streamId),
      'the close',
    )
    assert.deepEqual(
      [rec.endedBy, rec.reason, rec.error?.code, rec.bytesClientToPod, rec.bytesPodToClient],
      ['limit', 'limit:idle-timeout', 'PFG_ERR_LIMIT_IDLE', 10_004, 10_004],
    )
    assert.ok(
      metricValue(await metrics(), 'pfgate_limit_hits_total', { limit: 'idle-timeout' }) >= 1,
    )
  })

  test('a busy stream is not idle, but it is reset at its maximum lifetime (4 s)', async () => {
    const s = await session()
    const st = await openEcho(s, cluster.token)
    const opened = Date.now()
    let sent = 4
    const ticker = setInterval(() => {
      if (st.req.writable) {
        st.req.write('tick')
        sent += 4
      }
    }, 250)
    const how = await st.closed
    clearInterval(ticker)
    const lived = Date.now() - opened
    assert.equal(how.rstCode, RST.ENHANCE_YOUR_CALM)
    assert.ok(lived >= 3900 && lived < 6000, `lived ${lived} ms`)
    const rec = await waitForRecords(
      trailPath(cluster),
      (rs) => rs.find((r) => r.type === 'stream.closed' && r.streamId === st.streamId),
      'the close',
    )
    assert.deepEqual(
      [rec.endedBy, rec.reason, rec.error?.code],
      ['limit', 'limit:max-lifetime', 'PFG_ERR_LIMIT_LIFETIME'],
    )
    assert.ok((rec.durationMs ?? 0) >= 4000)
    // Every tick that reached the gateway was counted (the last may have been cut).
    assert.ok(rec.bytesClientToPod !== undefined && sent - rec.bytesClientToPod <= 4)
    assert.equal(
      metricValue(await metrics(), 'pfgate_limit_hits_total', { limit: 'max-lifetime' }),
      1,
    )
  })
})

describe('header size (431)', () => {
  test('HTTP/2 port-forward: 431 before the token is even looked at, audited', async () => {
    const before = metricValue(await metrics(), 'pfgate_limit_hits_total', { limit: 'header-size' })
    const s = await session()
    const st = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token, {
      'x-padding': 'p'.repeat(6000),
    })
    await st.closed
    assert.equal(st.status, 431)
    const body = statusBody(st)
    assert.equal(body.cause, 'PFG_ERR_LIMIT_HEADER_TOO_LARGE')
    assert.match(body.message, /limit 4096/)
    const rec = await waitForRecords(
      trailPath(cluster),
      (rs) => rs.find((r) => r.type === 'stream.denied' && r.reason === 'limit:header-size'),
      'the denial',
    )
    assert.equal(rec.status, 431)
    assert.equal(rec.user, undefined, 'refused before authentication')
    assert.deepEqual([rec.namespace, rec.pod, rec.port], ['default', 'echo', 5000])
    // Normal headers (the token is ~600 bytes) still pass.
    await closeEcho(await openEcho(s, cluster.token))
    assert.equal(
      metricValue(await metrics(), 'pfgate_limit_hits_total', { limit: 'header-size' }),
      before + 1,
    )
  })

  test('HTTP/2 API request: 431 Status', async () => {
    const s = await session()
    const r = await h2Request(s, {
      ':method': 'GET',
      ':path': '/version',
      'x-padding': 'p'.repeat(6000),
    })
    assert.equal(r.status, 431)
    assert.equal((JSON.parse(r.body) as { reason: string }).reason, 'RequestHeaderFieldsTooLarge')
  })

  test('HTTP/1.1 (the upgrade paths’ protocol): 431 Status from the parser limit', async () => {
    const before = metricValue(await metrics(), 'pfgate_limit_hits_total', { limit: 'header-size' })
    const raw = await new Promise<string>((resolve, reject) => {
      const sock = tlsConnect({
        host: '127.0.0.1',
        port: cluster.gatewayPort,
        ca: readFileSync(join(cluster.dir, 'ca.crt')),
        servername: 'localhost',
        ALPNProtocols: ['http/1.1'],
      })
      let text = ''
      sock.setEncoding('utf8')
      sock.on('data', (c: string) => (text += c))
      sock.on('end', () => resolve(text))
      sock.on('close', () => resolve(text))
      sock.on('error', reject)
      sock.write(
        `POST /api/v1/namespaces/default/pods/echo/portforward HTTP/1.1\r\nHost: localhost\r\n` +
          `Authorization: Bearer ${cluster.token}\r\nX-Padding: ${'p'.repeat(6000)}\r\n\r\n`,
      )
    })
    assert.match(raw, /^HTTP\/1\.1 431 /)
    const body = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as {
      kind: string
      code: number
      details: { causes: { reason: string }[] }
    }
    assert.deepEqual(
      [body.kind, body.code, body.details.causes[0]?.reason],
      ['Status', 431, 'PFG_ERR_LIMIT_HEADER_TOO_LARGE'],
    )
    assert.equal(
      metricValue(await metrics(), 'pfgate_limit_hits_total', { limit: 'header-size' }),
      before + 1,
    )
  })
})
