/**
 * The relay over real loopback TCP sockets: bytes both ways with counts, half-close
 * in each direction, reset propagation, backpressure, and abort.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, connect } from 'node:net'
import type { Server, Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { DuplexRelay } from '../../src/shared/duplex-relay.js'
import type { RelayOutcome } from '../../src/shared/duplex-relay.js'
import { socketEndpoint } from '../../src/shared/relay-endpoints.js'

/** A connected socket pair over loopback: [client side, server side]. */
async function pair(server: Server): Promise<[Socket, Socket]> {
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve))
  const addr = server.address() as { port: number }
  const c = connect({ port: addr.port, host: '127.0.0.1', allowHalfOpen: true })
  await new Promise((r) => c.once('connect', r))
  return [c, await accepted]
}

async function withServer(fn: (server: Server) => Promise<void>): Promise<void> {
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  try {
    await fn(server)
  } finally {
    await new Promise((r) => server.close(r))
  }
}

function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    s.on('data', (c: Buffer) => chunks.push(c))
    s.once('end', () => resolve(Buffer.concat(chunks)))
    s.once('error', reject)
  })
}

/** client ⇄ [relay: a ⇄ b] ⇄ pod */
async function chain(server: Server): Promise<{
  client: Socket
  pod: Socket
  relay: DuplexRelay
  done: Promise<RelayOutcome>
}> {
  const [client, a] = await pair(server)
  const [b, pod] = await pair(server)
  let resolveDone!: (o: RelayOutcome) => void
  const done = new Promise<RelayOutcome>((r) => (resolveDone = r))
  const relay = new DuplexRelay(socketEndpoint(a), socketEndpoint(b), { onDone: resolveDone })
  pod.resume()
  return { client, pod, relay, done }
}

test('bytes flow both ways, half-close propagates each way, counts are exact', async () => {
  await withServer(async (server) => {
    const { client, pod, done } = await chain(server)
    const up = randomBytes(3 * 1024 * 1024 + 17)
    const down = randomBytes(2 * 1024 * 1024 + 5)
    const podGot = readAll(pod)
    const clientGot = readAll(client)
    client.end(up) // client half-closes first
    assert.deepEqual(await podGot, up)
    // The pod still writes after the client's FIN: half-close, not close.
    pod.end(down)
    assert.deepEqual(await clientGot, down)
    client.end()
    const o = await done
    assert.equal(o.bytesAtoB, up.length)
    assert.equal(o.bytesBtoA, down.length)
    assert.equal(o.firstEof, 'a')
    assert.equal(o.failure, undefined)
  })
})

test('the pod half-closing first is recorded as such', async () => {
  await withServer(async (server) => {
    const { client, pod, done } = await chain(server)
    const clientGot = readAll(client)
    pod.end('banner and bye')
    assert.equal((await clientGot).toString(), 'banner and bye')
    const podGot = readAll(pod)
    client.end('late reply')
    assert.equal((await podGot).toString(), 'late reply')
    const o = await done
    assert.equal(o.firstEof, 'b')
    assert.equal(o.failure, undefined)
  })
})

test('a reset on one side resets the other side', async () => {
  await withServer(async (server) => {
    const { client, pod, done } = await chain(server)
    const podErr = new Promise<string>((resolve) => {
      pod.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'))
      pod.once('close', () => resolve('close'))
    })
    client.write('x')
    await new Promise((r) => pod.once('data', r))
    client.resetAndDestroy()
    const o = await done
    assert.equal(o.failure?.side, 'a')
    assert.equal(await podErr, 'ECONNRESET')
  })
})

