/**
 * The HTTP/2 client session both hops share (src/shared/h2-client-session.ts), against a
 * real TLS HTTP/2 server on loopback: one session for many streams, connect timeout and
 * refusal, a PING that goes unanswered (a proxy in between stops passing bytes), GOAWAY
 * (in-flight streams finish, new ones get a new session), and each way a stream's open ends.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createSecureServer, constants as h2c } from 'node:http2'
import type { Http2SecureServer, ServerHttp2Session, ServerHttp2Stream } from 'node:http2'
import { connect as netConnect, createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import { once } from 'node:events'
import { createCa, issueCert } from '../../src/dev/pki.js'
import type { CertKeyPair } from '../../src/dev/pki.js'
import {
  awaitOpen,
  ConnectTimeoutError,
  H2ClientSession,
} from '../../src/shared/h2-client-session.js'
import type { H2ClientSessionOptions, H2SessionEvents } from '../../src/shared/h2-client-session.js'

let ca: CertKeyPair
let server: Http2SecureServer
let port: number
const serverSessions = new Set<ServerHttp2Session>()
/** What the server does with each stream, by `:path`. */
const routes = new Map<string, (s: ServerHttp2Stream) => void>()
const clients: H2ClientSession[] = []
const tcpServers: Server[] = []
const tcpSockets = new Set<Socket>()

