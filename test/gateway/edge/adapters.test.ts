/**
 * The edge adapters against a fake forward service (fake-forward.ts), on real transports:
 * the native HTTP/2 adapter on a real HTTP/2 connection, the SPDY adapter on a real TCP
 * connection with a SPDY client, the WebSocket channels adapter on a real WebSocket. Each asks the service to open with the target the client
 * named, answers the client and relays, refuses in its protocol's own way, and cancels an
 * open whose client left. The shared sequence (contract.ts) is tested on its own first.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { EventEmitter, once } from 'node:events'
import http2 from 'node:http2'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { CLIENT_LEFT, forwardStream } from '../../../src/gateway/edge/contract.js'
import type { EdgeStream } from '../../../src/gateway/edge/contract.js'
import { NATIVE_PATH, NativeH2Adapter } from '../../../src/gateway/edge/native-h2.js'
import { ClientSessions } from '../../../src/gateway/http/client-sessions.js'
import { serveSpdyPortForward } from '../../../src/gateway/edge/spdy-adapter.js'
import { serveChannelPortForward } from '../../../src/gateway/edge/ws-channel-adapter.js'
import { V4_CHANNEL_PROTOCOL } from '../../../src/protocol/ws-channel.js'
import { appError } from '../../../src/shared/errors.js'
import { silentLogger } from '../../../src/shared/log.js'
import { SpdyTestClient } from '../../protocol/spdy/spdy-test-client.js'
import { pfHeaders, until } from '../../protocol/spdy/loopback.js'
import { FakeForwardService } from './fake-forward.js'
import { WebSocket, WebSocketServer } from 'ws'

const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** An EdgeStream that notes what the sequence did. */
function edgeStream(opts: { gone?: boolean; accept?: boolean } = {}) {
  const watch = new EventEmitter()
  const did: string[] = []
  const edge: EdgeStream = {
    watch,
    gone: () => opts.gone ?? false,
    accept: (o) => {
      did.push(`accept ${o.streamId}`)
      return opts.accept === false ? undefined : { stream: new net.Socket(), abort: () => {} }
    },
    refuse: (err) => did.push(`refuse ${(err as Error).message}`),
    abandoned: () => did.push('abandoned'),
  }
  return { watch, did, edge }
}

test('the shared sequence: open, then start; or refuse; or cancel when the client left', async () => {
  const svc = new FakeForwardService()
  const session = svc.newSession({ protocol: 'spdy', sourceAddress: 'x', terminate: () => {} })
  const base = { session, authorization: 'Bearer t', namespace: 'default', pod: 'echo', port: 80 }

  const ok = edgeStream()
  forwardStream(svc, base, ok.edge)
  const o1 = await svc.nextOpen()
  assert.equal(ok.watch.listenerCount('close'), 1)
  o1.accept()
  await tick()
  assert.deepEqual(ok.did, ['accept s-1'])
  assert.ok(o1.outcome.started)
  assert.equal(ok.watch.listenerCount('close'), 0)

  const refused = edgeStream()
  forwardStream(svc, base, refused.edge)
  ;(await svc.nextOpen()).refuse(appError('PFG_ERR_AUTH_FORBIDDEN', 'no'))
  await tick()
  assert.deepEqual(refused.did, ['refuse no'])
  assert.equal(refused.watch.listenerCount('close'), 0)

  // The client leaves during the open: the open's signal aborts; the late 200 is cancelled.
  const gone = edgeStream({ gone: true })
  forwardStream(svc, base, gone.edge)
  const o3 = await svc.nextOpen()
  gone.watch.emit('close')
  assert.equal(o3.req.signal?.aborted, true)
  o3.accept()
  await tick()
  assert.deepEqual(gone.did, ['abandoned'])
  assert.equal(o3.outcome.cancelled, CLIENT_LEFT)

  // The client could not be told (accept failed): cancelled too.
  const failed = edgeStream({ accept: false })
  forwardStream(svc, base, failed.edge)
  const o4 = await svc.nextOpen()
  o4.accept()
  await tick()
  assert.deepEqual(failed.did, ['accept s-4', 'abandoned'])
  assert.equal(o4.outcome.cancelled, CLIENT_LEFT)
})

