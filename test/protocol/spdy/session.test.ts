import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { SpdySession } from '../../../src/protocol/spdy/session.js'
import {
  FrameType,
  GoawayStatus,
  RstStatus,
  SpdyProtocolError,
  encodeDataFrame,
} from '../../../src/protocol/spdy/frames.js'
import { encodeControlFrame, encodeSynStream } from './spdy-test-client.js'
import { connect, pfHeaders, sha, until, whenClosed } from './loopback.js'

test('nothing is written before the client speaks; then PINGs are echoed', async (t) => {
  const p = await connect(t)
  let rtt: number | undefined
  p.session.ping((err, ms) => {
    assert.equal(err, null)
    rtt = ms
  })
  await sleep(150)
  assert.equal(p.client.bytesBeforeFirstWrite, 0, 'the server wrote before the client spoke')
  await p.client.ping(1)
  await p.client.ping(3)
  await until(() => rtt !== undefined, 'our ping reply')
  assert.deepEqual(
    p.client.log.map((f) => f.kind === 'ping' && f.id),
    [2, 1, 3],
    'our held PING goes first, then the echoes',
  )
  assert.deepEqual(p.client.errors, [])
})

test('streams: headers, SYN_REPLY first, data both ways, half-close each way', async (t) => {
  const p = await connect(t)
  const errStreamP = p.client.openStream(pfHeaders('error'))
  const srvErr = await p.nextStream()
  assert.equal(srvErr.id, 1)
  assert.equal(srvErr.header('streamtype'), 'error')
  assert.deepEqual(srvErr.headers.get('port'), ['5000'])
  srvErr.reply()
  srvErr.resume()
  const cErr = await errStreamP
  await cErr.replied
  cErr.end()

  const cData = await p.client.openStream(pfHeaders('data'))
  const srvData = await p.nextStream()
  assert.equal(srvData.id, 3)
  // Write before replying: the SYN_REPLY must still come first (checked by the client).
  srvData.write('hello ')
  srvData.write(Buffer.from('from the server'))
  await cData.replied

  const up = randomBytes(3 * 1024 * 1024 + 17)
  const down = randomBytes(5 * 1024 * 1024 + 3)
  const got: Buffer[] = []
  srvData.on('data', (c: Buffer) => got.push(c))
  const srvEnded = once(srvData, 'end')
  cData.write(up, true)
  await srvEnded
  assert.equal(sha(Buffer.concat(got)), sha(up))

  srvData.end(down)
  await cData.ended
  assert.equal(cData.received, 21 + down.length)
  assert.equal(cData.digest(), sha(Buffer.concat([Buffer.from('hello from the server'), down])))
  srvErr.end()
  await cErr.ended
  await whenClosed(srvData)
  await whenClosed(srvErr)
  assert.equal(p.session.streamCount, 0)

  // DATA frames we wrote are at most 64 KiB; FIN is a zero-length DATA frame.
  const dataFrames = p.client.framesOf('data').filter((f) => f.streamId === 3)
  assert.ok(dataFrames.every((f) => f.length <= 64 * 1024))
  assert.deepEqual(dataFrames.at(-1), { kind: 'data', streamId: 3, length: 0, fin: true })
  // Only SYN_REPLY and DATA came back: no SETTINGS, WINDOW_UPDATE or anything else.
  assert.deepEqual([...new Set(p.client.log.map((f) => f.kind))].sort(), ['data', 'syn_reply'])
  assert.deepEqual(p.client.errors, [])
})

