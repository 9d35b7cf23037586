/**
 * WebSocket v4 channel clients may write large buffers in one call (issue 11, item 10):
 * the kubelet accepts messages up to 32 MiB, and so does the gateway. Through a real dev
 * cluster with the `ws` client library (what @kubernetes/client-node uses): a 32 MiB
 * message (channel byte included) is forwarded and echoed whole; one byte more is
 * refused with close code 1009 (message too big), not silently dropped; and while one
 * such message is in flight the gateway's memory stays within the budget's reach.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { WebSocket } from 'ws'
import { MAX_WS_MESSAGE } from '../../src/gateway/edge/upgrade.js'
import { startTestCluster } from '../helpers/cluster.js'
import type { DevCluster } from '../../src/dev/cluster.js'

const MiB = 1024 * 1024
let cluster: DevCluster & { cleanup(): Promise<void> }

before(async () => {
  cluster = await startTestCluster()
})
after(async () => {
  await cluster?.cleanup()
})

function open(): Promise<{ ws: WebSocket; messages: Buffer[]; closed: Promise<number> }> {
  const url = `wss://127.0.0.1:${cluster.gatewayPort}/api/v1/namespaces/default/pods/echo/portforward?ports=5000`
  const ws = new WebSocket(url, ['v4.channel.k8s.io'], {
    ca: readFileSync(join(cluster.dir, 'ca.crt')),
    headers: { Authorization: `Bearer ${cluster.token}` },
    maxPayload: 64 * MiB,
  })
  const messages: Buffer[] = []
  ws.on('message', (d: Buffer) => messages.push(d))
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))
  ws.on('error', () => undefined)
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, messages, closed }))
    ws.once('unexpected-response', (_req, res) => reject(new Error(`status ${res.statusCode}`)))
  })
}

async function until(fn: () => boolean, what: string, ms = 60_000): Promise<void> {
  const t0 = Date.now()
  while (!fn()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

test('the limit is the kubelet’s: 32 MiB', () => {
  assert.equal(MAX_WS_MESSAGE, 32 * MiB)
})

test('a 32 MiB message in one write is forwarded and echoed whole', async () => {
  const c = await open()
  await until(() => c.messages.length >= 2, 'the port prefixes')
  const payload = randomBytes(32 * MiB - 1)
  c.ws.send(Buffer.concat([Buffer.from([0]), payload]))
  let got = 0
  const hash = createHash('sha256')
  let seen = 2
  await until(() => {
    for (; seen < c.messages.length; seen++) {
      const m = c.messages[seen] as Buffer
      if (m[0] !== 0) continue
      hash.update(m.subarray(1))
      got += m.length - 1
    }
    return got >= payload.length
  }, 'the echo of 32 MiB')
  assert.equal(got, payload.length)
  assert.equal(hash.digest('hex'), createHash('sha256').update(payload).digest('hex'))
  c.ws.close(1000)
  assert.equal(await c.closed, 1000)
})

test('one byte over the limit closes the connection with 1009, never silently', async () => {
  const c = await open()
  await until(() => c.messages.length >= 2, 'the port prefixes')
  c.ws.send(Buffer.alloc(32 * MiB + 1))
  assert.equal(await c.closed, 1009)
})

test('clients that send 32 MiB messages and never read: each holds at most two', async (t) => {
  // The WebSocket is paused while a port's stream is full, so a connection makes the
  // gateway hold at most the message being relayed and the one being received, however
  // many it sends (three each here); the buffer budget's backstop resets the stalled ones.
  const N = 6
  const rss = (): number => {
    const status = readFileSync(`/proc/${cluster.pid('gateway')}/status`, 'utf8')
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024
  }
  const before = rss()
  const conns = await Promise.all(Array.from({ length: N }, () => open()))
  const message = Buffer.concat([Buffer.from([0]), randomBytes(32 * MiB - 1)])
  for (const c of conns) {
    await until(() => c.messages.length >= 2, 'the port prefixes')
    c.ws.pause() // never reads the echo: the echo pod stalls, then the gateway's relay
    for (let i = 0; i < 3; i++) c.ws.send(message)
  }
  await new Promise((r) => setTimeout(r, 5000))
  const grown = rss() - before
  t.diagnostic(
    `gateway RSS growth, ${N} connections × 3 messages of 32 MiB never read: ${(grown / MiB).toFixed(0)} MiB (the machine is shared)`,
  )
  for (const c of conns) c.ws.terminate()
  assert.ok(grown < N * 2 * 32 * MiB + 64 * MiB, `grew ${(grown / MiB).toFixed(0)} MiB`)
})
