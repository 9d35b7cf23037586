/**
 * The agent's end of UDP flows against real network namespaces: the netns helper binds
 * a UDP socket inside the pod's namespace and passes it to the agent, which connects it
 * to the pod's port and relays datagrams over a real HTTP/2 stream (AgentUdpFlow).
 *
 * @module
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { connect, createServer } from 'node:http2'
import type { ClientHttp2Session, ClientHttp2Stream, Http2Server } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { NetnsDialer } from '../../src/agent/netns-dialer.js'
import { StaticNetnsResolver } from '../../src/agent/netns-resolver.js'
import { AgentUdpFlow } from '../../src/agent/udp-flow.js'
import type { UdpFlowOutcome } from '../../src/agent/udp-flow.js'
import { isHelperRequest } from '../../src/agent/netns-helper.js'
import { DatagramStream } from '../../src/shared/datagram-stream.js'
import type { DatagramStreamEnd } from '../../src/shared/datagram-stream.js'
import {
  MAX_DATAGRAM_SIZE,
  UDP_DROPPED_TRAILER,
  UDP_END_TRAILER,
  UDP_WRONG_SOURCE_TRAILER,
} from '../../src/protocol/udp-frames.js'
import {
  assertNetnsPrerequisites,
  createNetns,
  rejectsWith,
  startServerInNetns,
} from '../helpers/netns.js'
import type { NetnsServer, TestNetns } from '../helpers/netns.js'

const target = { namespace: 't', name: 'udp', uid: 'uid-udp' }
const opts = (): { signal: AbortSignal; timeoutMs: number } => ({
  signal: new AbortController().signal,
  timeoutMs: 5000,
})

/** A client flow: the stream as datagrams, what arrived, how it ended, its trailers. */
interface ClientFlow {
  ds: DatagramStream
  got: Buffer[]
  ended: Promise<DatagramStreamEnd>
  trailers: Promise<Record<string, unknown>>
  next(): Promise<Buffer>
}

function openFlow(session: ClientHttp2Session, port: number): ClientFlow {
  const stream: ClientHttp2Stream = session.request({ ':method': 'POST', ':path': `/${port}` })
  const got: Buffer[] = []
  const waiters: ((d: Buffer) => void)[] = []
  let endResolve!: (e: DatagramStreamEnd) => void
  const ended = new Promise<DatagramStreamEnd>((r) => (endResolve = r))
  const trailers = new Promise<Record<string, unknown>>((r) => stream.once('trailers', r))
  const ds = new DatagramStream(stream, {
    datagram: (d) => {
      const copy = Buffer.from(d)
      const w = waiters.shift()
      if (w !== undefined) w(copy)
      else got.push(copy)
    },
    end: endResolve,
  })
  const next = (): Promise<Buffer> => {
    const d = got.shift()
    if (d !== undefined) return Promise.resolve(d)
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no datagram within 3 s')), 3000)
      waiters.push((x) => {
        clearTimeout(t)
        resolve(x)
      })
    })
  }
  return { ds, got, ended, trailers, next }
}