test('backpressure: a pod that does not read stops the relay from reading the client', async () => {
  await withServer(async (server) => {
    const { client, pod, relay } = await chain(server)
    client.on('error', () => undefined)
    pod.on('error', () => undefined)
    pod.pause()
    // Write until the whole path is full: the client's writes stay blocked.
    const block = Buffer.alloc(256 * 1024)
    let blockedSince = 0
    await new Promise<void>((resolve) => {
      const push = (): void => {
        while (client.write(block)) {
          /* kernel buffers still take it */
        }
        blockedSince = Date.now()
        client.once('drain', push)
      }
      push()
      const check = setInterval(() => {
        if (Date.now() - blockedSince > 300) {
          clearInterval(check)
          client.removeAllListeners('drain')
          resolve()
        }
      }, 50)
    })
    const stalled = relay.bytesAtoB
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(relay.bytesAtoB, stalled, 'the relay stopped reading while the pod was stalled')
    assert.ok(stalled < 64 * 1024 * 1024, `buffered ${stalled} bytes`)
    pod.on('data', () => undefined)
    pod.resume()
    await new Promise((r) => setTimeout(r, 300))
    assert.ok(relay.bytesAtoB > stalled, 'reading resumed once the pod drained')
    relay.abort('internal')
  })
})

test('abort() ends both sides and reports the local reason', async () => {
  await withServer(async (server) => {
    const { client, pod, relay, done } = await chain(server)
    const errs = Promise.all(
      [client, pod].map(
        (s) =>
          new Promise<string>((r) =>
            s.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? '?')),
          ),
      ),
    )
    relay.abort('admin')
    const o = await done
    assert.deepEqual(o.failure, { side: 'local', reason: 'admin' })
    assert.deepEqual(await errs, ['ECONNRESET', 'ECONNRESET'])
    assert.ok(relay.done)
  })
})

test('a side that was already destroyed before the relay started still ends the relay', async () => {
  // The pod's reset can reach a hop before its relay is wired (the gateway writes its
  // open record in between): the relay must still end, and reset the other side.
  await withServer(async (server) => {
    const [client, a] = await pair(server)
    const [b, pod] = await pair(server)
    pod.resume()
    b.destroy()
    await new Promise((r) => setImmediate(r))
    assert.ok(b.destroyed)
    const ended = new Promise<void>((resolve) => {
      client.once('close', () => resolve())
      client.once('error', () => undefined)
    })
    client.resume()
    const outcome = await new Promise<RelayOutcome>((resolve) => {
      new DuplexRelay(socketEndpoint(a), socketEndpoint(b), { onDone: resolve })
    })
    assert.equal(outcome.failure?.side, 'b')
    await ended
    pod.destroy()
  })
})

test('chunks read in one event-loop turn leave in one write, in order', async () => {
  await withServer(async (server) => {
    const [client, a] = await pair(server)
    const [b, pod] = await pair(server)
    // Count what the relay hands the pod-facing socket per system-call-level write.
    const writes: number[] = []
    const sock = b as Socket & {
      _write: (c: Buffer, e: BufferEncoding, cb: () => void) => void
      _writev: (cs: { chunk: Buffer }[], cb: () => void) => void
    }
    const write = sock._write.bind(sock)
    const writev = sock._writev.bind(sock)
    sock._write = (c, e, cb) => {
      writes.push(1)
      write(c, e, cb)
    }
    sock._writev = (cs, cb) => {
      writes.push(cs.length)
      writev(cs, cb)
    }
    let resolveDone!: (o: RelayOutcome) => void
    const done = new Promise<RelayOutcome>((r) => (resolveDone = r))
    new DuplexRelay(socketEndpoint(a), socketEndpoint(b), { onDone: resolveDone })
    const got = readAll(pod)
    pod.resume()
    // Three chunks in one turn, as an HTTP/2 stream emits the pieces of its DATA frames.
    a.push(Buffer.from('one,'))
    a.push(Buffer.from('two,'))
    a.push(Buffer.from('three'))
    await new Promise((r) => setTimeout(r, 50))
    const firstTurn = [...writes]
    client.end()
    assert.equal((await got).toString(), 'one,two,three')
    pod.end()
    const outcome = await done
    assert.equal(outcome.bytesAtoB, 13)
    assert.equal(outcome.failure, undefined)
    assert.deepEqual(firstTurn, [3], 'one writev of the three chunks')
  })
})