test('RST both ways; DATA for a reset stream is dropped', async (t) => {
  const p = await connect(t)
  const c1 = await p.client.openStream(pfHeaders('data', '1'))
  const s1 = await p.nextStream()
  s1.reply()
  await c1.replied
  const resetSeen = once(s1, 'reset') as Promise<[{ status: number }]>
  c1.reset(RstStatus.CANCEL)
  const [info] = await resetSeen
  assert.equal(info.status, RstStatus.CANCEL)
  await whenClosed(s1)
  assert.equal(s1.resetStatus, RstStatus.CANCEL)
  assert.equal(s1.readableEnded, false)
  c1.write(Buffer.from('late data'))

  // Reset from our side, before the reply was even compressed: RST follows SYN_REPLY.
  const c2 = await p.client.openStream(pfHeaders('data', '2'))
  const s2 = await p.nextStream()
  s2.reply()
  s2.reset(RstStatus.REFUSED_STREAM)
  assert.equal(await c2.wasReset, RstStatus.REFUSED_STREAM)
  assert.ok(c2.isReplied)

  // destroy() without reset(): CANCEL.
  const c3 = await p.client.openStream(pfHeaders('data', '3'))
  const s3 = await p.nextStream()
  s3.reply()
  await c3.replied
  s3.destroy()
  assert.equal(await c3.wasReset, RstStatus.CANCEL)

  await p.client.ping(1)
  assert.equal(p.session.streamCount, 0)
  assert.deepEqual(p.client.errors, [])
})

test('stream ids must increase and be odd; unanswered streams are refused', async (t) => {
  const p = await connect(t)
  const c5 = p.client.track(5)
  p.client.writeRaw(encodeSynStream(5, await p.client.compress(pfHeaders('error'))))
  const s5 = await p.nextStream()
  s5.reply()
  await c5.replied
  const c3 = p.client.track(3)
  p.client.writeRaw(encodeSynStream(3, await p.client.compress(pfHeaders('error'))))
  assert.equal(await c3.wasReset, RstStatus.PROTOCOL_ERROR)
  const c8 = p.client.track(8)
  p.client.writeRaw(encodeSynStream(8, await p.client.compress(pfHeaders('error'))))
  assert.equal(await c8.wasReset, RstStatus.PROTOCOL_ERROR)
  // A header block that inflates but is malformed: that stream only.
  const c9 = p.client.track(9)
  const upper = Buffer.from('00000001 00000004 504f5254 00000001 31'.replace(/ /g, ''), 'hex')
  p.client.writeRaw(encodeSynStream(9, await p.client.compressRaw(upper)))
  assert.equal(await c9.wasReset, RstStatus.PROTOCOL_ERROR)
  // ...and the session goes on: the inflate is still in step.
  const c11 = p.client.track(11)
  p.client.writeRaw(encodeSynStream(11, await p.client.compress(pfHeaders('error'))))
  const s11 = await p.nextStream()
  assert.equal(s11.id, 11)
  s11.reset()
  assert.equal(await c11.wasReset, RstStatus.CANCEL)

  p.session.removeAllListeners('stream')
  const c13 = await p.client.openStream(pfHeaders('error'))
  assert.equal(c13.id, 13)
  assert.equal(await c13.wasReset, RstStatus.REFUSED_STREAM)
  assert.equal(p.session.lastGoodStreamId, 11)
})

test('concurrent streams cap: REFUSED_STREAM past maxConcurrentStreams', async (t) => {
  const p = await connect(t, { maxConcurrentStreams: 2 }, (s) => s.reply())
  const a = await p.client.openStream(pfHeaders('error', 'a'))
  const b = await p.client.openStream(pfHeaders('error', 'b'))
  const c = await p.client.openStream(pfHeaders('error', 'c'))
  await a.replied
  await b.replied
  assert.equal(await c.wasReset, RstStatus.REFUSED_STREAM)
})

test('many streams at once keep their data apart', async (t) => {
  const p = await connect(t, {}, (s) => {
    s.reply()
    s.pipe(s) // echo
  })
  const n = 40
  const payloads = Array.from({ length: n }, (_, i) => randomBytes(50_000 + i * 997))
  const clients = await Promise.all(
    payloads.map((_, i) => p.client.openStream(pfHeaders('data', String(i)))),
  )
  clients.forEach((c, i) => c.write(payloads[i]!, true))
  await Promise.all(clients.map((c) => c.ended))
  clients.forEach((c, i) => assert.equal(c.digest(), sha(payloads[i]!), `stream ${c.id}`))
  await until(() => p.session.streamCount === 0, 'streams to retire')
  assert.deepEqual(p.client.errors, [])
})

