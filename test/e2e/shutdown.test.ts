/**
 * Graceful shutdown of the real gateway process (dev cluster, `shutdownGrace: 2s`) with
 * clients that do not cooperate:
 *
 * - a client that sent only the HTTP/2 preface and stopped reading, one whose stream has
 *   bytes queued toward it that it never reads, an HTTP/1.1 request that never finished
 *   its headers and an upgraded SPDY connection that never reads: the gateway still exits
 *   within `shutdownGrace` + 1 s, with `gateway.stopped` as the trail's last record and
 *   every `session.closed` before it;
 * - SIGINT then SIGTERM (what Ctrl-C of `npm start` delivers): the second signal does not
 *   kill the gateway mid-drain; it exits 0 once drained.
 * - the dev supervisor (`pfgate dev`) stops the gateway before the agents and pods, and a
 *   signal repeated during the stop kills nothing early.
 */
import { after, before, beforeEach, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { connect as http2Connect } from 'node:http2'
import type { ClientHttp2Session } from 'node:http2'
import { connect as tlsConnect } from 'node:tls'
import type { TLSSocket } from 'node:tls'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startTestCluster } from '../helpers/cluster.js'
import { connectGateway } from '../helpers/h2.js'
import { eventually } from '../helpers/net.js'
import { openRaw, receivedAtLeast, settledTrail, trailPath } from '../helpers/gateway.js'
import { rawRequest, spdyUpgradeHeaders } from '../helpers/raw-upgrade.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import { PFGATE_BIN } from '../../src/dev/cluster.js'
import type { AuditRecord } from '../../src/protocol/audit-record.js'

const GRACE_MS = 2000

let cluster: DevCluster & { cleanup(): Promise<void> }
/** The previous test stopped the gateway (the next one restarts it). */
let gatewayDown = false
const sockets: TLSSocket[] = []
const sessions: ClientHttp2Session[] = []

before(async () => {
  cluster = await startTestCluster({ shutdownGrace: `${GRACE_MS}ms` })
})

after(async () => {
  for (const s of sessions) s.destroy()
  for (const s of sockets) s.destroy()
  await cluster?.cleanup()
})

function ca(): Buffer {
  return readFileSync(join(cluster.dir, 'ca.crt'))
}

/** A TLS connection with ALPN `protocol` that never reads what the gateway sends. */
function stuckTls(protocol: string, send: Buffer | string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({
      host: '127.0.0.1',
      port: cluster.gatewayPort,
      ca: ca(),
      servername: 'localhost',
      ALPNProtocols: [protocol],
    })
    s.on('error', () => undefined)
    s.once('secureConnect', () => {
      s.write(send)
      s.pause()
      sockets.push(s)
      resolve(s)
    })
    s.once('error', reject)
  })
}

/** The HTTP/2 client connection preface: the magic and an empty SETTINGS frame. */
const H2_PREFACE = Buffer.concat([
  Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'),
  Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]),
])

/** Records of this gateway run (from its `gateway.started` on). */
function sinceLastStart(records: AuditRecord[]): AuditRecord[] {
  let i = records.length - 1
  while (i > 0 && records[i]?.type !== 'gateway.started') i--
  return records.slice(i)
}

/** Stops the gateway with `signals` (the later ones 150 ms apart); resolves with how it exited. */
async function stopGateway(
  signals: NodeJS.Signals[],
): Promise<{ ms: number; code: number | null; signal: NodeJS.Signals | null }> {
  const pid = cluster.pid('gateway') as number
  gatewayDown = true
  const t0 = Date.now()
  const exited = cluster.kill('gateway', signals[0], false)
  for (const sig of signals.slice(1)) {
    await new Promise((r) => setTimeout(r, 150))
    try {
      process.kill(pid, sig)
    } catch {
      // already gone
    }
  }
  // Bounded: a gateway that hangs is killed and the test fails on the time.
  const limit = GRACE_MS + 8000
  const timer = setTimeout(() => {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // gone
    }
  }, limit)
  const how = await exited
  clearTimeout(timer)
  return { ms: Date.now() - t0, ...how }
}

