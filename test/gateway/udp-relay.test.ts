/**
 * The gateway's UDP flow relay between two real HTTP/2 hops: a client stream ⇄ the
 * gateway (UdpFlowRelay) ⇄ an agent (AgentUdpFlow, static dialer) ⇄ a real UDP echo.
 * Clean ends carry the agent's trailers into the outcome; idle ends are clean; an ICMP
 * port unreachable from the pod's port ends the flow as the pod's doing.
 *
 * @module
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createSocket } from 'node:dgram'
import type { Socket as UdpSocket } from 'node:dgram'
import { connect, createServer } from 'node:http2'
import type { ClientHttp2Session, Http2Server, IncomingHttpHeaders } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { StaticDialer } from '../../src/agent/static-dialer.js'
import { AgentUdpFlow } from '../../src/agent/udp-flow.js'
import { UdpFlowRelay } from '../../src/gateway/udp-relay.js'
import type { UdpRelayOutcome } from '../../src/gateway/udp-relay.js'
import { DatagramStream } from '../../src/shared/datagram-stream.js'
import type { DatagramStreamEnd } from '../../src/shared/datagram-stream.js'
import { UDP_END_TRAILER } from '../../src/protocol/udp-frames.js'

const listen = (s: Http2Server): Promise<number> =>
  new Promise((r) => s.listen(0, '127.0.0.1', () => r((s.address() as AddressInfo).port)))

describe('gateway UDP flow relay', () => {
  let echo: UdpSocket
  let echoPort: number
  let agent: Http2Server
  let gateway: Http2Server
  let toAgent: ClientHttp2Session
  let client: ClientHttp2Session
  const dialer = new StaticDialer([{ namespace: 't', name: 'p' }])
  const outcomes: UdpRelayOutcome[] = []
  const relays: UdpFlowRelay[] = []

  before(async () => {
    echo = createSocket('udp4')
    echo.on('message', (m, r) => echo.send(m, r.port, r.address))
    await new Promise<void>((r) => echo.bind(0, '127.0.0.1', r))
    echoPort = echo.address().port
    agent = createServer()
    agent.on('stream', (stream, headers) => {
      void dialer
        .dialUdp({ namespace: 't', name: 'p' }, Number(headers.port), {
          signal: new AbortController().signal,
          timeoutMs: 1000,
        })
        .then((pod) => new AgentUdpFlow(stream, pod, () => undefined))
    })
    toAgent = connect(`http://127.0.0.1:${await listen(agent)}`)
    gateway = createServer()
    gateway.on('stream', (stream, headers) => {
      const up = toAgent.request({ ':method': 'POST', ':path': '/', port: String(headers.port) })
      up.once('response', () => {
        stream.respond({ ':status': 200 }, { waitForTrailers: true })
        relays.push(new UdpFlowRelay(stream, up, { onDone: (o) => outcomes.push(o) }))
      })
    })
    client = connect(`http://127.0.0.1:${await listen(gateway)}`)
  })

  after(async () => {
    client.close()
    toAgent.close()
    await new Promise<void>((r) => gateway.close(() => r()))
    await new Promise<void>((r) => agent.close(() => r()))
    await dialer.close()
    echo.close()
  })

  function flow(port: number): {
    ds: DatagramStream
    got: string[]
    ended: Promise<DatagramStreamEnd>
    trailers: Promise<IncomingHttpHeaders>
  } {
    const stream = client.request({ ':method': 'POST', ':path': '/', port: String(port) })
    const got: string[] = []
    let done!: (e: DatagramStreamEnd) => void
    const ended = new Promise<DatagramStreamEnd>((r) => (done = r))
    const trailers = new Promise<IncomingHttpHeaders>((r) => stream.once('trailers', r))
    const ds = new DatagramStream(stream, { datagram: (d) => got.push(String(d)), end: done })
    return { ds, got, ended, trailers }
  }

  const until = async (cond: () => boolean): Promise<void> => {
    const deadline = Date.now() + 3000
    while (!cond()) {
      if (Date.now() > deadline) throw new Error('timed out')
      await new Promise((r) => setTimeout(r, 10))
    }
  }

  test("the client ends the flow: counts each way and the agent's trailers in the outcome", async () => {
    const f = flow(echoPort)
    f.ds.send(Buffer.from('one'))
    f.ds.send(Buffer.from('three'))
    await until(() => f.got.length === 2)
    f.ds.stream.end()
    assert.equal((await f.trailers)[UDP_END_TRAILER], 'client')
    await until(() => outcomes.length === 1)
    const o = outcomes[0]!
    assert.equal(o.by, 'client')
    assert.equal(o.datagramsClientToPod, 2)
    assert.equal(o.datagramsPodToClient, 2)
    assert.equal(o.bytesClientToPod, 8)
    assert.equal(o.droppedGateway, 0)
    assert.equal(o.droppedAgent, 0)
    assert.equal(o.wrongSource, 0)
  })

  test('an idle end is clean: the client reads trailers saying idle', async () => {
    const f = flow(echoPort)
    f.ds.send(Buffer.from('x'))
    await until(() => f.got.length === 1)
    relays.at(-1)!.end('idle')
    assert.equal((await f.trailers)[UDP_END_TRAILER], 'idle')
    assert.equal((await f.ended).kind, 'ended')
    await until(() => outcomes.length === 2)
    assert.equal(outcomes[1]!.by, 'local')
    assert.equal(outcomes[1]!.reason, 'idle')
    assert.equal(outcomes[1]!.droppedAgent, 0)
    f.ds.stream.end()
  })

  test("a pod port that answers with ICMP unreachable ends the flow as the pod's", async () => {
    const closed = createSocket('udp4')
    await new Promise<void>((r) => closed.bind(0, '127.0.0.1', r))
    const port = closed.address().port
    closed.close()
    const f = flow(port)
    f.ds.send(Buffer.from('anyone?'))
    f.ds.send(Buffer.from('anyone??'))
    assert.equal((await f.trailers)[UDP_END_TRAILER], 'unreachable')
    f.ds.stream.end()
    await until(() => outcomes.length === 3)
    assert.equal(outcomes[2]!.by, 'pod')
    assert.equal(outcomes[2]!.reason, 'unreachable')
  })

  test('a client reset resets the agent side', async () => {
    const f = flow(echoPort)
    f.ds.send(Buffer.from('x'))
    await until(() => f.got.length === 1)
    f.ds.reset(0x8)
    await until(() => outcomes.length === 4)
    assert.equal(outcomes[3]!.by, 'client')
    assert.equal(outcomes[3]!.reason, 'client-reset')
  })
})