describe('agent UDP flows in network namespaces', () => {
  let ns: TestNetns
  let server: NetnsServer
  let server6: NetnsServer
  let dialer: NetnsDialer
  let h2: Http2Server
  let session: ClientHttp2Session
  const outcomes: UdpFlowOutcome[] = []

  before(async () => {
    assertNetnsPrerequisites()
    ns = createNetns({ prefix: 'pfgate-i14u' })
    server = await startServerInNetns(ns.name, 'udp-echo')
    server6 = await startServerInNetns(ns.name, 'udp-echo', { host: '::1' })
    dialer = new NetnsDialer({
      resolver: new StaticNetnsResolver([{ ...target, netns: ns.path }]),
    })
    // The agent's flow handling on a plain HTTP/2 server: the path names the pod port.
    h2 = createServer()
    h2.on('stream', (stream, headers) => {
      const port = Number(String(headers[':path']).slice(1))
      dialer.dialUdp(target, port, opts()).then(
        (pod) => new AgentUdpFlow(stream, pod, (o) => outcomes.push(o)),
        (err: Error) => {
          stream.respond({ ':status': 502, 'x-error': err.message.slice(0, 200) })
          stream.end()
        },
      )
    })
    await new Promise<void>((r) => h2.listen(0, '127.0.0.1', r))
    session = connect(`http://127.0.0.1:${(h2.address() as AddressInfo).port}`)
  })

  after(async () => {
    session?.close()
    await new Promise<void>((r) => (h2 ? h2.close(() => r()) : r()))
    await dialer?.close()
    await server?.stop()
    await server6?.stop()
    ns?.destroy()
  })

  test('the helper accepts a UDP request only with the exact marker', () => {
    const base = { id: 1, port: 53, timeoutMs: 1000, podIps: [] }
    assert.equal(isHelperRequest({ ...base, protocol: 'udp' }), true)
    assert.equal(isHelperRequest({ ...base, protocol: 'tcp' }), false)
    assert.equal(isHelperRequest({ ...base, protocol: 'udp', extra: 1 }), false)
  })

  test('datagrams of 1, 1,200 and the maximum size come back whole, in order', async () => {
    const flow = openFlow(session, server.port)
    const sizes = [1, 1200, MAX_DATAGRAM_SIZE, 0, 7]
    const sent = sizes.map((n) => randomBytes(n))
    for (const d of sent) flow.ds.send(d)
    for (const [i, d] of sent.entries()) {
      const back = await flow.next()
      assert.ok(back.equals(d), `datagram ${i} (${d.length} bytes)`)
    }
    flow.ds.stream.end()
    const trailers = await flow.trailers
    assert.equal(trailers[UDP_END_TRAILER], 'client')
    assert.equal(trailers[UDP_DROPPED_TRAILER], '0')
    assert.equal((await flow.ended).kind, 'ended')
  })

  test('a server bound only to [::1] is reached over IPv6', async () => {
    const flow = openFlow(session, server6.port)
    flow.ds.send(Buffer.from('six'))
    assert.equal(String(await flow.next()), 'six')
    flow.ds.stream.end()
    await flow.ended
  })

  test('a reply from another port of the pod is not delivered', async () => {
    const flow = openFlow(session, server.port)
    flow.ds.send(Buffer.from('wrong-port:right'))
    assert.equal(String(await flow.next()), 'right')
    // The WRONG datagram went out first; it never arrived.
    flow.ds.send(Buffer.from('after'))
    assert.equal(String(await flow.next()), 'after')
    flow.ds.stream.end()
    const trailers = await flow.trailers
    // The kernel drops it on the connected socket before Node sees it: zero or one here.
    assert.ok(['0', '1'].includes(String(trailers[UDP_WRONG_SOURCE_TRAILER])))
    assert.equal(flow.got.length, 0)
  })

  test('over IPv6 (an unconnected socket) the relay drops the wrong-port reply and counts it', async () => {
    const flow = openFlow(session, server6.port)
    flow.ds.send(Buffer.from('wrong-port:right6'))
    assert.equal(String(await flow.next()), 'right6')
    flow.ds.stream.end()
    const trailers = await flow.trailers
    assert.equal(trailers[UDP_WRONG_SOURCE_TRAILER], '1')
    assert.equal(flow.got.length, 0)
  })

  test('a port with no UDP socket bound is refused before the flow opens', async () => {
    const msg = await rejectsWith(
      dialer.dialUdp(target, 9, opts()),
      'PFG_ERR_AGENT_CONNECT_REFUSED',
    )
    assert.match(msg, /localhost:9\/udp/)
    assert.match(msg, /udp4 127\.0\.0\.1:9: connect: connection refused/)
  })

  test('the pod port going away mid-flow ends it with "unreachable" (ICMP)', async () => {
    const gone = await startServerInNetns(ns.name, 'udp-echo')
    const flow = openFlow(session, gone.port)
    flow.ds.send(Buffer.from('one'))
    assert.equal(String(await flow.next()), 'one')
    await gone.stop()
    flow.ds.send(Buffer.from('two'))
    const trailers = await flow.trailers
    assert.equal(trailers[UDP_END_TRAILER], 'unreachable')
    flow.ds.stream.end()
  })

  test('1,000 datagrams at a moderate rate: none lost, order kept', async () => {
    const flow = openFlow(session, server.port)
    // Windows of 50: the echo server's receive buffer (about 200 small datagrams) never fills.
    for (let i = 0; i < 1000; i += 50) {
      for (let j = i; j < i + 50; j++) flow.ds.send(Buffer.from(`d${j}`))
      const deadline = Date.now() + 3000
      while (flow.got.length < i + 50 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 2))
      }
    }
    flow.ds.stream.end()
    const trailers = await flow.trailers
    assert.equal(trailers[UDP_DROPPED_TRAILER], '0')
    assert.equal(flow.got.length, 1000)
    assert.deepEqual(
      flow.got.map((d) => String(d)),
      Array.from({ length: 1000 }, (_, i) => `d${i}`),
    )
  })
})
