/**
 * `replicas` section: the reverse-connected, load-balanced topology against the direct one,
 * in the same run. Both are real replica sets (test/helpers/replicas.ts: gateway processes,
 * agents in network namespaces, HAProxy in TCP mode), started side by side:
 *
 * - subject: client → HAProxy → one of 2 replicas → the agent's own connection (reverse);
 * - baseline: client → one gateway directly → the agent it dials (direct; its HAProxy idle).
 *
 * Figures, interleaved between the two so that load from other processes hits both alike:
 * sequential stream opens (HTTP/2 stream opened → first echoed byte), single-stream echo
 * throughput and 8 streams at once; plus, for docs/scaling.md, what one idle reverse agent
 * session and one open stream cost a replica (RSS growth with many of each).
 *
 * @module
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { connect } from 'node:http2'
import type { ClientHttp2Session } from 'node:http2'
import { join } from 'node:path'
import { createAgentServer } from '../src/agent/app.js'
import { ReverseConnector } from '../src/agent/reverse-connector.js'
import { StaticDialer } from '../src/agent/static-dialer.js'
import { issueCert } from '../src/dev/pki.js'
import { GATEWAY_IDENTITY_URI } from '../src/protocol/constants.js'
import { silentLogger } from '../src/shared/log.js'
import { openRaw } from '../test/helpers/gateway.js'
import { startReplicaSet } from '../test/helpers/replicas.js'
import type { ReplicaSet } from '../test/helpers/replicas.js'
import { median, quantile, rssKiB } from './util.js'

/** What the section measured. */
export interface ReplicasBenchResult {
  opens: { reverse: { p50: number; p99: number }; direct: { p50: number; p99: number } }
  /** MB/s (echo: bytes sent, all echoed back). */
  throughput1: { reverse: number; direct: number }
  throughput8: { reverse: number; direct: number }
  /** RSS growth of a replica per idle reverse agent session, KiB (n sessions). */
  agentSessionKiB: { perSession: number; n: number }
  /** RSS growth of a replica per open idle stream, KiB (n streams). */
  streamKiB: { perStream: number; n: number }
}

function session(url: string, dir: string): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = connect(url, { ca: readFileSync(join(dir, 'ca.crt')) })
    s.once('connect', () => resolve(s))
    s.once('error', reject)
  })
}

function target(set: ReplicaSet): { node: string; pod: string; port: number } {
  const n = set.nodes[0]!
  return { node: n.name, pod: n.podName, port: 5000 }
}

async function timeOpen(s: ClientHttp2Session, set: ReplicaSet): Promise<number> {
  const t0 = performance.now()
  const st = await openRaw(s, target(set), set.token)
  if (st.status !== 200) throw new Error(`open answered ${st.status}`)
  st.req.write('x')
  while (st.received().length < 1) await new Promise((r) => setImmediate(r))
  const ms = performance.now() - t0
  st.req.end()
  await st.closed
  return ms
}

async function echoMBps(s: ClientHttp2Session, set: ReplicaSet, bytes: number, streams: number) {
  const chunk = randomBytes(256 * 1024)
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: streams }, async () => {
      const st = await openRaw(s, target(set), set.token)
      let sent = 0
      const each = bytes / streams
      while (sent < each) {
        if (!st.req.write(chunk)) await new Promise((r) => st.req.once('drain', r))
        sent += chunk.length
      }
      st.req.end()
      await st.closed
      if (st.received().length !== sent) throw new Error('echo came back short')
    }),
  )
  return bytes / 1e6 / ((performance.now() - t0) / 1000)
}