describe('shutdownGrace is enforced', () => {
  beforeEach(async () => {
    if (gatewayDown) await cluster.restart('gateway')
    gatewayDown = false
  })

  test('stuck clients of every kind: the gateway exits within grace + 1 s, session.closed before gateway.stopped', async () => {
    // 1. The HTTP/2 preface only, then no reading.
    await stuckTls('h2', H2_PREFACE)
    // 2. An HTTP/1.1 request whose headers never end.
    await stuckTls('http/1.1', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ')
    // 3. An upgraded SPDY connection that never reads.
    const spdy = await rawRequest(
      cluster.gatewayPort,
      ca(),
      'POST',
      '/api/v1/namespaces/default/pods/echo/portforward',
      spdyUpgradeHeaders(cluster.token),
    )
    assert.equal(spdy.status, 101, spdy.body)
    spdy.socket.on('error', () => undefined)
    spdy.socket.pause()
    sockets.push(spdy.socket)
    // 4. A native stream whose echo the client never reads (a 64 KiB window it never
    //    replenishes): the gateway's buffers toward it and from the pod fill up.
    const h2 = await new Promise<ClientHttp2Session>((resolve, reject) => {
      const s = http2Connect(cluster.gatewayUrl, {
        ca: ca(),
        settings: { initialWindowSize: 65535 },
      })
      s.once('connect', () => resolve(s))
      s.once('error', reject)
    })
    h2.on('error', () => undefined)
    sessions.push(h2)
    const st = await openRaw(h2, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token)
    assert.equal(st.status, 200)
    st.req.write('x')
    await receivedAtLeast(st, 1)
    st.req.pause()
    const chunk = Buffer.alloc(64 * 1024, 1)
    for (let i = 0; i < 256; i++) st.req.write(chunk)
    await new Promise((r) => setTimeout(r, 500))

    const how = await stopGateway(['SIGTERM'])
    assert.equal(how.signal, null, `the gateway was killed (${how.signal}) after ${how.ms} ms`)
    assert.equal(how.code, 0)
    assert.ok(how.ms <= GRACE_MS + 1000, `exit took ${how.ms} ms (grace ${GRACE_MS} ms)`)

    const run = sinceLastStart(await settledTrail(trailPath(cluster)))
    assert.equal(run.at(-1)?.type, 'gateway.stopped', run.map((r) => r.type).join(' '))
    const closed = run.find((r) => r.type === 'stream.closed' && r.streamId === st.streamId)
    assert.equal(closed?.endedBy, 'gateway')
    const opened = run.filter((r) => r.type === 'session.opened').map((r) => r.sessionId)
    assert.ok(opened.length >= 2, 'the native and the SPDY sessions were opened')
    for (const id of opened) {
      assert.ok(
        run.some((r) => r.type === 'session.closed' && r.sessionId === id),
        `session ${id} has its session.closed before gateway.stopped`,
      )
    }
  })

  test('a plain SIGTERM: every session.closed and stream.closed comes before gateway.stopped', async () => {
    const ids: string[] = []
    for (let i = 0; i < 3; i++) {
      const h2 = await connectGateway(cluster.gatewayUrl, cluster.dir)
      h2.on('error', () => undefined)
      sessions.push(h2)
      const st = await openRaw(h2, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token)
      assert.equal(st.status, 200)
      ids.push(st.streamId as string)
    }
    const how = await stopGateway(['SIGTERM'])
    assert.deepEqual([how.code, how.signal], [0, null])
    const run = sinceLastStart(await settledTrail(trailPath(cluster)))
    const types = run.map((r) => r.type)
    assert.equal(types.at(-1), 'gateway.stopped', types.join(' '))
    assert.equal(types.filter((t) => t === 'session.closed').length, 3, types.join(' '))
    for (const id of ids) {
      assert.ok(
        run.some((r) => r.type === 'stream.closed' && r.streamId === id),
        id,
      )
    }
  })

  test('SIGINT then SIGTERM (Ctrl-C of npm start): the second signal does not kill the draining gateway', async () => {
    // A stream that stays open keeps the gateway draining until the deadline.
    const h2 = await connectGateway(cluster.gatewayUrl, cluster.dir)
    h2.on('error', () => undefined)
    sessions.push(h2)
    const st = await openRaw(h2, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token)
    assert.equal(st.status, 200)
    const how = await stopGateway(['SIGINT', 'SIGTERM', 'SIGINT'])
    assert.equal(how.signal, null, `the gateway was killed by ${how.signal} mid-drain`)
    assert.equal(how.code, 0)
    assert.ok(how.ms >= GRACE_MS - 200, `it drained (${how.ms} ms)`)
    const run = sinceLastStart(await settledTrail(trailPath(cluster)))
    assert.equal(run.at(-1)?.type, 'gateway.stopped', run.map((r) => r.type).join(' '))
  })
})

describe('the dev supervisor', () => {
  test('Ctrl-C (SIGINT to the process group, then SIGTERM): the gateway drains first and records its stop', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pfgate-dev-stop-'))
    const dev = spawn(
      process.execPath,
      [PFGATE_BIN, 'dev', '--dir', dir, '--port', '0', '--log-level', 'warn'],
      { detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let out = ''
    dev.stdout.on('data', (d: Buffer) => (out += d.toString()))
    dev.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
      dev.once('exit', (code, signal) => r({ code, signal })),
    )
    try {
      await eventually(() => out.includes('cluster is up'), 30_000, 'the dev cluster to start')
      const url = /gateway\s+(https:\/\/\S+)/.exec(out)?.[1] as string
      const token = readFileSync(join(dir, 'kubeconfig'), 'utf8').match(/token: (\S+)/)?.[1]
      const h2 = await connectGateway(url, dir)
      h2.on('error', () => undefined)
      sessions.push(h2)
      const st = await openRaw(h2, { node: 'node-a', pod: 'echo', port: 5000 }, token)
      assert.equal(st.status, 200)
      st.req.write('before')
      await receivedAtLeast(st, 6)
      // The terminal's Ctrl-C reaches the whole foreground process group; npm then
      // forwards a SIGTERM.
      process.kill(-(dev.pid as number), 'SIGINT')
      await new Promise((r) => setTimeout(r, 150))
      process.kill(dev.pid as number, 'SIGTERM')
      // Draining: the open stream still carries bytes both ways (the agent and the pod are
      // still up), and ends normally when the client ends it.
      await new Promise((r) => setTimeout(r, 300))
      st.req.end(' after')
      const end = await st.closed
      assert.equal(end.rstCode, 0, JSON.stringify(end))
      assert.equal(st.received().toString(), 'before after')
      let timer: NodeJS.Timeout | undefined
      const how = await Promise.race([
        exited,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`pfgate dev did not stop:\n${out}`)), 20_000)
        }),
      ]).finally(() => clearTimeout(timer))
      assert.deepEqual(how, { code: 0, signal: null }, out)
      const records: AuditRecord[] = readFileSync(join(dir, 'audit', 'audit.log'), 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as AuditRecord)
      const types = records.map((r) => r.type)
      assert.equal(types.at(-1), 'gateway.stopped', types.join(' '))
      assert.ok(types.indexOf('session.closed') < types.lastIndexOf('gateway.stopped'))
      const closed = records.find((r) => r.type === 'stream.closed' && r.streamId === st.streamId)
      assert.equal(closed?.endedBy, 'client')
    } finally {
      if (dev.exitCode === null && dev.signalCode === null)
        process.kill(-(dev.pid as number), 'SIGKILL')
      await exited
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
