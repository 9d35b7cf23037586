/**
 * The abuse section (`npm run bench -- --only abuse`): what hostile or broken clients can
 * do to a gateway with its default limits, measured on real processes (the dev cluster:
 * gateway, agents and demo pods, each its own process) with real HTTP/2 clients that
 * misbehave on purpose. Self-contained: it starts its own clusters, in temp directories.
 *
 * 1. **Unauthenticated streams that never end and are never read**, from one source
 *    address: how many the gateway takes (bounded by `connectionsPerSource` ×
 *    `unauthenticatedStreams`) and its RSS growth.
 * 2. **Stalled readers**: authenticated streams whose client sends and never reads the
 *    echo; what the relays hold against `limits.bufferBudget`, the gateway's RSS growth,
 *    and how many streams the budget's backstop reset.
 * 3. **SIGTERM with clients that never read** (a native stream with bytes queued toward
 *    it, a client that sent only the HTTP/2 preface): time until the gateway exited,
 *    against `shutdownGrace` + 1 s.
 * 4. **A denial flood against the audit trail**: streams opened and closed normally, then
 *    a flood of unauthenticated requests with 15 KB pod names, then whether every record
 *    of the earlier streams can still be read from the trail (rotated files included).
 *
 * Each figure is reported as measured, whatever it is; the table marks the targets.
 *
 * @module
 */
import { connect as h2connect } from 'node:http2'
import type { ClientHttp2Session, ClientHttp2Stream, SecureClientSessionOptions } from 'node:http2'
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import type { TLSSocket } from 'node:tls'
import { startDevCluster } from '../src/dev/cluster.js'
import type { DevCluster } from '../src/dev/cluster.js'
import { readTrail } from '../src/gateway/audit/trail-reader.js'
import { PORT_HEADER, nativePortForwardPath } from '../src/protocol/constants.js'
import { rssKiB, sleep } from './util.js'

/** What the abuse section measured. */
export interface AbuseResult {
  unauthenticated: {
    attemptedConnections: number
    attemptedStreams: number
    refusedConnections: number
    /** Streams the gateway answered (took in): the others were refused or never sent. */
    acceptedStreams: number
    /** connectionsPerSource × unauthenticatedStreams. */
    bound: number
    rssGrowthMB: number
  }
  stalled: {
    streams: number
    mibEach: number
    budgetMiB: number
    /** What the relays held at the budget's last sweep. */
    relayBufferedMiB: number
    rssGrowthMB: number
    resetByBudget: number
  }
  shutdown: { graceS: number; exitS: number; exitCode: number | null; signal: string | null }
  auditFlood: {
    seconds: number
    denialsSent: number
    trailMiB: number
    trailFiles: number
    earlierRecords: number
    earlierFound: number
  }
}

const NODE = 'node-a'
const POD = { namespace: 'default', name: 'echo', port: 5000 }
const NATIVE = nativePortForwardPath(NODE, POD.namespace, POD.name)
const API = `/api/v1/namespaces/${POD.namespace}/pods/${POD.name}`
const MiB = 1024 * 1024
/** The defaults the section measures against (src/gateway/config.ts). */
const DEFAULTS = {
  connectionsPerSource: 32,
  unauthenticatedStreams: 100,
  bufferBudgetMiB: 256,
  shutdownGraceS: 10,
}

async function withCluster<T>(
  overrides: Record<string, unknown>,
  fn: (c: DevCluster) => Promise<T>,
): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'pfgate-bench-abuse-'))
  const cluster = await startDevCluster({
    dir,
    port: 0,
    host: '127.0.0.1',
    logLevel: 'error',
    childStderr: 'ignore',
    gatewayOverrides: overrides,
  })
  try {
    return await fn(cluster)
  } finally {
    await cluster.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** An HTTP/2 connection to the gateway, or undefined if it was refused. */
function connect(
  c: DevCluster,
  options: SecureClientSessionOptions = {},
): Promise<ClientHttp2Session | undefined> {
  return new Promise((resolve) => {
    const s = h2connect(c.gatewayUrl, { ca: readFileSync(join(c.dir, 'ca.crt')), ...options })
    s.on('error', () => resolve(undefined))
    s.once('close', () => resolve(undefined))
    s.once('remoteSettings', () => resolve(s))
  })
}

/** Connects, retrying for a while (connections just closed may still count at the gateway). */
async function connectSoon(c: DevCluster): Promise<ClientHttp2Session> {
  const deadline = performance.now() + 10_000
  for (;;) {
    const s = await connect(c)
    if (s !== undefined) return s
    if (performance.now() > deadline) throw new Error('cannot connect to the gateway')
    await sleep(200)
  }
}

/** HEADERS without END_STREAM; resolves with the status (0 if the stream closed first). */
function request(
  s: ClientHttp2Session,
  path: string,
  authorization: string | undefined,
): { req: ClientHttp2Stream; status: Promise<number> } {
  const req = s.request(
    {
      ':method': 'POST',
      ':path': path,
      [PORT_HEADER]: String(POD.port),
      ...(authorization !== undefined ? { authorization } : {}),
    },
    { endStream: false },
  )
  req.on('error', () => undefined)
  const status = new Promise<number>((resolve) => {
    req.once('response', (h) => resolve(Number(h[':status'])))
    req.once('close', () => resolve(0))
  })
  return { req, status }
}

function metric(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1))
}