/** A native adapter behind a real HTTP/2 server, and a client connected to it. */
async function nativeGateway(t: { after: (f: () => unknown) => void }) {
  const svc = new FakeForwardService()
  const adapter = new NativeH2Adapter(svc, silentLogger())
  const server = http2.createServer()
  server.on('stream', (stream, headers) => {
    const m = NATIVE_PATH.exec(headers[':path'] ?? '')
    if (m !== null) adapter.handle(stream, headers, m, 123)
    else stream.respond({ ':status': 404 }, { endStream: true })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
  client.on('error', () => {})
  t.after(async () => {
    client.destroy()
    await new Promise((r) => server.close(r))
  })
  return { svc, client }
}

function nativeRequest(client: http2.ClientHttp2Session, extra: http2.OutgoingHttpHeaders = {}) {
  return client.request({
    ':method': 'POST',
    ':path': '/proxy/nodes/node-a/portForward/default/echo',
    port: '8080',
    authorization: 'Bearer t',
    'user-agent': 'test/1',
    ...extra,
  })
}

async function responseOf(req: http2.ClientHttp2Stream) {
  const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders]
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => chunks.push(c))
  await once(req, 'end')
  return { headers, body: Buffer.concat(chunks).toString() }
}

test('native HTTP/2: the target and headers go to the service; 200 with the stream id, then bytes both ways', async (t) => {
  const { svc, client } = await nativeGateway(t)
  const req = nativeRequest(client)
  const open = await svc.nextOpen()
  assert.equal(open.req.namespace, 'default')
  assert.equal(open.req.pod, 'echo')
  assert.equal(open.req.node, 'node-a')
  assert.equal(open.req.port, 8080)
  assert.equal(open.req.authorization, 'Bearer t')
  assert.equal(open.req.userAgent, 'test/1')
  assert.equal(open.req.headerBytes, 123)
  assert.equal(open.req.session.protocol, 'native-h2')
  open.accept()
  req.end('hello')
  const res = await responseOf(req)
  assert.equal(res.headers[':status'], 200)
  assert.equal(res.headers['pfgate-stream-id'], 's-1')
  assert.equal(res.body, 'HELLO')
  // One session per HTTP/2 connection; it ends with the connection.
  const again = nativeRequest(client)
  ;(await svc.nextOpen()).refuse(appError('PFG_ERR_ROUTE_POD_NOT_FOUND', 'pods "echo" not found'))
  await responseOf(again)
  assert.equal(svc.sessions.length, 1)
  client.close()
  await until(() => svc.ended.length === 1, 'endSession')
})

test('native HTTP/2: refusals are the status and a Status body, with the headers their codes need', async (t) => {
  const { svc, client } = await nativeGateway(t)
  const cases = [
    {
      err: appError('PFG_ERR_AUTH_INVALID', 'Unauthorized (ref 1234abcd)'),
      header: 'www-authenticate',
      value: 'Bearer realm="pfgate"',
    },
    {
      err: appError('PFG_ERR_ROUTE_METHOD_NOT_ALLOWED', 'port-forward streams use POST'),
      header: 'allow',
      value: 'POST',
    },
    { err: new TypeError('a bug'), header: undefined, value: undefined },
  ]
  for (const c of cases) {
    const req = nativeRequest(client)
    req.end()
    ;(await svc.nextOpen()).refuse(c.err)
    const res = await responseOf(req)
    const body = JSON.parse(res.body) as {
      kind: string
      code: number
      message: string
      details?: { causes?: { reason: string }[] }
    }
    assert.equal(body.kind, 'Status')
    if (c.header !== undefined) {
      assert.equal(res.headers[c.header], c.value)
      assert.equal(res.headers[':status'], (c.err as { statusCode: number }).statusCode)
      assert.equal(body.message, c.err.message)
    } else {
      // Something unexpected: 500, nothing of it told.
      assert.equal(res.headers[':status'], 500)
      assert.equal(body.message, 'internal error')
      assert.ok(!res.body.includes('a bug'))
    }
  }
})

