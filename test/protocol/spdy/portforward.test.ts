import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { RstStatus } from '../../../src/protocol/spdy/frames.js'
import { parseStreamPort, servePortForward } from '../../../src/protocol/spdy/portforward.js'
import type {
  PortForwardStreamIssue,
  SpdyForwardRequest,
  SpdyPortForwardOptions,
} from '../../../src/protocol/spdy/portforward.js'
import { closedPort, relaySpdyRequestToTcp } from '../../helpers/kube-protocol-server.js'
import { encodeSynStream } from './spdy-test-client.js'
import type { ClientStream, SpdyTestClient } from './spdy-test-client.js'
import { connect, pfHeaders, sha, until } from './loopback.js'

let echoServer: net.Server
let echoPort: number
let refused: number

before(async () => {
  echoServer = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {})
    s.pipe(s)
  })
  echoServer.listen(0, '127.0.0.1')
  await once(echoServer, 'listening')
  echoPort = (echoServer.address() as net.AddressInfo).port
  refused = await closedPort()
})

after(() => {
  echoServer.close()
})

interface Setup {
  client: SpdyTestClient
  requests: SpdyForwardRequest[]
  issues: PortForwardStreamIssue[]
  server: ReturnType<typeof servePortForward>
  closed: Promise<Error | undefined>
}

async function setup(
  t: { after: (fn: () => unknown) => void },
  onRequest: (r: SpdyForwardRequest) => void,
  options: Partial<SpdyPortForwardOptions> = {},
): Promise<Setup> {
  const p = await connect(t)
  p.session.removeAllListeners('stream')
  const requests: SpdyForwardRequest[] = []
  const issues: PortForwardStreamIssue[] = []
  const server = servePortForward(p.session, {
    ...options,
    onRequest: (r) => {
      requests.push(r)
      onRequest(r)
    },
    onStreamIssue: (i) => issues.push(i),
  })
  return { client: p.client, requests, issues, server, closed: p.closed }
}

/** kubectl's order: error stream, wait for its reply, FIN it, then the data stream. */
async function kubectlPair(
  client: SpdyTestClient,
  requestId: string,
  port = '5000',
): Promise<{ err: ClientStream; data: ClientStream }> {
  const err = await client.openStream({ streamtype: 'error', port, requestid: requestId })
  await err.replied
  err.end()
  const data = await client.openStream({ streamtype: 'data', port, requestid: requestId })
  await data.replied
  return { err, data }
}

/** Index of a frame in the client's log. */
function at(client: SpdyTestClient, pred: (f: SpdyTestClient['log'][number]) => boolean): number {
  const i = client.log.findIndex(pred)
  assert.ok(i >= 0, 'frame not found')
  return i
}

test('parseStreamPort follows the kubelet (ParseUint base 10, 16 bits, > 0)', () => {
  assert.equal(parseStreamPort('5000'), 5000)
  assert.equal(parseStreamPort('65535'), 65535)
  assert.equal(parseStreamPort('05000'), 5000)
  for (const bad of [
    undefined,
    '',
    '0',
    '65536',
    '-1',
    '+80',
    ' 80',
    '80 ',
    '1e3',
    'http',
    '123456',
  ]) {
    assert.equal(parseStreamPort(bad), undefined, String(bad))
  }
})

test('a kubectl pair: replies at once, one request, data relayed, closes error then data', async (t) => {
  const s = await setup(t, (r) => relaySpdyRequestToTcp(r, echoPort))
  const { err, data } = await kubectlPair(s.client, '0')
  assert.equal(s.requests.length, 1)
  const req = s.requests[0]!
  assert.equal(req.port, 5000)
  assert.equal(req.requestId, '0')
  assert.equal(req.errorStreamId, 1)
  assert.equal(req.dataStreamId, 3)
  const payload = randomBytes(2 * 1024 * 1024)
  data.write(payload, true)
  await data.ended
  await err.ended
  assert.equal(data.digest(), sha(payload))
  assert.equal(err.received, 0, 'no error text')
  // docs/kubernetes-protocols.md#the-kubelets-side: error-stream FIN, then data-stream FIN.
  const errFin = at(s.client, (f) => f.kind === 'data' && f.streamId === 1 && f.fin)
  const dataFin = at(s.client, (f) => f.kind === 'data' && f.streamId === 3 && f.fin)
  assert.ok(errFin < dataFin, 'error stream FIN comes first')
  assert.ok(req.settled)
  // kubectl 1.32+ then resets the data stream: harmless.
  data.reset(RstStatus.CANCEL)
  await s.client.ping(1)
  assert.deepEqual(s.issues, [])
  assert.deepEqual(s.client.errors, [])
})