test('backpressure: a slow client makes stream writes report it, without unbounded buffering', async (t) => {
  const p = await connect(t, { streamHighWaterMark: 64 * 1024 })
  const c = await p.client.openStream(pfHeaders('data'))
  const s = await p.nextStream()
  s.reply()
  await c.replied
  c.keepData = false
  p.clientSocket.pause()
  const chunk = Buffer.alloc(64 * 1024, 9)
  let written = 0
  // Write until write() says no and no 'drain' comes: TCP is full.
  for (;;) {
    written += chunk.length
    if (s.write(chunk)) continue
    const drained = await Promise.race([
      once(s, 'drain').then(() => true),
      sleep(300).then(() => false),
    ])
    if (!drained) break
    assert.ok(written < 512 * 1024 * 1024, 'backpressure never came')
  }
  const buffered = p.serverSocket.writableLength + s.writableLength
  assert.ok(buffered < 4 * 1024 * 1024, `buffered ${buffered} bytes in the process`)
  // Releasing the reader delivers everything.
  p.clientSocket.resume()
  s.end()
  await c.ended
  assert.equal(c.received, written)
})

test('backpressure: a stream nobody reads stops the session reading the transport', async (t) => {
  const p = await connect(t, { streamHighWaterMark: 32 * 1024 })
  const c = await p.client.openStream(pfHeaders('data'))
  const s = await p.nextStream()
  s.reply()
  await c.replied
  const big = Buffer.alloc(16 * 1024 * 1024, 1)
  c.write(big, true)
  await sleep(300)
  assert.ok(s.readableLength <= 32 * 1024 + 64 * 1024, `stream holds ${s.readableLength}`)
  assert.ok(p.serverSocket.isPaused(), 'transport paused')
  assert.ok(p.clientSocket.writableLength > 1024 * 1024, 'the client is held back by TCP')
  let got = 0
  s.on('data', (d: Buffer) => (got += d.length))
  await once(s, 'end')
  assert.equal(got, big.length)
})

test('client GOAWAY ends the session once streams are done', async (t) => {
  const p = await connect(t, {}, (s) => s.reply())
  const c = await p.client.openStream(pfHeaders('error'))
  await c.replied
  const s = p.streams[0]!
  const goaway = once(p.session, 'goaway')
  p.client.sendGoaway(1, 0)
  assert.deepEqual((await goaway)[0], { lastGoodStreamId: 1, status: 0 })
  assert.equal(p.session.accepting, false)
  s.end()
  c.end()
  assert.equal(await p.closed, undefined)
  await p.client.closed
})

test('close(): GOAWAY with the last good stream, then the transport ends', async (t) => {
  const p = await connect(t, {}, (s) => s.reply())
  const c = await p.client.openStream(pfHeaders('error'))
  await c.replied
  const srv = p.streams[0]!
  p.session.close()
  const g = await p.client.goaway
  assert.deepEqual(g, { lastGoodStreamId: 1, status: GoawayStatus.OK })
  await whenClosed(srv)
  p.clientSocket.end()
  assert.equal(await p.closed, undefined)
  assert.equal(p.serverSocket.listenerCount('data'), 0, 'listeners removed')
  assert.equal(p.serverSocket.listenerCount('drain'), 0)
})

test('close({ graceful }): new streams refused, GOAWAY only after the last stream', async (t) => {
  const p = await connect(t, {}, (s) => s.reply())
  const c1 = await p.client.openStream(pfHeaders('data'))
  await c1.replied
  const s1 = p.streams[0]!
  p.session.close({ graceful: true })
  const c2 = await p.client.openStream(pfHeaders('data', '9'))
  assert.equal(await c2.wasReset, RstStatus.REFUSED_STREAM)
  assert.equal(p.client.framesOf('goaway').length, 0)
  s1.end('bye')
  c1.end()
  assert.deepEqual(await p.client.goaway, { lastGoodStreamId: 1, status: 0 })
  assert.equal(c1.text(), 'bye')
  await p.closed
})

test('close() before the client spoke sends nothing', async (t) => {
  const p = await connect(t, { closeTimeoutMs: 200 })
  p.session.close()
  await p.client.closed
  assert.equal(p.client.bytesBeforeFirstWrite, 0)
  assert.equal(await p.closed, undefined)
})