/** Runs the section (root, ip, nft, haproxy). */
export async function benchReplicas(options: {
  quick: boolean
  log: (line: string) => void
}): Promise<ReplicasBenchResult> {
  const { quick, log } = options
  const reverse = await startReplicaSet({ replicas: 2, mode: 'reverse', logLevel: 'error' })
  let direct: ReplicaSet | undefined
  const sessions: ClientHttp2Session[] = []
  try {
    direct = await startReplicaSet({ replicas: 1, mode: 'direct', logLevel: 'error' })
    const viaLb = await session(reverse.lbUrl, reverse.dir)
    const straight = await session(
      `https://127.0.0.1:${direct.replicas[0]!.clientPort}`,
      direct.dir,
    )
    sessions.push(viaLb, straight)
    const n = quick ? 100 : 400
    log(`replicas: ${n} sequential opens each, interleaved`)
    const rs: number[] = []
    const ds: number[] = []
    for (let i = 0; i < 20; i++) {
      await timeOpen(viaLb, reverse)
      await timeOpen(straight, direct)
    }
    for (let i = 0; i < n; i++) {
      rs.push(await timeOpen(viaLb, reverse))
      ds.push(await timeOpen(straight, direct))
    }
    const bytes = (quick ? 32 : 128) * 1024 * 1024
    const reps = quick ? 1 : 3
    const t1 = { reverse: [] as number[], direct: [] as number[] }
    const t8 = { reverse: [] as number[], direct: [] as number[] }
    log(`replicas: echo throughput, 1 and 8 streams, ${reps} repetitions`)
    for (let i = 0; i < reps; i++) {
      t1.reverse.push(await echoMBps(viaLb, reverse, bytes, 1))
      t1.direct.push(await echoMBps(straight, direct, bytes, 1))
      t8.reverse.push(await echoMBps(viaLb, reverse, bytes, 8))
      t8.direct.push(await echoMBps(straight, direct, bytes, 8))
    }
    // Memory: many idle reverse agent sessions on one replica (in-process agents, one
    // certificate naming every node), then many idle open streams.
    const gw = reverse.replicas[0]!
    const nAgents = quick ? 100 : 500
    log(`replicas: ${nAgents} idle reverse agent sessions on one replica`)
    const agentSession = await idleAgentSessions(reverse, gw.agentPort, nAgents)
    const nStreams = quick ? 500 : 2000
    log(`replicas: ${nStreams} idle open streams on one replica`)
    const direct0 = await session(`https://127.0.0.1:${gw.clientPort}`, reverse.dir)
    sessions.push(direct0)
    const before = rssKiB(gw.proc?.pid)
    const open = []
    for (let i = 0; i < nStreams; i++) open.push(openRaw(direct0, target(reverse), reverse.token))
    const opened = await Promise.all(open)
    await new Promise((r) => setTimeout(r, 500))
    const after = rssKiB(gw.proc?.pid)
    for (const st of opened) st.req.close()
    return {
      opens: {
        reverse: { p50: median(rs), p99: quantile(rs, 0.99) },
        direct: { p50: median(ds), p99: quantile(ds, 0.99) },
      },
      throughput1: { reverse: median(t1.reverse), direct: median(t1.direct) },
      throughput8: { reverse: median(t8.reverse), direct: median(t8.direct) },
      agentSessionKiB: agentSession,
      streamKiB: { perStream: (after - before) / nStreams, n: nStreams },
    }
  } finally {
    for (const s of sessions) s.destroy()
    await direct?.stop()
    await reverse.stop()
  }
}

/** Connects `n` in-process reverse agents straight to a replica; RSS growth per session. */
async function idleAgentSessions(
  set: ReplicaSet,
  port: number,
  n: number,
): Promise<{ perSession: number; n: number }> {
  const dir = set.dir
  const ca = {
    cert: readFileSync(join(dir, 'ca.crt'), 'utf8'),
    key: readFileSync(join(dir, 'ca.key'), 'utf8'),
  }
  const names = Array.from({ length: n }, (_, i) => `bench-node-${i}`)
  const cert = await issueCert(ca, {
    commonName: 'bench agents',
    dnsNames: names,
    clientAuth: true,
  })
  const pid = set.replicas[0]!.proc?.pid
  const before = rssKiB(pid)
  const agents = names.map((nodeName) => {
    const agent = createAgentServer({
      nodeName,
      tls: { cert: cert.cert, key: cert.key, clientCa: ca.cert },
      allowedClients: [GATEWAY_IDENTITY_URI],
      dialer: new StaticDialer([]),
      connectTimeoutMs: 1000,
      logger: silentLogger(),
    })
    const c = new ReverseConnector({
      agent,
      config: {
        host: '127.0.0.1',
        port,
        serverName: undefined,
        keepaliveMs: 0,
        // The replica says there are 2; no redial to look for the other during the measure.
        backoffInitialMs: 600_000,
        backoffMaxMs: 600_000,
        resyncMs: 3_600_000,
      },
      tls: { cert: cert.cert, key: cert.key, ca: ca.cert },
      allowedServers: [GATEWAY_IDENTITY_URI],
      logger: silentLogger(),
      handshakeTimeoutMs: 30_000,
    })
    return { agent, c }
  })
  // The replica believes there are 2 replicas; each connector holds the one it reached.
  for (const a of agents) a.c.start()
  const deadline = Date.now() + 60_000
  while (agents.some((a) => a.c.links().length === 0) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100))
  }
  await new Promise((r) => setTimeout(r, 1000))
  const after = rssKiB(pid)
  await Promise.all(
    agents.map(async (a) => {
      await a.c.close()
      await a.agent.close(0)
    }),
  )
  return { perSession: (after - before) / n, n }
}