test('the error stream is replied to before the data stream exists', async (t) => {
  const s = await setup(t, () => {})
  const err = await s.client.openStream(pfHeaders('error', '7'))
  await err.replied
  assert.equal(s.requests.length, 0)
  assert.equal(s.server.pendingPairs, 1)
})

test('a refused pod port: error text, error FIN, data FIN', async (t) => {
  const s = await setup(t, (r) => relaySpdyRequestToTcp(r, refused))
  const { err, data } = await kubectlPair(s.client, '0', '5001')
  await err.ended
  await data.ended
  assert.match(err.text(), /^error forwarding port 5001 to pod demo, uid : connect ECONNREFUSED/)
  const text = at(s.client, (f) => f.kind === 'data' && f.streamId === 1 && f.length > 0)
  const errFin = at(s.client, (f) => f.kind === 'data' && f.streamId === 1 && f.fin)
  const dataFin = at(s.client, (f) => f.kind === 'data' && f.streamId === 3 && f.fin)
  assert.ok(text < errFin && errFin < dataFin)
})

const invalid: [string, Record<string, string>][] = [
  ['no port', { streamtype: 'data', requestid: '0' }],
  ['port 0', { streamtype: 'data', port: '0', requestid: '0' }],
  ['port 65536', { streamtype: 'data', port: '65536', requestid: '0' }],
  ['port abc', { streamtype: 'error', port: 'abc', requestid: '0' }],
  ['no streamtype', { port: '5000', requestid: '0' }],
  ['streamtype bogus', { streamtype: 'bogus', port: '5000', requestid: '0' }],
]
for (const [name, headers] of invalid) {
  test(`an invalid stream is reset with CANCEL and never replied to: ${name}`, async (t) => {
    const s = await setup(t, () => {})
    const c = await s.client.openStream(headers)
    assert.equal(await c.wasReset, RstStatus.CANCEL)
    await s.client.ping(1)
    assert.equal(c.isReplied, false)
    assert.equal(s.issues.length, 1)
    assert.equal(s.issues[0]!.kind, 'rejected')
    assert.equal(s.server.pendingPairs, 0)
  })
}

test('a pair that never completes: "timed out waiting for streams", then FIN', async (t) => {
  const s = await setup(t, () => {}, { streamCreationTimeoutMs: 100 })
  const err = await s.client.openStream(pfHeaders('error', '3'))
  await err.replied
  err.end()
  await err.ended
  assert.equal(err.text(), '(request=3) timed out waiting for streams')
  assert.equal(s.issues[0]!.kind, 'timeout')
  assert.equal(s.server.pendingPairs, 0)
  // A lone data stream is reset instead.
  const data = await s.client.openStream(pfHeaders('data', '4'))
  assert.equal(await data.wasReset, RstStatus.CANCEL)
  assert.equal(s.requests.length, 0)
})

test('a second error stream for one request is reset', async (t) => {
  const s = await setup(t, () => {})
  const e1 = await s.client.openStream(pfHeaders('error', '1'))
  await e1.replied
  const e2 = await s.client.openStream(pfHeaders('error', '1'))
  assert.equal(await e2.wasReset, RstStatus.CANCEL)
  assert.equal(s.issues[0]!.kind, 'duplicate')
  assert.equal(e1.resetStatus, undefined)
})

