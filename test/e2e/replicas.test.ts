/**
 * Several gateway replicas behind a real HAProxy in TCP mode, with agents in network
 * namespaces that dial out through the load balancer (reverse mode) and that the
 * gateways cannot dial (an nftables rule drops connections into the namespace; a dial
 * from the gateways' namespace is shown to fail). Every replica forwards to every node;
 * 200 concurrent forwards spread over the replicas; one replica SIGKILLed mid-transfer:
 * its streams fail, the others' finish intact, its trail gets the closes from recovery
 * when it restarts, the CLI's next connections work through the load balancer, and the
 * agents reconnect to the restarted replica. One admin view: `pfgate admin streams` through
 * the load balancer lists every replica's streams, an admin on replica A ends a stream
 * held by replica C, `pfgate admin agents` shows each node on every replica.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer as createHttpServer } from 'node:http'
import type { Server } from 'node:http'
import { connect as netConnect } from 'node:net'
import type { AddressInfo } from 'node:net'
import type { AuditRecord } from '../../src/protocol/audit-record.js'
import { join } from 'node:path'
import type { ClientHttp2Session } from 'node:http2'
import { connectGateway } from '../helpers/h2.js'
import { openRaw, settledTrail } from '../helpers/gateway.js'
import type { RawStream } from '../helpers/gateway.js'
import { assertNetnsPrerequisites } from '../helpers/netns.js'
import { echoRoundTrip, sha256 } from '../helpers/net.js'
import { parseForwarding, runCli, runCliToEnd } from '../helpers/cli.js'
import type { CliProcess } from '../helpers/cli.js'
import { startReplicaSet } from '../helpers/replicas.js'
import type { ReplicaSet } from '../helpers/replicas.js'

let set: ReplicaSet
const sessions: ClientHttp2Session[] = []
const clis: CliProcess[] = []
/** One audit collector for every replica (the webhook sink), keyed by record id. */
const collected = new Map<string, AuditRecord>()
let collector: Server

before(async () => {
  assertNetnsPrerequisites()
  collector = createHttpServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      for (const r of JSON.parse(Buffer.concat(chunks).toString('utf8')) as AuditRecord[])
        collected.set(r.id, r)
      res.writeHead(200).end()
    })
  })
  await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r))
  const { port } = collector.address() as AddressInfo
  set = await startReplicaSet({
    replicas: 3,
    mode: 'reverse',
    webhookUrl: `http://127.0.0.1:${port}/audit`,
  })
})

after(async () => {
  for (const c of clis) await c.stop('SIGKILL')
  for (const s of sessions) s.destroy()
  await set?.stop()
  collector?.closeAllConnections()
  await new Promise<void>((r) => collector?.close(() => r()))
})

async function session(url: string): Promise<ClientHttp2Session> {
  const s = await connectGateway(url, set.dir)
  s.on('error', () => undefined)
  sessions.push(s)
  return s
}

/** Resolves with how a TCP connect to host:port ended within `ms`. */
function tryDial(host: string, port: number, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const s = netConnect({ host, port })
    const timer = setTimeout(() => {
      s.destroy()
      resolve('timeout')
    }, ms)
    s.once('connect', () => {
      clearTimeout(timer)
      s.destroy()
      resolve('connected')
    })
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      resolve(err.code ?? 'error')
    })
  })
}

async function echoOnce(s: ClientHttp2Session, node: string, pod: string, data: Buffer) {
  const st = await openRaw(s, { node, pod, port: 5000 }, set.token)
  assert.equal(st.status, 200)
  st.req.end(data)
  const end = await st.closed
  return { end, received: st.received(), streamId: st.streamId }
}

test('the gateways cannot dial the nodes; every replica forwards to every node over the agents’ connections', async () => {
  for (const n of set.nodes) {
    // The pod listens on every address of its namespace, yet a dial from the gateways'
    // namespace gets nowhere (the namespace accepts only connections it opened).
    assert.equal(await tryDial(n.nsIp, n.pod.port, 1500), 'timeout', `dial into ${n.name}`)
    assert.equal(await tryDial(n.nsIp, 10250, 1500), 'timeout', `agent port on ${n.name}`)
  }
  for (const r of set.replicas) {
    const s = await session(`https://127.0.0.1:${r.clientPort}`)
    for (const n of set.nodes) {
      const data = randomBytes(256 * 1024)
      const { end, received, streamId } = await echoOnce(s, n.name, n.podName, data)
      assert.equal(end.rstCode, 0)
      assert.equal(sha256(received), sha256(data), `${r.name} → ${n.name}`)
      assert.ok(streamId?.includes(r.gatewayId.slice(0, 8)), 'the stream id names the replica')
    }
  }
})

