/**
 * The CLI's first bytes (src/cli/port-forward/early-bytes.ts) over real loopback sockets:
 * what the local client sends while its stream opens reaches the stream being opened, a
 * retried stream gets all of it again, the client's EOF ends the stream, the socket is
 * paused beyond the limit and left paused for the relay.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect, createServer } from 'node:net'
import type { Server, Socket } from 'node:net'
import { PassThrough } from 'node:stream'
import { EARLY_BYTES_LIMIT, EarlyBytes } from '../../src/cli/port-forward/early-bytes.js'

async function withPair(fn: (client: Socket, local: Socket) => Promise<void>): Promise<void> {
  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const accepted = new Promise<Socket>((r) => server.once('connection', r))
  const client = connect({
    port: (server.address() as { port: number }).port,
    host: '127.0.0.1',
    allowHalfOpen: true,
  })
  const local = await accepted
  try {
    await fn(client, local)
  } finally {
    client.destroy()
    local.destroy()
    await new Promise((r) => server.close(r))
  }
}

/** Everything written to a sink so far, and whether it was ended. */
function sink(): { stream: PassThrough; text: () => string; ended: () => boolean } {
  const stream = new PassThrough()
  const chunks: Buffer[] = []
  let ended = false
  stream.on('data', (c: Buffer) => chunks.push(c))
  stream.on('end', () => (ended = true))
  return { stream, text: () => Buffer.concat(chunks).toString(), ended: () => ended }
}

async function until(fn: () => boolean, what: string): Promise<void> {
  const t0 = Date.now()
  while (!fn()) {
    if (Date.now() - t0 > 5000) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

test('bytes before and after attach reach the stream; a retried stream gets them all again', async () => {
  await withPair(async (client, local) => {
    const early = new EarlyBytes(local)
    client.write('one ')
    const first = sink()
    await new Promise((r) => setTimeout(r, 50))
    early.attach(first.stream)
    client.write('two ')
    await until(() => first.text() === 'one two ', 'the first stream')
    // The open is retried on a new stream (a refreshed token, a moved pod).
    const second = sink()
    early.attach(second.stream)
    client.write('three')
    await until(() => second.text() === 'one two three', 'the retried stream')
    const outcome = early.detach()
    assert.deepEqual(outcome, { bytes: 13, ended: false, unsent: [] })
    assert.equal(local.isPaused(), true, 'left paused for the relay')
    assert.equal(first.ended(), false)
  })
})

test("the client's EOF ends the stream being opened, and is reported", async () => {
  await withPair(async (client, local) => {
    const early = new EarlyBytes(local)
    const s = sink()
    early.attach(s.stream)
    client.end('request')
    await until(() => s.ended(), 'the stream ended')
    assert.equal(s.text(), 'request')
    assert.deepEqual(early.detach(), { bytes: 7, ended: true, unsent: [] })
    // Nothing is attached after detach.
    const late = sink()
    early.attach(late.stream)
    assert.equal(late.text(), '', 'nothing after detach')
  })
})

test('beyond the limit the socket is paused: what is taken stays bounded', async () => {
  await withPair(async (client, local) => {
    const early = new EarlyBytes(local)
    const big = Buffer.alloc(8 * EARLY_BYTES_LIMIT, 0x61)
    client.write(big)
    await new Promise((r) => setTimeout(r, 200))
    const { bytes, unsent } = early.detach()
    // Never attached (a dialer that does not write early): the caller writes them.
    assert.equal(Buffer.concat(unsent).length, bytes)
    assert.ok(bytes >= EARLY_BYTES_LIMIT, `took ${bytes}`)
    assert.ok(bytes < 2 * EARLY_BYTES_LIMIT, `took ${bytes}, more than one read beyond the limit`)
    // The rest is still in the socket for the relay.
    let rest = 0
    local.on('data', (c: Buffer) => (rest += c.length))
    local.resume()
    await until(() => bytes + rest === big.length, 'the rest of the bytes')
  })
})