test('old clients without requestid are paired by stream id', async (t) => {
  const s = await setup(t, (r) => relaySpdyRequestToTcp(r, echoPort))
  const err = await s.client.openStream({ streamtype: 'error', port: '5000' })
  await err.replied
  const data = await s.client.openStream({ streamtype: 'data', port: '5000' })
  await data.replied
  assert.equal(s.requests[0]!.requestId, '1')
  data.write(Buffer.from('ping'), true)
  await data.ended
  assert.equal(data.text(), 'ping')
})

test('reset(): RST CANCEL on data, FIN on the error stream', async (t) => {
  const s = await setup(t, (r) => setImmediate(() => r.reset()))
  const { err, data } = await kubectlPair(s.client, '0')
  assert.equal(await data.wasReset, RstStatus.CANCEL)
  await err.ended
  assert.equal(err.received, 0)
})

test('a relay that ends data itself still gets the error stream finished', async (t) => {
  const s = await setup(t, (r) => r.data.end('bye'))
  const { err, data } = await kubectlPair(s.client, '0')
  await data.ended
  await err.ended
  assert.equal(data.text(), 'bye')
  assert.ok(s.requests[0]!.settled)
})

test('the client resetting the data stream settles the request and finishes the error stream', async (t) => {
  let closed = false
  const s = await setup(t, (r) => r.data.on('close', () => (closed = true)))
  const { err, data } = await kubectlPair(s.client, '0')
  data.reset(RstStatus.CANCEL)
  await err.ended
  await until(() => closed, 'data close')
  assert.ok(s.requests[0]!.settled)
  // finish() after the fact is a no-op.
  s.requests[0]!.finish()
  s.requests[0]!.fail('late')
  await s.client.ping(1)
  assert.equal(err.received, 0)
})

test('an onRequest that throws fails only that connection', async (t) => {
  const s = await setup(t, (r) => {
    if (r.requestId === '0') throw new Error('bug in the relay')
    relaySpdyRequestToTcp(r, echoPort)
  })
  const a = await kubectlPair(s.client, '0')
  await a.err.ended
  assert.equal(a.err.text(), 'internal error')
  const b = await kubectlPair(s.client, '1')
  b.data.write(Buffer.from('still works'), true)
  await b.data.ended
  assert.equal(b.data.text(), 'still works')
})

test('the session dying clears pending pairs and their timers', async (t) => {
  const s = await setup(t, () => {}, { streamCreationTimeoutMs: 60_000 })
  const timersBefore = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length
  const err = await s.client.openStream(pfHeaders('error', '9'))
  await err.replied
  assert.equal(s.server.pendingPairs, 1)
  assert.equal(
    process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length,
    timersBefore + 1,
  )
  s.client.transport.destroy()
  await s.closed
  await sleep(10)
  assert.equal(s.server.pendingPairs, 0)
  assert.equal(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length, timersBefore)
})

test('many pairs in flight: every connection gets its own bytes', async (t) => {
  const s = await setup(t, (r) => relaySpdyRequestToTcp(r, echoPort))
  const n = 20
  const pairs = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const err = await s.client.openStream(pfHeaders('error', String(i)))
      await err.replied
      err.end()
      return { err, data: await s.client.openStream(pfHeaders('data', String(i))) }
    }),
  )
  const payloads = pairs.map(() => randomBytes(100_000 + Math.floor(Math.random() * 100_000)))
  pairs.forEach((p, i) => p.data.write(payloads[i]!, true))
  await Promise.all(pairs.map((p) => p.data.ended))
  pairs.forEach((p, i) => assert.equal(p.data.digest(), sha(payloads[i]!)))
  await Promise.all(pairs.map((p) => p.err.ended))
  assert.equal(s.requests.length, n)
})

test('close() detaches: later streams are refused', async (t) => {
  const s = await setup(t, () => {})
  s.server.close()
  const c = await s.client.openStream(pfHeaders('error'))
  assert.equal(await c.wasReset, RstStatus.REFUSED_STREAM)
  // A SYN_STREAM made by hand still decodes in order after that.
  const block = await s.client.compress(pfHeaders('data'))
  const d = s.client.track(3)
  s.client.writeRaw(encodeSynStream(3, block))
  assert.equal(await d.wasReset, RstStatus.REFUSED_STREAM)
})