before(async () => {
  ca = await createCa('h2 session test CA')
  const leaf = await issueCert(ca, { commonName: 'peer', ipAddresses: ['127.0.0.1'] })
  server = createSecureServer({ cert: leaf.cert, key: leaf.key })
  server.on('session', (s: ServerHttp2Session) => {
    serverSessions.add(s)
    s.once('close', () => serverSessions.delete(s))
  })
  server.on('stream', (stream: ServerHttp2Stream, headers) => {
    stream.on('error', () => undefined)
    const route = routes.get(String(headers[':path']))
    if (route !== undefined) route(stream)
    else stream.respond({ ':status': 200 })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  port = (server.address() as AddressInfo).port
})

after(async () => {
  for (const c of clients) c.close('cancel')
  for (const s of tcpSockets) s.destroy()
  for (const t of tcpServers) t.close()
  for (const s of serverSessions) s.destroy()
  await new Promise((r) => server.close(r))
})

function client(
  events: H2SessionEvents = {},
  over: Partial<H2ClientSessionOptions> = {},
): H2ClientSession {
  const c = new H2ClientSession({
    authority: `https://127.0.0.1:${port}`,
    tls: { ca: ca.cert },
    connectTimeoutMs: 2000,
    keepaliveMs: 0,
    backoff: { initialMs: 100, maxMs: 400, random: () => 1 },
    events,
    ...over,
  })
  clients.push(c)
  return c
}

/** A TCP server on loopback whose connections `onSocket` handles. */
async function tcpServer(onSocket: (s: Socket) => void): Promise<number> {
  const t = createServer((s) => {
    tcpSockets.add(s)
    s.on('close', () => tcpSockets.delete(s))
    s.on('error', () => undefined)
    onSocket(s)
  })
  tcpServers.push(t)
  await new Promise<void>((r) => t.listen(0, '127.0.0.1', r))
  return (t.address() as AddressInfo).port
}

test('one session carries every stream; it is connected once', async () => {
  let ups = 0
  const c = client({ up: () => ups++ })
  assert.equal(c.connected, false)
  const [a, b] = await Promise.all([c.session(), c.session()])
  assert.equal(a, b)
  assert.equal(await c.session(), a)
  assert.equal(ups, 1)
  assert.equal(c.connected, true)
  assert.equal(c.sessionCount(), 1)
  c.close('graceful')
  assert.equal(c.connected, false)
})

test('connect timeout: a peer that never answers the handshake', async () => {
  const silent = await tcpServer(() => undefined)
  const failed: Error[] = []
  const c = client(
    { connectFailed: (e) => failed.push(e) },
    { authority: `https://127.0.0.1:${silent}`, connectTimeoutMs: 200 },
  )
  const t0 = Date.now()
  const err = await c.session().then(
    () => assert.fail('connected'),
    (e: unknown) => e,
  )
  assert.ok(err instanceof ConnectTimeoutError)
  assert.equal(err.message, 'connect timed out after 200 ms')
  assert.ok(Date.now() - t0 >= 190)
  assert.deepEqual(failed, [err])
  assert.equal(c.connecting, false)
  // The backoff doubles up to its maximum.
  assert.deepEqual(
    [c.retryDelay(), c.retryDelay(), c.retryDelay(), c.retryDelay()],
    [100, 200, 400, 400],
  )
})

test('a refused connect rejects with the socket error; a later success resets the backoff', async () => {
  const closed = await tcpServer(() => undefined)
  tcpServers.pop()?.close()
  await new Promise((r) => setTimeout(r, 20))
  const c = client({}, { authority: `https://127.0.0.1:${closed}` })
  await assert.rejects(c.session(), /ECONNREFUSED/)
  assert.equal(c.retryDelay(), 100)
  assert.equal(c.retryDelay(), 200)
  const ok = client()
  ok.retryDelay()
  ok.retryDelay()
  await ok.session()
  assert.equal(ok.retryDelay(), 100)
})

test('a TLS failure (unknown CA) rejects; nothing stays connected', async () => {
  const other = await createCa('another CA')
  const c = client({}, { tls: { ca: other.cert } })
  await assert.rejects(c.session(), /self.signed|unable to verify|certificate/i)
  assert.equal(c.connected, false)
})

test('PING watchdog: an unanswered PING destroys the session and reports it', async () => {
  // A proxy that passes bytes until told to stop (a link gone silent: no FIN, no RST).
  let blackhole = false
  const proxyPort = await tcpServer((down) => {
    const up = netConnect(port, '127.0.0.1')
    tcpSockets.add(up)
    up.on('close', () => tcpSockets.delete(up))
    up.on('error', () => undefined)
    down.on('data', (d: Buffer) => {
      if (!blackhole) up.write(d)
    })
    up.on('data', (d: Buffer) => {
      if (!blackhole) down.write(d)
    })
  })
  const events: string[] = []
  const c = client(
    {
      unresponsive: (why) => events.push(`unresponsive: ${why}`),
      down: () => events.push('down'),
    },
    { authority: `https://127.0.0.1:${proxyPort}`, keepaliveMs: 150 },
  )
  const s = await c.session()
  // PINGs are answered while bytes flow.
  await new Promise((r) => setTimeout(r, 400))
  assert.deepEqual(events, [])
  assert.equal(c.connected, true)
  blackhole = true
  await once(s, 'close')
  assert.deepEqual(events, ['unresponsive: no answer to a PING within 150 ms', 'down'])
  assert.equal(c.connected, false)
})

test('GOAWAY: the in-flight stream finishes on the old session; new streams get a new one', async () => {
  let release: (() => void) | undefined
  routes.set('/slow', (stream) => {
    stream.respond({ ':status': 200 })
    release = () => stream.end('done')
  })
  const codes: number[] = []
  let downs = 0
  const c = client({ goaway: (code) => codes.push(code), down: () => downs++ })
  const first = await c.session()
  const req = first.request({ ':method': 'POST', ':path': '/slow' }, { endStream: false })
  assert.deepEqual(await awaitOpen(req), { kind: 'ok' })
  req.end()
  for (const s of serverSessions) s.goaway(h2c.NGHTTP2_NO_ERROR)
  await once(first, 'goaway')
  assert.deepEqual(codes, [h2c.NGHTTP2_NO_ERROR])
  assert.equal(c.connected, false)
  assert.equal(c.sessionCount(), 1) // draining
  const second = await c.session()
  assert.notEqual(second, first)
  assert.equal(c.sessionCount(), 2)
  // The old stream still delivers.
  const body: Buffer[] = []
  req.on('data', (d: Buffer) => body.push(d))
  release?.()
  await once(req, 'end')
  assert.equal(Buffer.concat(body).toString(), 'done')
  await once(first, 'close')
  assert.equal(c.sessionCount(), 1)
  assert.equal(downs, 0) // a detached session closing is not the current one going down
  routes.delete('/slow')
})

test('awaitOpen: 200, a refusal with its Status body, and a truncated long body', async () => {
  const status = JSON.stringify({ kind: 'Status', code: 404, message: 'no such pod' })
  routes.set('/404', (s) => {
    s.respond({ ':status': 404, 'content-type': 'application/json' })
    s.end(status)
  })
  routes.set('/big', (s) => {
    s.respond({ ':status': 502 })
    s.end(Buffer.alloc(100_000, 'x'))
  })
  const session = await client().session()
  const open = (path: string, maxBody?: number) =>
    awaitOpen(
      session.request({ ':method': 'POST', ':path': path }, { endStream: false }),
      maxBody !== undefined ? { maxBody } : {},
    )
  assert.deepEqual(await open('/ok'), { kind: 'ok' })
  assert.deepEqual(await open('/404'), { kind: 'refused', status: 404, body: status })
  const big = await open('/big', 1000)
  assert.equal(big.kind, 'refused')
  assert.ok(big.kind === 'refused' && big.body.length <= 1000 && big.status === 502)
  routes.delete('/404')
  routes.delete('/big')
})

test('awaitOpen: a reset, a timeout and a cancel; afterwards only an error-ignoring listener stays', async () => {
  routes.set('/reset', (s) => s.close(h2c.NGHTTP2_REFUSED_STREAM))
  routes.set('/never', () => undefined)
  const session = await client().session()
  const req = (path: string) =>
    session.request({ ':method': 'POST', ':path': path }, { endStream: false })

  const reset = req('/reset')
  const r = await awaitOpen(reset)
  assert.ok(r.kind === 'closed' || r.kind === 'error', JSON.stringify(r))
  if (r.kind === 'closed') assert.equal(r.rstCode, h2c.NGHTTP2_REFUSED_STREAM)

  const slow = req('/never')
  const t0 = Date.now()
  assert.deepEqual(await awaitOpen(slow, { timeoutMs: 150 }), { kind: 'timeout' })
  assert.ok(Date.now() - t0 >= 140)
  assert.equal(slow.listenerCount('response'), 0)
  assert.equal(slow.listenerCount('error'), 1)
  // An error now goes nowhere instead of crashing the process.
  slow.destroy(new Error('late'))

  const ac = new AbortController()
  const cancelled = req('/never')
  const p = awaitOpen(cancelled, { signal: ac.signal, timeoutMs: 5000 })
  ac.abort()
  assert.deepEqual(await p, { kind: 'aborted' })
  const pre = req('/never')
  assert.deepEqual(await awaitOpen(pre, { signal: AbortSignal.abort() }), { kind: 'aborted' })
  cancelled.close(h2c.NGHTTP2_CANCEL)
  pre.close(h2c.NGHTTP2_CANCEL)
  routes.delete('/reset')
  routes.delete('/never')
})

test("close('cancel') resets the streams; close('graceful') lets them finish", async () => {
  routes.set('/hold', (s) => s.respond({ ':status': 200 }))
  const c = client()
  const s1 = await c.session()
  const held = s1.request({ ':method': 'POST', ':path': '/hold' }, { endStream: false })
  assert.deepEqual(await awaitOpen(held), { kind: 'ok' })
  c.close('cancel')
  assert.equal(s1.destroyed, true)
  assert.equal(held.destroyed, true)

  const g = client()
  const s2 = await g.session()
  const kept = s2.request({ ':method': 'POST', ':path': '/hold' }, { endStream: false })
  assert.deepEqual(await awaitOpen(kept), { kind: 'ok' })
  g.close('graceful')
  assert.equal(s2.closed, true)
  assert.equal(kept.destroyed, false)
  kept.close(h2c.NGHTTP2_NO_ERROR)
  await once(s2, 'close')
  routes.delete('/hold')
})
