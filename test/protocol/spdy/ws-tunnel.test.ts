/**
 * The SPDY session over a WebSocket byte stream (protocol B): message boundaries
 * mean nothing, 0-byte messages are fine, text is fatal, close 1000 is EOF.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import type net from 'node:net'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { Duplex } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { WebSocket, WebSocketServer } from 'ws'
import { SpdySession } from '../../../src/protocol/spdy/session.js'
import type { SpdyStream } from '../../../src/protocol/spdy/session.js'
import { GoawayStatus } from '../../../src/protocol/spdy/frames.js'
import { createWebSocketByteStream } from '../../../src/protocol/ws-stream.js'
import { SpdyTestClient } from './spdy-test-client.js'
import { pfHeaders, sha, until } from './loopback.js'

interface Tunnel {
  ws: WebSocket
  client: SpdyTestClient
  session: SpdySession
  streams: SpdyStream[]
  closed: Promise<Error | undefined>
  wsClosed: Promise<number>
  sizes: number[]
}

/**
 * A ws client whose writes are cut into random small binary messages, with 0-byte
 * messages in between (as kubectl's spdystream does,
 * docs/kubernetes-protocols.md#framing-in-the-tunnel).
 */
function choppyStream(ws: WebSocket, sizes: number[], maxPiece: number): Duplex {
  let seed = 7
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  const d = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      for (let off = 0; off < chunk.length;) {
        const n = Math.min(chunk.length - off, 1 + rnd(maxPiece))
        ws.send(chunk.subarray(off, off + n), { binary: true })
        sizes.push(n)
        if (rnd(4) === 0) {
          ws.send(Buffer.alloc(0), { binary: true })
          sizes.push(0)
        }
        off += n
      }
      cb()
    },
  })
  ws.on('message', (m: Buffer) => d.push(m))
  ws.on('close', () => d.destroy())
  return d
}

async function tunnel(
  t: { after: (fn: () => unknown) => void },
  maxPiece = 3,
  onStream: (s: SpdyStream) => void = (s) => s.reply(),
): Promise<Tunnel> {
  const server = http.createServer()
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false })
  let session!: SpdySession
  const streams: SpdyStream[] = []
  let resolveClosed!: (e: Error | undefined) => void
  const closed = new Promise<Error | undefined>((r) => (resolveClosed = r))
  const ready = new Promise<void>((resolve) => {
    server.on('upgrade', (req, socket, head) => {
      wss.handleUpgrade(req, socket, head, (ws) => {
        session = new SpdySession(createWebSocketByteStream(ws))
        session.on('stream', (s) => {
          streams.push(s)
          onStream(s)
        })
        session.on('close', resolveClosed)
        resolve()
      })
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false })
  const wsClosed = new Promise<number>((r) => ws.on('close', (code) => r(code)))
  ws.on('error', () => {})
  await once(ws, 'open')
  await ready
  const sizes: number[] = []
  const client = new SpdyTestClient(choppyStream(ws, sizes, maxPiece))
  t.after(() => {
    ws.terminate()
    for (const c of wss.clients) c.terminate()
    wss.close()
    server.close()
  })
  return { ws, client, session, streams, closed, wsClosed, sizes }
}

test('frames cut into 1–3 byte messages and 0-byte messages still parse', async (t) => {
  const tn = await tunnel(t, 3, (s) => {
    s.reply()
    s.pipe(s)
  })
  const err = await tn.client.openStream(pfHeaders('error'))
  await err.replied
  const data = await tn.client.openStream(pfHeaders('data'))
  await data.replied
  const payload = randomBytes(20_000)
  data.write(payload, true)
  await data.ended
  assert.equal(data.digest(), sha(payload))
  assert.ok(tn.sizes.includes(0), 'some 0-byte messages were sent')
  assert.ok(Math.max(...tn.sizes) <= 3)
  assert.deepEqual(tn.client.errors, [])
})

test('large transfers through the tunnel in both directions', async (t) => {
  const tn = await tunnel(t, 40_000, (s) => {
    s.reply()
    s.pipe(s)
  })
  const data = await tn.client.openStream(pfHeaders('data'))
  await data.replied
  const payload = randomBytes(8 * 1024 * 1024)
  const started = performance.now()
  data.write(payload, true)
  await data.ended
  const ms = performance.now() - started
  assert.equal(data.digest(), sha(payload))
  t.diagnostic(`ws tunnel echo: 16 MiB moved in ${ms.toFixed(0)} ms`)
})

test('a text message is fatal: close 1003, session ends with an error', async (t) => {
  const tn = await tunnel(t)
  await tn.client.ping(1)
  tn.ws.send('not binary')
  assert.equal(await tn.wsClosed, 1003)
  assert.match(String(await tn.closed), /text message/)
})

test('close 1000 from the client is a clean end', async (t) => {
  const tn = await tunnel(t)
  const c = await tn.client.openStream(pfHeaders('error'))
  await c.replied
  const s = tn.streams[0]!
  tn.ws.close(1000)
  assert.equal(await tn.closed, undefined)
  await until(() => s.destroyed, 'stream destroyed')
})

test('any other close code ends the session with an error', async (t) => {
  const tn = await tunnel(t)
  await tn.client.ping(1)
  tn.ws.close(4000, 'bye')
  assert.match(String(await tn.closed), /code 4000/)
})

test('session.close(): GOAWAY, then a close 1000', async (t) => {
  const tn = await tunnel(t)
  await tn.client.ping(1)
  tn.session.close()
  assert.deepEqual(await tn.client.goaway, { lastGoodStreamId: 0, status: GoawayStatus.OK })
  assert.equal(await tn.wsClosed, 1000)
  assert.equal(await tn.closed, undefined)
})

test('a client that stops reading makes stream writes report backpressure', async (t) => {
  const tn = await tunnel(t, 40_000)
  const c = await tn.client.openStream(pfHeaders('data'))
  await c.replied
  c.keepData = false
  const s = tn.streams[0]!
  tn.ws.pause()
  const chunk = Buffer.alloc(64 * 1024)
  let written = 0
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
  tn.ws.resume()
  s.end()
  await c.ended
  assert.equal(c.received, written)
})