test('200 concurrent forwards over the replicas; one replica SIGKILLed mid-transfer', async (t) => {
  // Three CLIs through the load balancer: round robin puts one on each replica.
  const env = { KUBECONFIG: set.kubeconfig }
  const local: number[] = []
  for (let i = 0; i < 3; i++) {
    const cli = runCli(['port-forward', `pod/${set.nodes[0]?.podName}`, ':5000'], env)
    clis.push(cli)
    const lines = await cli.waitForLines(1)
    local.push((parseForwarding(lines.slice(0, 1))[0] as { port: number }).port)
    const r = await echoRoundTrip(local[i] as number, 4096)
    assert.equal(r.received, r.sent)
  }
  // Six HTTP/2 connections through the load balancer, 34 streams each (204), both nodes.
  const conns = await Promise.all(Array.from({ length: 6 }, () => session(set.lbUrl)))
  const first = 64 * 1024
  const rest = 192 * 1024
  interface Flow {
    st: RawStream
    data: Buffer
  }
  const flows: Flow[] = []
  await Promise.all(
    conns.map(async (c, ci) => {
      for (let k = 0; k < 34; k++) {
        const n = set.nodes[(ci + k) % set.nodes.length]!
        const st = await openRaw(c, { node: n.name, pod: n.podName, port: 5000 }, set.token)
        assert.equal(st.status, 200)
        const data = randomBytes(first + rest)
        st.req.write(data.subarray(0, first))
        flows.push({ st, data })
      }
    }),
  )
  assert.equal(flows.length, 204)
  const byReplica = new Map<string, number>()
  for (const f of flows) {
    const prefix = f.st.streamId?.split('-')[1] ?? '?'
    byReplica.set(prefix, (byReplica.get(prefix) ?? 0) + 1)
  }
  t.diagnostic(`streams per replica: ${JSON.stringify([...byReplica])}`)
  assert.equal(byReplica.size, 3, 'the load balancer spread the connections over 3 replicas')
  // Mid-transfer: every stream has its first part echoed.
  const deadline = Date.now() + 30_000
  while (flows.some((f) => f.st.received().length < first)) {
    assert.ok(Date.now() < deadline, 'first parts echoed')
    await new Promise((r) => setTimeout(r, 20))
  }
  const victim = set.replicas[1]!
  const victimPrefix = victim.gatewayId.slice(0, 8)
  const victimStreams = flows.filter((f) => f.st.streamId?.split('-')[1] === victimPrefix)
  assert.ok(victimStreams.length > 0)
  await set.kill(1, 'SIGKILL')
  const killedAt = Date.now()
  for (const f of flows) {
    if (!f.st.req.destroyed) f.st.req.end(f.data.subarray(first))
  }
  const ends = await Promise.all(flows.map((f) => f.st.closed))
  let intact = 0
  for (const [i, f] of flows.entries()) {
    const onVictim = f.st.streamId?.split('-')[1] === victimPrefix
    const whole = sha256(f.st.received()) === sha256(f.data)
    if (onVictim) {
      assert.ok(!whole, `stream ${f.st.streamId} on the killed replica cannot have finished`)
    } else {
      assert.ok(whole, `stream ${f.st.streamId} (${JSON.stringify(ends[i])}) must be intact`)
      intact++
    }
  }
  t.diagnostic(`intact: ${intact}, failed with the replica: ${victimStreams.length}`)
  // The CLIs' next connections work within seconds through the load balancer.
  for (const port of local) {
    const t0 = Date.now()
    for (;;) {
      const r = await echoRoundTrip(port, 64 * 1024, '127.0.0.1', 5000).catch((e: Error) => e)
      if (!(r instanceof Error) && r.received === r.sent) break
      assert.ok(Date.now() - t0 < 10_000, `CLI on :${port} works again within 10 s`)
      await new Promise((res) => setTimeout(res, 200))
    }
    t.diagnostic(
      `CLI on :${port}: next connection worked ${Date.now() - killedAt} ms after the kill`,
    )
  }
  // Restart: recovery closes the killed instance's streams in its own trail; agents reconnect.
  const oldId = victim.gatewayId
  await set.restart(1)
  await set.waitConnected(15_000)
  const trail = await settledTrail(join(victim.auditDir, 'audit.log'))
  const opened = trail.filter((r) => r.type === 'stream.opened' && r.gateway === oldId)
  const recovered = trail.filter(
    (r) => r.type === 'stream.closed' && r.gateway === oldId && r.endedBy === 'gateway-restart',
  )
  assert.ok(opened.length >= victimStreams.length)
  // Every stream of the killed instance has exactly one close: its own or recovery's.
  for (const o of opened) {
    const closes = trail.filter(
      (c) => c.type === 'stream.closed' && c.gateway === oldId && c.streamId === o.streamId,
    )
    assert.equal(closes.length, 1, `one close for ${o.streamId}`)
  }
  for (const f of victimStreams) {
    assert.ok(
      recovered.some((r) => r.streamId === f.st.streamId),
      `recovery closed ${f.st.streamId}`,
    )
  }
  // The restarted replica forwards to every node again.
  const s = await session(`https://127.0.0.1:${victim.clientPort}`)
  for (const n of set.nodes) {
    const data = randomBytes(1024)
    const { received } = await echoOnce(s, n.name, n.podName, data)
    assert.equal(sha256(received), sha256(data))
  }
})