async function scrape(c: DevCluster): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${c.metricsPort}/metrics`)
  return res.text()
}

/** 1. Unauthenticated streams that never end, from clients that never read. */
async function unauthenticated(
  c: DevCluster,
  connections: number,
  perConnection: number,
): Promise<AbuseResult['unauthenticated']> {
  const pid = c.pid('gateway')
  await sleep(500)
  const rss0 = rssKiB(pid)
  const sessions: ClientHttp2Session[] = []
  let refused = 0
  let accepted = 0
  for (let i = 0; i < connections; i++) {
    // Assumes no stream limit before SETTINGS and never reads (window 0).
    const s = await connect(c, {
      peerMaxConcurrentStreams: 100_000,
      settings: { initialWindowSize: 0 },
    })
    if (s === undefined) {
      refused++
      continue
    }
    sessions.push(s)
    for (let k = 0; k < perConnection; k++) {
      void request(s, k % 2 === 0 ? NATIVE : API, undefined).status.then((st) => {
        if (st > 0) accepted++
      })
    }
  }
  // Well within the request deadline (30 s): what the gateway holds now.
  await sleep(5000)
  const rss1 = rssKiB(pid)
  for (const s of sessions) s.destroy()
  return {
    attemptedConnections: connections,
    attemptedStreams: connections * perConnection,
    refusedConnections: refused,
    acceptedStreams: accepted,
    bound: DEFAULTS.connectionsPerSource * DEFAULTS.unauthenticatedStreams,
    rssGrowthMB: Math.round((rss1 - rss0) / 1024),
  }
}

/** Opens an authenticated echo stream (200) that never reads and sends `bytes`. */
async function stalledStream(
  s: ClientHttp2Session,
  token: string,
  bytes: number,
): Promise<ClientHttp2Stream> {
  const { req, status } = request(s, NATIVE, `Bearer ${token}`)
  const st = await status
  if (st !== 200) throw new Error(`stream open answered ${st}`)
  req.pause()
  const chunk = Buffer.alloc(64 * 1024, 0x61)
  let sent = 0
  const pump = (): void => {
    while (sent < bytes) {
      sent += chunk.length
      if (!req.write(chunk)) {
        req.once('drain', pump)
        return
      }
    }
    req.end()
  }
  pump()
  return req
}

/** 2. Authenticated streams whose client sends and never reads. */
async function stalled(
  c: DevCluster,
  streams: number,
  mibEach: number,
): Promise<AbuseResult['stalled']> {
  const pid = c.pid('gateway')
  const s = await connectSoon(c)
  try {
    await sleep(500)
    const rss0 = rssKiB(pid)
    const all: ClientHttp2Stream[] = []
    for (let i = 0; i < streams; i++) {
      all.push(await stalledStream(s, c.token, mibEach * MiB))
      await sleep(10)
    }
    await sleep(5000)
    const rss1 = rssKiB(pid)
    const m = await scrape(c)
    return {
      streams,
      mibEach,
      budgetMiB: DEFAULTS.bufferBudgetMiB,
      relayBufferedMiB: Math.round(metric(m, 'pfgate_relay_buffered_bytes') / MiB),
      rssGrowthMB: Math.round((rss1 - rss0) / 1024),
      resetByBudget: metric(m, 'pfgate_limit_hits_total', '{limit="buffer-budget"}'),
    }
  } finally {
    s.destroy()
  }
}

/** 3. SIGTERM while clients never read: how long until the gateway process exits. */
async function shutdown(c: DevCluster): Promise<AbuseResult['shutdown']> {
  const s = await connectSoon(c)
  const sockets: TLSSocket[] = []
  try {
    await stalledStream(s, c.token, 32 * MiB)
    // A client that sent the HTTP/2 preface and nothing else, and never reads.
    const t = tlsConnect({
      host: '127.0.0.1',
      port: c.gatewayPort,
      ca: readFileSync(join(c.dir, 'ca.crt')),
      servername: 'localhost',
      ALPNProtocols: ['h2'],
    })
    t.on('error', () => undefined)
    sockets.push(t)
    await new Promise<void>((resolve) => t.once('secureConnect', () => resolve()))
    t.write(
      Buffer.concat([
        Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'),
        Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]),
      ]),
    )
    t.pause()
    await sleep(1000)
    const t0 = performance.now()
    // Bounded: past a minute the gateway is killed (and the figure says so).
    const pid = c.pid('gateway') as number
    const killer = setTimeout(() => process.kill(pid, 'SIGKILL'), 60_000)
    const how = await c.kill('gateway', 'SIGTERM', false)
    clearTimeout(killer)
    return {
      graceS: DEFAULTS.shutdownGraceS,
      exitS: Math.round((performance.now() - t0) / 100) / 10,
      exitCode: how.code,
      signal: how.signal,
    }
  } finally {
    s.destroy()
    for (const t of sockets) t.destroy()
  }
}

/** 4. Streams, then a flood of denials, then: are the streams' records still there? */
async function auditFlood(
  c: DevCluster,
  seconds: number,
  streams: number,
): Promise<AbuseResult['auditFlood']> {
  const trail = join(c.dir, 'audit', 'audit.log')
  const s = await connectSoon(c)
  const ids: string[] = []
  try {
    for (let i = 0; i < streams; i++) {
      const { req, status } = request(s, NATIVE, `Bearer ${c.token}`)
      req.once('response', (h) => ids.push(String(h['pfgate-stream-id'])))
      if ((await status) !== 200) throw new Error('a stream did not open')
      req.end('x')
      req.resume()
      await new Promise((r) => req.once('close', r))
    }
  } finally {
    s.destroy()
  }
  // The flood: garbage tokens and 15 KB pod names, as fast as 16 connections allow.
  const name = 'x'.repeat(15_000)
  const path = nativePortForwardPath(NODE, POD.namespace, name)
  let sent = 0
  const end = performance.now() + seconds * 1000
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (performance.now() < end) {
        const f = await connect(c)
        if (f === undefined) {
          await sleep(50)
          continue
        }
        // A connection that never authenticates, reused until the deadline or its end.
        await Promise.all(
          Array.from({ length: 32 }, async () => {
            while (performance.now() < end && !f.destroyed && !f.closed) {
              const { req, status } = request(f, path, 'Bearer x')
              req.end()
              req.resume()
              await status
              sent++
            }
          }),
        )
        f.destroy()
      }
    }),
  )
  await sleep(2000)
  const wanted = new Set(ids)
  let found = 0
  await readTrail(trail, (r) => {
    if (r.streamId !== undefined && wanted.has(r.streamId)) found++
  })
  const files = readdirSync(join(c.dir, 'audit')).filter((f) => f.startsWith('audit.log'))
  const bytes = files.reduce((n, f) => n + statSync(join(c.dir, 'audit', f)).size, 0)
  return {
    seconds,
    denialsSent: sent,
    trailMiB: Math.round((bytes / MiB) * 10) / 10,
    trailFiles: files.length,
    // Each stream has an open and a close record.
    earlierRecords: 2 * ids.length,
    earlierFound: found,
  }
}

/** Runs the section. */
export async function benchAbuse(options: {
  quick: boolean
  log: (line: string) => void
}): Promise<AbuseResult> {
  const { quick, log } = options
  // The production defaults (src/gateway/config.ts), not the dev cluster's shorter ones.
  const defaults = {
    shutdownGrace: `${DEFAULTS.shutdownGraceS}s`,
    audit: {
      mode: 'blocking-strict',
      sinks: [{ type: 'file', path: 'audit/audit.log', fsync: 'always' }],
    },
  }
  return withCluster(defaults, async (c) => {
    log('abuse: unauthenticated streams that never end, from one source')
    const u = await unauthenticated(c, 64, quick ? 100 : 200)
    log('abuse: stalled readers')
    const st = await stalled(c, quick ? 100 : 200, 8)
    log('abuse: SIGTERM with clients that never read')
    const sh = await shutdown(c)
    await c.restart('gateway')
    const seconds = quick ? 10 : 60
    log(`abuse: a ${seconds} s denial flood against the audit trail`)
    const a = await auditFlood(c, seconds, 20)
    return { unauthenticated: u, stalled: st, shutdown: sh, auditFlood: a }
  })
}