test('native HTTP/2: a bad port, a bad name and a GET reach the service as errors (refused after authentication)', async (t) => {
  const { svc, client } = await nativeGateway(t)
  const bad = [
    nativeRequest(client, { port: 'x' }),
    nativeRequest(client, { ':path': '/proxy/nodes/node-a/portForward/%zz/echo' }),
    nativeRequest(client, { ':method': 'GET' }),
  ]
  const codes: unknown[] = []
  for (const req of bad) {
    req.end()
    const open = await svc.nextOpen()
    codes.push(typeof open.req.port === 'number' ? open.req.port : open.req.port.code)
    open.refuse(open.req.port)
    await responseOf(req)
  }
  assert.deepEqual(codes, [
    'PFG_ERR_ROUTE_BAD_PORT',
    'PFG_ERR_ROUTE_BAD_NAME',
    'PFG_ERR_ROUTE_METHOD_NOT_ALLOWED',
  ])
})

test('native HTTP/2: a client that resets during the open aborts it; the late 200 is cancelled', async (t) => {
  const { svc, client } = await nativeGateway(t)
  const req = nativeRequest(client)
  req.on('error', () => {})
  const open = await svc.nextOpen()
  req.close(http2.constants.NGHTTP2_CANCEL)
  await until(() => open.req.signal?.aborted === true, 'the open aborted')
  open.accept()
  await tick(10)
  assert.equal(open.outcome.cancelled, CLIENT_LEFT)
  assert.equal(open.outcome.started, undefined)
})

test('native HTTP/2: as an EdgeConnection, drain is GOAWAY to its client sessions (open streams go on), destroy ends them', async (t) => {
  const svc = new FakeForwardService()
  const server = http2.createServer()
  const sessions = new ClientSessions(server as unknown as http2.Http2SecureServer, {
    keepaliveMs: 0,
    logger: silentLogger(),
    onUnresponsive: () => {},
  })
  const adapter = new NativeH2Adapter(svc, silentLogger(), undefined, sessions)
  server.on('stream', (stream, headers) => {
    adapter.handle(stream, headers, NATIVE_PATH.exec(headers[':path'] ?? '') as RegExpExecArray)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
  client.on('error', () => {})
  t.after(async () => {
    client.destroy()
    await new Promise((r) => server.close(r))
  })
  const req = nativeRequest(client)
  req.on('error', () => {})
  ;(await svc.nextOpen()).accept()
  await once(req, 'response')
  let goaway = false
  client.once('goaway', () => (goaway = true))
  adapter.drain()
  await until(() => goaway, 'GOAWAY')
  let echoed = ''
  req.on('data', (c: Buffer) => (echoed += c.toString()))
  req.write('still open')
  await until(() => echoed === 'STILL OPEN', 'the echo after GOAWAY')
  adapter.destroy()
  await until(() => client.destroyed, 'the session ended')
})

/** The SPDY adapter on a real TCP connection, a SPDY test client on the other end. */
async function spdyGateway(t: { after: (f: () => unknown) => void }) {
  const svc = new FakeForwardService()
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const accepted = once(server, 'connection') as Promise<[net.Socket]>
  const socket = net.connect((server.address() as AddressInfo).port, '127.0.0.1')
  await once(socket, 'connect')
  const [serverSocket] = await accepted
  server.close()
  const session = svc.newSession({ protocol: 'spdy', sourceAddress: 'x', terminate: () => {} })
  const conn = serveSpdyPortForward(serverSocket, {
    forwarder: svc,
    logger: silentLogger(),
    session,
    authorization: 'Bearer t',
    target: { namespace: 'default', pod: 'echo' },
  })
  const client = new SpdyTestClient(socket)
  t.after(() => {
    socket.destroy()
    serverSocket.destroy()
  })
  return { svc, client, conn, session }
}

test('SPDY: each error+data pair is one open of the upgrade target; bytes both ways', async (t) => {
  const { svc, client, conn, session } = await spdyGateway(t)
  await client.openStream(pfHeaders('error', '1'))
  const data = await client.openStream(pfHeaders('data', '1'))
  const open = await svc.nextOpen()
  assert.deepEqual(
    [open.req.session, open.req.namespace, open.req.pod, open.req.port, open.req.authorization],
    [session, 'default', 'echo', 5000, 'Bearer t'],
  )
  open.accept()
  data.write(Buffer.from('hi there'))
  await until(() => data.text() === 'HI THERE', 'the echo')
  conn.destroy()
  await until(() => svc.ended.length === 1, 'endSession')
})

test('SPDY: a refusal is one line on the error stream (the kubelet way)', async (t) => {
  const { svc, client } = await spdyGateway(t)
  const err = await client.openStream(pfHeaders('error', '1'))
  await client.openStream(pfHeaders('data', '1'))
  ;(await svc.nextOpen()).refuse(
    appError('PFG_ERR_AUTH_FORBIDDEN', 'user "alice" cannot forward to port 5000'),
  )
  await err.ended
  assert.equal(err.text(), 'user "alice" cannot forward to port 5000')
  const err2 = await client.openStream(pfHeaders('error', '2'))
  await client.openStream(pfHeaders('data', '2'))
  ;(await svc.nextOpen()).refuse(new TypeError('a bug'))
  await err2.ended
  assert.equal(err2.text(), 'internal error')
})

/** The WebSocket channels adapter behind a real WebSocket server, a `ws` client connected to it. */
async function channelGateway(t: { after: (f: () => unknown) => void }, ports: number[]) {
  const svc = new FakeForwardService()
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await once(server, 'listening')
  const served = once(server, 'connection') as Promise<[WebSocket]>
  const client = new WebSocket(
    `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    V4_CHANNEL_PROTOCOL,
  )
  client.on('error', () => {})
  /** What the client got: `channel: text` (the port prefixes as numbers). */
  const got: string[] = []
  client.on('message', (data: Buffer) => {
    const channel = data[0] as number
    const payload = data.subarray(1)
    got.push(
      payload.length === 2
        ? `${channel}: #${payload.readUInt16LE(0)}`
        : `${channel}: ${payload.toString()}`,
    )
  })
  const closed = once(client, 'close') as Promise<[number]>
  const [ws] = await served
  await once(client, 'open')
  const session = svc.newSession({ protocol: 'ws-v4', sourceAddress: 'x', terminate: () => {} })
  const conn = serveChannelPortForward(ws, {
    forwarder: svc,
    logger: silentLogger(),
    session,
    authorization: 'Bearer t',
    target: { namespace: 'default', pod: 'echo' },
    ports,
    encoding: 'binary',
  })
  t.after(async () => {
    client.terminate()
    await new Promise((r) => server.close(r))
  })
  return { svc, client, conn, session, got, closed }
}