test('one admin view: every replica’s streams through the load balancer; A ends a stream held by C', async () => {
  const [a, , c] = set.replicas
  const n = set.nodes[0]!
  // One live stream on each replica, opened on its own port.
  const live: RawStream[] = []
  for (const r of set.replicas) {
    const s = await session(`https://127.0.0.1:${r.clientPort}`)
    const st = await openRaw(s, { node: n.name, pod: n.podName, port: 5000 }, set.token)
    assert.equal(st.status, 200)
    st.req.write('hello')
    live.push(st)
  }
  const env = { KUBECONFIG: set.kubeconfig }
  const list = await runCliToEnd(['admin', 'streams', '-o', 'json'], env)
  assert.equal(list.code, 0, list.stderr)
  const items = JSON.parse(list.stdout) as { id: string; gateway: string }[]
  for (const [i, r] of set.replicas.entries()) {
    const mine = items.find((x) => x.id === live[i]?.streamId)
    assert.equal(mine?.gateway, r.gatewayId, `${r.name}'s stream is listed with its replica`)
  }
  const table = await runCliToEnd(['admin', 'streams'], env)
  assert.match(table.stdout, /BYTES-DOWN +GATEWAY$/m)
  for (const r of set.replicas) assert.ok(table.stdout.includes(r.gatewayId.slice(0, 8)))
  // The admin talks to replica A; the stream lives on replica C.
  const victim = live[2]!
  const kill = await runCliToEnd(
    [
      'admin',
      'kill',
      'stream',
      victim.streamId as string,
      '--server',
      `https://127.0.0.1:${a!.clientPort}`,
      '--certificate-authority',
      join(set.dir, 'ca.crt'),
    ],
    env,
  )
  assert.equal(kill.code, 0, kill.stderr)
  const end = await victim.closed
  assert.notEqual(end.rstCode, 0, 'the client sees a reset')
  const trail = await settledTrail(join(c!.auditDir, 'audit.log'))
  const closed = trail.find((r) => r.type === 'stream.closed' && r.streamId === victim.streamId)
  assert.equal(closed?.endedBy, 'admin')
  // The others are untouched; an unknown id is a 404 from every replica.
  assert.ok(!live[0]!.req.destroyed && !live[1]!.req.destroyed)
  const unknown = await runCliToEnd(['admin', 'kill', 'stream', 's-nope-1'], env)
  assert.equal(unknown.code, 1)
  assert.match(unknown.stderr, /no live stream/)
  // Agents: each node is connected to all 3 replicas.
  const agents = await runCliToEnd(['admin', 'agents'], env)
  assert.equal(agents.code, 0, agents.stderr)
  for (const node of set.nodes) assert.match(agents.stdout, new RegExp(`^${node.name} +3/3 `, 'm'))
  for (const st of live.slice(0, 2)) st.req.close()
})

test('one collector receives every replica’s records (webhook sink), the killed one’s included', async () => {
  const all: AuditRecord[] = []
  for (const r of set.replicas) all.push(...(await settledTrail(join(r.auditDir, 'audit.log'))))
  const gateways = new Set(all.map((r) => r.gateway))
  assert.ok(gateways.size >= 4, 'three replicas and the killed instance wrote records')
  const deadline = Date.now() + 15_000
  let missing = all.filter((r) => !collected.has(r.id))
  while (missing.length > 0 && Date.now() < deadline) {
    await new Promise((res) => setTimeout(res, 200))
    missing = all.filter((r) => !collected.has(r.id))
  }
  assert.deepEqual(
    missing.map((r) => `${r.type} ${r.gateway} ${r.time}`),
    [],
    'every record of every trail reached the collector',
  )
})