test('a malformed frame: GOAWAY PROTOCOL_ERROR, close, streams destroyed', async (t) => {
  const p = await connect(t, { closeTimeoutMs: 500 }, (s) => s.reply())
  const c = await p.client.openStream(pfHeaders('data'))
  await c.replied
  const s = p.streams[0]!
  p.client.writeRaw(encodeControlFrame(FrameType.GOAWAY, 0, Buffer.alloc(12)))
  assert.deepEqual(await p.client.goaway, {
    lastGoodStreamId: 1,
    status: GoawayStatus.PROTOCOL_ERROR,
  })
  await whenClosed(s)
  const err = await p.closed
  assert.ok(err instanceof SpdyProtocolError, String(err))
  assert.match(err.message, /GOAWAY length 12/)
})

test('an oversized control frame is refused before it is buffered', async (t) => {
  const p = await connect(t, { maxControlFrameSize: 4096, closeTimeoutMs: 300 })
  const header = encodeControlFrame(FrameType.SETTINGS, 0, Buffer.alloc(0))
  header.writeUIntBE(1 << 20, 5, 3)
  p.client.writeRaw(header)
  p.client.writeRaw(Buffer.alloc(200_000))
  const err = await p.closed
  assert.match(String(err), /exceeds the 4096-byte limit/)
})

test('the transport dying ends everything; no timers or listeners are left', async (t) => {
  const p = await connect(t, {}, (s) => s.reply())
  const c = await p.client.openStream(pfHeaders('data'))
  await c.replied
  const s = p.streams[0]!
  let pingErr: Error | null | undefined
  p.session.ping((e) => (pingErr = e))
  p.clientSocket.destroy()
  await whenClosed(s)
  await p.closed
  await until(() => pingErr !== undefined, 'ping callback')
  assert.match(String(pingErr), /closed/)
  assert.ok(p.session.closed)
  assert.equal(p.serverSocket.listenerCount('data'), 0)
  assert.equal(p.serverSocket.listenerCount('drain'), 0)
  p.session.close()
  p.session.destroy()
})

test('destroy() ends the session at once and reports the given error', async (t) => {
  const p = await connect(t, {}, (s) => s.reply())
  const c = await p.client.openStream(pfHeaders('data'))
  await c.replied
  const boom = new Error('admin kill')
  p.session.destroy(boom)
  assert.equal(await p.closed, boom)
  await p.client.closed
})

test('head bytes from the upgrade are the start of the first frame', async (t) => {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  const accepted = once(server, 'connection') as Promise<[net.Socket]>
  const clientSocket = net.connect(port, '127.0.0.1')
  await once(clientSocket, 'connect')
  const [serverSocket] = await accepted
  server.close()
  t.after(() => {
    clientSocket.destroy()
    serverSocket.destroy()
  })
  const ping = Buffer.from('8003000600000004000000 07'.replace(/ /g, ''), 'hex')
  const session = new SpdySession(serverSocket, { head: ping.subarray(0, 5) })
  clientSocket.write(ping.subarray(5))
  const [echo] = (await once(clientSocket, 'data')) as [Buffer]
  assert.deepEqual(echo, ping)
  session.destroy()
})

test('SYN_STREAM with FIN: the readable side is already ended', async (t) => {
  const p = await connect(t)
  const c = await p.client.openStream(pfHeaders('error'), true)
  const s = await p.nextStream()
  s.resume()
  await once(s, 'end')
  s.end('text')
  await c.ended
  assert.equal(c.text(), 'text')
  await whenClosed(s)
  assert.equal(p.session.streamCount, 0)
})

test('DATA after the client FIN resets the stream with STREAM_ALREADY_CLOSED', async (t) => {
  const p = await connect(t, {}, (s) => s.reply())
  const c = await p.client.openStream(pfHeaders('data'))
  await c.replied
  c.end()
  p.client.writeRaw(encodeDataFrame(c.id, Buffer.from('x'), false))
  assert.equal(await c.wasReset, RstStatus.STREAM_ALREADY_CLOSED)
})