test('WebSocket channels: every port of the list is one open of the upgrade target; bytes both ways', async (t) => {
  const { svc, client, session, got } = await channelGateway(t, [8080])
  const open = await svc.nextOpen()
  assert.deepEqual(
    [open.req.session, open.req.namespace, open.req.pod, open.req.port, open.req.authorization],
    [session, 'default', 'echo', 8080, 'Bearer t'],
  )
  open.accept()
  client.send(Buffer.concat([Buffer.from([0]), Buffer.from('hi there')]))
  await until(() => got.includes('0: HI THERE'), 'the echo')
  // The port's number first, on its data and error channels (the kubelet's prefix).
  assert.deepEqual(got.slice(0, 2), ['0: #8080', '1: #8080'])
  client.close()
  await until(() => svc.ended.length === 1, 'endSession')
})

test('WebSocket channels: a refusal is one line on the port error channel; the last port done closes with 1000', async (t) => {
  const { svc, got, closed } = await channelGateway(t, [8080])
  ;(await svc.nextOpen()).refuse(
    appError('PFG_ERR_AUTH_FORBIDDEN', 'user "alice" cannot forward to port 8080'),
  )
  const [code] = await closed
  assert.equal(code, 1000)
  assert.deepEqual(got, ['0: #8080', '1: #8080', '1: user "alice" cannot forward to port 8080'])
})

test('WebSocket channels: a client that closes during the open is not relayed to; the late 200 is cancelled', async (t) => {
  const { svc, client, closed } = await channelGateway(t, [8080])
  const open = await svc.nextOpen()
  client.close()
  await closed
  await tick(10)
  open.accept()
  await tick(10)
  assert.equal(open.outcome.cancelled, CLIENT_LEFT)
  assert.equal(open.outcome.started, undefined)
  await until(() => svc.ended.length === 1, 'endSession')
})
