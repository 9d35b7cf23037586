/**
 * Seeded protocol fuzzing of the running gateway (a real process), used by
 * test/e2e/protocol-fuzz.test.ts (bounded) and scripts/fuzz-gateway.mjs (long runs).
 *
 * Each iteration is one TLS connection doing one of:
 * - `spdy`: a SPDY/3.1 upgrade, then kubectl-like frame streams (real zlib header
 *   blocks, pairs to the echo pod, pings, resets, GOAWAY), mutated, or random frames,
 *   or random bytes, fed in random pieces;
 * - `ws-spdy`: the same through the WebSocket tunnel, cut into random binary messages,
 *   with WebSocket-level faults mixed in (text, bad opcodes, unmasked or reserved-bit
 *   frames, oversized control frames, bad close codes);
 * - `ws-v4`: channel connections (binary or base64, one or more ports, a refused one)
 *   sent random and mutated channel messages and the same WebSocket faults;
 * - `http`: malformed upgrade requests (bad paths and headers, garbage bytes).
 *
 * What must hold: the gateway never crashes and keeps answering `/healthz`; two
 * long-lived neighbour sessions (SPDY and v4) keep echoing throughout (a fault ends
 * only the offending session); once the fuzzing stops, the gateway's sessions and
 * streams return to zero, its open file descriptors to their baseline, every
 * `stream.opened` in the audit trail gets its close, and memory stays bounded.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync, readdirSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import {
  encodeGoaway,
  encodePing,
  encodeRstStream,
  encodeDataFrame,
} from '../../src/protocol/spdy/frames.js'
import { encodeChannelMessage } from '../../src/protocol/ws-channel.js'
import { prng } from '../protocol/spdy/fuzz-harness.js'
import {
  SpdyTestClient,
  encodeControlFrame,
  encodeHeadersFrame,
  encodeSettings,
  encodeSynStream,
  encodeWindowUpdate,
} from '../protocol/spdy/spdy-test-client.js'
import { readAudit, sha256 } from './kube-clients.js'
import {
  RawWebSocket,
  WS_OP,
  connectTls,
  encodeWsFrame,
  rawRequest,
  spdyUpgradeHeaders,
  wsUpgradeHeaders,
} from './raw-upgrade.js'

type Rng = ReturnType<typeof prng>

/** The gateway under test. */
export interface FuzzTarget {
  /** The gateway's TLS port on 127.0.0.1. */
  port: number
  ca: string
  token: string
  /** The gateway's metrics port (sessions and streams gauges). */
  metricsPort: number
  /** The gateway's pid (liveness, open files, memory). */
  pid: number
  /** The dev cluster directory (its audit trail). */
  dir: string
  /** A pod port where nothing listens. */
  refusedPort: number
}

/** Options for {@link runGatewayFuzz}. */
export interface GatewayFuzzOptions {
  seed: number
  /** Stop after this many connections (default 400)... */
  iterations?: number
  /** ...or after this long, whichever comes first. */
  timeMs?: number
  /** Connections in flight at once (default 6). */
  concurrency?: number
  /** Called about once a second. */
  progress?: (r: GatewayFuzzReport) => void
}

/** What a run did and found. */
export interface GatewayFuzzReport {
  seed: number
  iterations: number
  byMode: Record<string, number>
  /** Upgrades answered 101. */
  upgraded: number
  /** Connections the gateway closed before the client gave up on them. */
  closedByGateway: number
  /** Round trips the neighbour sessions completed during the run. */
  neighbourEchoes: number
  fdsBefore: number
  fdsAfter: number
  rssBeforeKiB: number
  rssAfterKiB: number
  /** stream.opened records written during the run (each must get its close). */
  streamsOpened: number
  failures: string[]
  elapsedMs: number
}

const PF = '/api/v1/namespaces/default/pods/echo/portforward'

function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length
  } catch {
    return -1
  }
}

function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return Number(m?.[1] ?? -1)
  } catch {
    return -1
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** `p`'s result, or `fallback` after `ms`; never leaves a timer behind. */
async function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      p,
      new Promise<T>((r) => (timer = setTimeout(() => r(fallback), ms))),
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** GET /healthz over HTTPS; resolves true on a 200 within `ms`. */
function healthy(t: FuzzTarget, ms = 3000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: t.port,
        path: '/healthz',
        ca: t.ca,
        servername: 'localhost',
        agent: false,
        timeout: ms,
      },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode === 200))
      },
    )
    req.on('timeout', () => req.destroy())
    req.on('error', () => resolve(false))
    req.end()
  })
}

/** The gateway's sessions and streams gauges. */
function gauges(t: FuzzTarget): Promise<{ sessions: number; streams: number } | undefined> {
  return new Promise((resolve) => {
    const req = httpRequest(
      { host: '127.0.0.1', port: t.metricsPort, path: '/metrics', timeout: 3000 },
      (res) => {
        let text = ''
        res.on('data', (d: Buffer) => (text += d.toString()))
        res.on('end', () => {
          const get = (name: string): number =>
            Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN)
          resolve({
            sessions: get('pfgate_client_sessions'),
            streams: get('pfgate_streams_active'),
          })
        })
      },
    )
    req.on('timeout', () => req.destroy())
    req.on('error', () => resolve(undefined))
    req.end()
  })
}

/** The gateway's live client sessions (admin API over HTTP/1.1). */
function adminSessions(
  t: FuzzTarget,
): Promise<{ id: string; protocol: string; userAgent?: string; streams: number }[]> {
  return new Promise((resolve) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: t.port,
        path: '/admin/v1/sessions',
        ca: t.ca,
        servername: 'localhost',
        agent: false,
        headers: { authorization: `Bearer ${t.token}` },
      },
      (res) => {
        let text = ''
        res.on('data', (d: Buffer) => (text += d.toString()))
        res.on('end', () => {
          try {
            resolve((JSON.parse(text) as { items: [] }).items)
          } catch {
            resolve([])
          }
        })
      },
    )
    req.on('error', () => resolve([]))
    req.end()
  })
}

// ---------------------------------------------------------------------------
// Inputs

/** A Duplex that records what a SpdyTestClient writes. */
class Recorder extends Duplex {
  readonly out: Buffer[] = []
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.out.push(Buffer.from(chunk))
    cb()
  }
}

/** kubectl-like client byte streams (real zlib header blocks) to replay or mutate. */
async function captures(rng: Rng, refusedPort: number): Promise<Buffer[]> {
  const out: Buffer[] = []
  for (let v = 0; v < 8; v++) {
    const rec = new Recorder()
    const c = new SpdyTestClient(rec)
    const pairs = 1 + (v % 3)
    for (let i = 0; i < pairs; i++) {
      const port = v === 5 ? String(refusedPort) : v === 6 ? '0' : i % 2 === 0 ? '5000' : '6000'
      const err = await c.openStream({ streamtype: 'error', port, requestid: String(i) })
      err.end()
      const data = await c.openStream({ streamtype: 'data', port, requestid: String(i) })
      data.write(rng.bytes(1 + rng.int(v === 7 ? 200_000 : 3000)))
      c.writeRaw(encodePing(2 * i + 1))
      if (v % 2 === 0) data.end()
      else if (v !== 3) data.reset(5)
    }
    if (v === 4) {
      c.writeRaw(encodeSettings([{ id: 4, value: 100 }]))
      c.writeRaw(encodeWindowUpdate(1, 65536))
      c.writeRaw(encodeHeadersFrame(3, await c.compress({ x: 'y' })))
    }
    if (v % 4 === 0) c.writeRaw(encodeGoaway(2 * pairs + 1, 0))
    rec.destroy()
    out.push(Buffer.concat(rec.out))
  }
  return out
}

function mutate(rng: Rng, input: Buffer, others: Buffer[]): Buffer {
  let b: Buffer = Buffer.from(input)
  for (let r = 1 + rng.int(3); r > 0; r--) {
    if (b.length === 0) b = rng.bytes(16)
    switch (rng.int(7)) {
      case 0:
        for (let i = 1 + rng.int(8); i > 0; i--) b[rng.int(b.length)]! ^= 1 << rng.int(8)
        break
      case 1:
        b[rng.int(b.length)] = [0x00, 0xff, 0x80, 0x7f, 0x01, 0x03][rng.int(6)]!
        break
      case 2:
        b = b.subarray(0, rng.int(b.length + 1))
        break
      case 3: {
        const at = rng.int(b.length + 1)
        b = Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(32)), b.subarray(at)])
        break
      }
      case 4: {
        const o = others[rng.int(others.length)]!
        b = Buffer.concat([b.subarray(0, rng.int(b.length + 1)), o.subarray(rng.int(o.length))])
        break
      }
      case 5: {
        const at = rng.int(Math.max(1, b.length - 8))
        if (b.length >= at + 8) b.writeUIntBE(rng.int(0x1000000), at + 5, 3)
        break
      }
      default: {
        const from = rng.int(b.length)
        b = Buffer.concat([b.subarray(0, from), b.subarray(from + 1 + rng.int(64))])
      }
    }
  }
  return b
}

function randomFrames(rng: Rng): Buffer {
  const parts: Buffer[] = []
  for (let i = 1 + rng.int(10); i > 0; i--) {
    const id = rng.int(4) === 0 ? rng.int(0x80000000) : 1 + 2 * rng.int(8)
    switch (rng.int(6)) {
      case 0:
        parts.push(
          encodeDataFrame(
            Math.max(1, id),
            rng.bytes(rng.int(4) === 0 ? rng.int(70_000) : rng.int(64)),
            rng.int(3) === 0,
          ),
        )
        break
      case 1:
        parts.push(encodeSynStream(Math.max(1, id), rng.bytes(rng.int(40)), rng.int(4)))
        break
      case 2:
        parts.push(encodeRstStream(Math.max(1, id), rng.int(13)))
        break
      case 3:
        parts.push(encodePing(1 + rng.int(1000)))
        break
      default:
        parts.push(
          encodeControlFrame(
            rng.int(14),
            rng.int(256),
            rng.bytes(rng.int(5) === 0 ? rng.int(70_000) : rng.int(24)),
            rng.int(10) === 0 ? 2 : 3,
          ),
        )
    }
  }
  return Buffer.concat(parts)
}

function spdyInput(rng: Rng, caps: Buffer[]): Buffer {
  const r = rng.int(10)
  if (r < 5) return mutate(rng, caps[rng.int(caps.length)]!, caps)
  if (r < 7) return randomFrames(rng)
  if (r < 8) return rng.bytes(rng.int(4096))
  return caps[rng.int(caps.length)]!
}

/** A WebSocket-level fault (sent instead of, or among, normal messages). */
function wsFault(rng: Rng, ws: RawWebSocket): void {
  switch (rng.int(9)) {
    case 0:
      ws.sendText('text where binary was expected')
      break
    case 1:
      ws.sendFrame(3 + rng.int(5), rng.bytes(rng.int(20))) // reserved data opcodes
      break
    case 2:
      ws.sendFrame(WS_OP.BINARY, rng.bytes(rng.int(50)), { mask: false })
      break
    case 3:
      ws.sendFrame(WS_OP.BINARY, rng.bytes(rng.int(50)), { rsv: 1 + rng.int(7) })
      break
    case 4:
      ws.sendFrame(WS_OP.PING, rng.bytes(126 + rng.int(100))) // control frames are ≤ 125 bytes
      break
    case 5:
      ws.sendFrame(WS_OP.CLOSE, Buffer.from([0x03, 0xe7 + rng.int(20)])) // invalid close codes
      break
    case 6:
      ws.sendFrame(WS_OP.CONT, rng.bytes(rng.int(30))) // continuation with nothing to continue
      break
    case 7:
      // A header announcing far more than will ever come, then silence.
      if (!ws.socket.destroyed)
        ws.socket.write(encodeWsFrame(WS_OP.BINARY, Buffer.alloc(0), { lengthOverride: 1 << 30 }))
      break
    default:
      if (!ws.socket.destroyed) ws.socket.write(rng.bytes(1 + rng.int(64))) // garbage
  }
}

// ---------------------------------------------------------------------------
// One connection per iteration

interface Ctx {
  t: FuzzTarget
  rng: Rng
  caps: Buffer[]
  report: GatewayFuzzReport
  fail: (m: string) => void
  /** What each iteration did, by the user agent it sent (`fuzz/<mode>/<n>`), for failures. */
  notes: Map<string, string>
  ua: string
}

function note(ctx: Ctx, what: string): void {
  ctx.notes.set(ctx.ua, `${ctx.notes.get(ctx.ua) ?? ''} ${what}`.trim())
  if (ctx.notes.size > 20_000) ctx.notes.delete(ctx.notes.keys().next().value as string)
}

/** Waits until the socket closes (the gateway ended it) or `ms` pass; then destroys it. */
async function finish(ctx: Ctx, socket: TLSSocket, ms: number): Promise<void> {
  if (socket.destroyed) return
  const closed = await within(
    new Promise<boolean>((r) => socket.once('close', () => r(true))),
    ms,
    false,
  )
  if (closed) ctx.report.closedByGateway++
  note(ctx, closed ? 'closed-by-gateway' : 'client-destroyed')
  if (ctx.rng.int(2) === 0) socket.end()
  socket.destroy()
}

async function feed(ctx: Ctx, write: (b: Buffer) => void, input: Buffer): Promise<void> {
  const { rng } = ctx
  for (let off = 0; off < input.length;) {
    const n = rng.int(4) === 0 ? 1 + rng.int(8) : 1 + rng.int(8192)
    write(input.subarray(off, off + n))
    off += n
    if (rng.int(8) === 0) await new Promise((r) => setImmediate(r))
  }
}

async function iterSpdy(ctx: Ctx): Promise<void> {
  const { t, rng } = ctx
  const res = await rawRequest(t.port, t.ca, 'POST', PF, {
    ...spdyUpgradeHeaders(t.token),
    'User-Agent': ctx.ua,
  })
  if (res.status !== 101) {
    ctx.fail(`SPDY upgrade answered ${res.status}: ${res.body}`)
    res.socket.destroy()
    return
  }
  ctx.report.upgraded++
  res.socket.on('error', () => {})
  res.socket.resume()
  const input = spdyInput(rng, ctx.caps)
  note(ctx, `input=${input.length}`)
  await feed(ctx, (b) => res.socket.writable && res.socket.write(b), input)
  await finish(ctx, res.socket, 200 + rng.int(800))
}

async function iterWsSpdy(ctx: Ctx): Promise<void> {
  const { t, rng } = ctx
  const res = await rawRequest(t.port, t.ca, 'GET', PF, {
    ...wsUpgradeHeaders(t.token, ['SPDY/3.1+portforward.k8s.io']),
    'User-Agent': ctx.ua,
  })
  if (res.status !== 101) {
    ctx.fail(`tunnel upgrade answered ${res.status}: ${res.body}`)
    res.socket.destroy()
    return
  }
  ctx.report.upgraded++
  res.socket.on('error', () => {})
  const ws = new RawWebSocket(res.socket, res.rest)
  const input = spdyInput(rng, ctx.caps)
  note(ctx, `input=${input.length}`)
  await feed(
    ctx,
    (b) => {
      if (rng.int(40) === 0) {
        note(ctx, 'fault')
        wsFault(rng, ws)
      } else ws.sendBinary(b)
    },
    input,
  )
  if (rng.int(3) === 0) {
    const code = rng.int(2) === 0 ? 1000 : 4000
    note(ctx, `close${code}`)
    ws.close(code)
  }
  await finish(ctx, res.socket, 200 + rng.int(800))
}

async function iterV4(ctx: Ctx): Promise<void> {
  const { t, rng } = ctx
  const base64 = rng.int(3) === 0
  const portSets = [
    [5000],
    [5000, 6000],
    [t.refusedPort],
    [5000, t.refusedPort],
    [6000, 6000, 5000],
  ]
  const ports = portSets[rng.int(portSets.length)]!
  const res = await rawRequest(t.port, t.ca, 'GET', `${PF}?ports=${ports.join(',')}`, {
    ...wsUpgradeHeaders(t.token, [base64 ? 'v4.base64.channel.k8s.io' : 'v4.channel.k8s.io']),
    'User-Agent': ctx.ua,
  })
  note(ctx, `ports=${ports.join(',')} base64=${base64}`)
  if (res.status !== 101) {
    ctx.fail(`v4 upgrade answered ${res.status}: ${res.body}`)
    res.socket.destroy()
    return
  }
  ctx.report.upgraded++
  res.socket.on('error', () => {})
  const ws = new RawWebSocket(res.socket, res.rest)
  for (let i = rng.int(20); i > 0; i--) {
    const channel = rng.int(5) === 0 ? rng.int(256) : rng.int(ports.length * 2)
    const payload = rng.bytes(rng.int(6) === 0 ? rng.int(300_000) : rng.int(2000))
    const kind = rng.int(8)
    note(ctx, `m${kind}:${channel}:${payload.length}`)
    switch (kind) {
      case 0:
        wsFault(rng, ws)
        break
      case 1:
        ws.sendBinary(Buffer.alloc(0))
        break
      case 2:
        ws.sendText(String.fromCharCode(48 + channel) + '@@not base64@@')
        break
      default:
        if (base64) ws.sendText(encodeChannelMessage(channel, payload, 'base64') as string)
        else ws.sendBinary(encodeChannelMessage(channel, payload, 'binary') as Buffer)
    }
    if (rng.int(4) === 0) await sleep(rng.int(20))
  }
  if (rng.int(3) === 0) {
    note(ctx, 'close1000')
    ws.close(1000)
  }
  await finish(ctx, res.socket, 200 + rng.int(800))
}

async function iterHttp(ctx: Ctx): Promise<void> {
  const { t, rng } = ctx
  const paths = [
    PF,
    '/api/v1/namespaces/default/pods/echo/portforward?ports=%zz',
    '/api/v1/namespaces/%zz/pods/echo/portforward',
    '/api/v1/nodes/node-a/proxy/portForward/default/echo',
    '/proxy/nodes/x/portForward/default/echo',
    '/api/v1/namespaces/default/pods/echo/portforward/extra',
    '/' + rng.bytes(20).toString('hex'),
  ]
  if (rng.int(5) === 0) {
    // Garbage instead of a request.
    const s = await connectTls(t.port, t.ca)
    s.on('error', () => {})
    s.resume()
    s.write(rng.bytes(1 + rng.int(2000)))
    await finish(ctx, s, 500)
    return
  }
  const headers: Record<string, string> = {
    ...(rng.int(2) === 0
      ? spdyUpgradeHeaders(t.token)
      : wsUpgradeHeaders(t.token, ['v4.channel.k8s.io'])),
    'User-Agent': ctx.ua,
  }
  const keys = Object.keys(headers)
  for (let i = rng.int(3); i > 0; i--) {
    const k = keys[rng.int(keys.length)]!
    switch (rng.int(4)) {
      case 0:
        delete headers[k]
        break
      case 1:
        headers[k] = rng.bytes(1 + rng.int(30)).toString('base64')
        break
      case 2:
        headers[k] = ''
        break
      default:
        headers[k] = 'x'.repeat(rng.int(20_000))
    }
  }
  const method = ['GET', 'POST', 'PUT', 'DELETE'][rng.int(4)]!
  try {
    const res = await rawRequest(t.port, t.ca, method, paths[rng.int(paths.length)]!, headers, 5000)
    if (res.status === 101) ctx.report.upgraded++
    res.socket.on('error', () => {})
    res.socket.resume()
    await finish(ctx, res.socket, 300)
  } catch (err) {
    // A connection closed without an answer is fine for garbage; a hang is not.
    if (err instanceof Error && /within/.test(err.message)) ctx.fail(`no answer: ${err.message}`)
  }
}

// ---------------------------------------------------------------------------
// Neighbours: sessions that must keep working while others are fuzzed.

interface Neighbour {
  stop(): Promise<void>
}

function spdyNeighbour(ctx: Ctx): Promise<Neighbour> {
  return (async () => {
    const { t } = ctx
    const res = await rawRequest(t.port, t.ca, 'POST', PF, spdyUpgradeHeaders(t.token))
    if (res.status !== 101) throw new Error(`neighbour upgrade: ${res.status}`)
    const client = new SpdyTestClient(res.socket)
    let stopped = false
    let id = 0
    const loop = (async () => {
      while (!stopped) {
        const rid = String(id++)
        const round = (async () => {
          const err = await client.openStream({ streamtype: 'error', port: '5000', requestid: rid })
          await err.replied
          err.end()
          const data = await client.openStream({ streamtype: 'data', port: '5000', requestid: rid })
          const payload = randomBytes(1 + (id % 4096))
          data.write(payload, true)
          await data.ended
          await err.ended
          if (data.received !== payload.length || data.digest() !== sha256(payload)) {
            throw new Error(`neighbour echo wrong: ${data.received}/${payload.length} bytes`)
          }
        })()
        const ok = await within(
          round.then(() => true),
          10_000,
          false,
        ).catch((e: unknown) => {
          ctx.fail(`SPDY neighbour: ${String(e)}`)
          return true
        })
        if (!ok) {
          ctx.fail('SPDY neighbour: an echo took more than 10 s')
          return
        }
        ctx.report.neighbourEchoes++
        await sleep(100)
      }
    })()
    return {
      async stop() {
        stopped = true
        await loop
        client.transport.destroy()
      },
    }
  })()
}

function v4Neighbour(ctx: Ctx): Promise<Neighbour> {
  return (async () => {
    const { t } = ctx
    const res = await rawRequest(
      t.port,
      t.ca,
      'GET',
      `${PF}?ports=5000`,
      wsUpgradeHeaders(t.token, ['v4.channel.k8s.io']),
    )
    if (res.status !== 101) throw new Error(`neighbour upgrade: ${res.status}`)
    const ws = new RawWebSocket(res.socket, res.rest)
    let received = 0
    ws.onMessage = (binary, data) => {
      if (binary && data[0] === 0) received += data.length - 1
    }
    let stopped = false
    const loop = (async () => {
      let sent = 2 // the port prefix on channel 0 counts as 2 bytes of channel 0
      while (!stopped) {
        const payload = randomBytes(1 + (sent % 1000))
        ws.sendBinary(Buffer.concat([Buffer.from([0]), payload]))
        sent += payload.length
        const end = Date.now() + 10_000
        while (received < sent && Date.now() < end && !ws.socket.destroyed) await sleep(5)
        if (received < sent) {
          ctx.fail(
            `v4 neighbour: echo stalled (${received}/${sent} bytes, closed=${ws.socket.destroyed})`,
          )
          return
        }
        ctx.report.neighbourEchoes++
        await sleep(100)
      }
    })()
    return {
      async stop() {
        stopped = true
        await loop
        ws.close(1000)
        await within(ws.closed, 2000, undefined)
        ws.socket.destroy()
      },
    }
  })()
}

// ---------------------------------------------------------------------------

/** Runs the fuzzer against a running gateway; resolves with a report (failures listed). */
export async function runGatewayFuzz(
  t: FuzzTarget,
  options: GatewayFuzzOptions,
): Promise<GatewayFuzzReport> {
  const started = performance.now()
  const rng = prng(options.seed)
  const report: GatewayFuzzReport = {
    seed: options.seed,
    iterations: 0,
    byMode: {},
    upgraded: 0,
    closedByGateway: 0,
    neighbourEchoes: 0,
    fdsBefore: 0,
    fdsAfter: 0,
    rssBeforeKiB: 0,
    rssAfterKiB: 0,
    streamsOpened: 0,
    failures: [],
    elapsedMs: 0,
  }
  const fail = (m: string): void => {
    if (report.failures.length < 50) report.failures.push(m)
  }
  const ctx: Ctx = {
    t,
    rng,
    caps: await captures(rng, t.refusedPort),
    report,
    fail,
    notes: new Map(),
    ua: 'fuzz/warm-up',
  }
  const auditBefore = readAudit(t.dir).length

  // Warm up (agent session, caches), then take the baseline.
  await iterSpdy({ ...ctx, caps: [ctx.caps[0]!], rng: prng(1) })
  await sleep(500)
  report.fdsBefore = fdCount(t.pid)
  report.rssBeforeKiB = rssKiB(t.pid)

  const neighbours = [await spdyNeighbour(ctx), await v4Neighbour(ctx)]
  const maxIterations = options.iterations ?? 400
  const deadline = started + (options.timeMs ?? Number.POSITIVE_INFINITY)
  let lastProgress = performance.now()
  const modes: [string, (c: Ctx) => Promise<void>][] = [
    ['spdy', iterSpdy],
    ['ws-spdy', iterWsSpdy],
    ['ws-v4', iterV4],
    ['http', iterHttp],
  ]
  const worker = async (): Promise<void> => {
    while (report.iterations < maxIterations && performance.now() < deadline) {
      report.iterations++
      const [name, fn] = modes[rng.int(modes.length)]!
      report.byMode[name] = (report.byMode[name] ?? 0) + 1
      try {
        await fn({ ...ctx, ua: `fuzz/${name}/${report.iterations}` })
      } catch (err) {
        fail(`${name}: ${err instanceof Error ? err.message : String(err)}`)
      }
      if (report.iterations % 25 === 0) {
        if (!alive(t.pid)) {
          fail('the gateway process died')
          return
        }
        if (!(await healthy(t))) fail('/healthz did not answer 200')
      }
      if (options.progress !== undefined && performance.now() - lastProgress > 1000) {
        lastProgress = performance.now()
        report.elapsedMs = performance.now() - started
        options.progress(report)
      }
    }
  }
  await Promise.all(Array.from({ length: options.concurrency ?? 6 }, worker))
  for (const n of neighbours) await n.stop()

  // Afterwards: alive, healthy, nothing left open, every open audited closed.
  if (!alive(t.pid)) fail('the gateway process died')
  else if (!(await healthy(t))) fail('/healthz did not answer 200 after the run')
  let g = await gauges(t)
  const end = Date.now() + 15_000
  while ((g === undefined || g.sessions !== 0 || g.streams !== 0) && Date.now() < end) {
    await sleep(200)
    g = await gauges(t)
  }
  if (g === undefined) fail('metrics did not answer')
  else if (g.sessions !== 0 || g.streams !== 0) {
    const left = await adminSessions(t)
    fail(
      `left open after the run: ${g.sessions} session(s), ${g.streams} stream(s): ` +
        left
          .map((x) => `${JSON.stringify(x)} did: ${ctx.notes.get(x.userAgent ?? '') ?? '?'}`)
          .join('; '),
    )
  }
  while (fdCount(t.pid) > report.fdsBefore + 4 && Date.now() < end) await sleep(200)
  report.fdsAfter = fdCount(t.pid)
  if (report.fdsAfter > report.fdsBefore + 4) {
    fail(`open files grew from ${report.fdsBefore} to ${report.fdsAfter}`)
  }
  report.rssAfterKiB = rssKiB(t.pid)
  if (report.rssAfterKiB > report.rssBeforeKiB + 200 * 1024) {
    fail(`memory grew from ${report.rssBeforeKiB} KiB to ${report.rssAfterKiB} KiB`)
  }
  const auditEnd = Date.now() + 10_000
  let unclosed: string[]
  for (;;) {
    const recs = readAudit(t.dir).slice(auditBefore)
    const closed = new Set(
      recs
        .filter((r) => r.type === 'stream.closed' || r.type === 'stream.failed')
        .map((r) => r.streamId),
    )
    const opened = recs.filter((r) => r.type === 'stream.opened')
    report.streamsOpened = opened.length
    unclosed = opened.filter((r) => !closed.has(r.streamId)).map((r) => r.streamId ?? '?')
    if (unclosed.length === 0 || Date.now() > auditEnd) break
    await sleep(200)
  }
  if (unclosed.length > 0)
    fail(
      `${unclosed.length} stream(s) opened without a close record: ${unclosed.slice(0, 5).join(', ')}`,
    )
  report.elapsedMs = performance.now() - started
  return report
}

/** Builds a {@link FuzzTarget} for a dev cluster. */
export function fuzzTarget(
  cluster: {
    dir: string
    gatewayPort: number
    metricsPort: number | undefined
    token: string
    pid(name: string): number | undefined
  },
  refusedPort: number,
): FuzzTarget {
  const pid = cluster.pid('gateway')
  if (pid === undefined || cluster.metricsPort === undefined) {
    throw new Error('the cluster has no running gateway with a metrics port')
  }
  return {
    port: cluster.gatewayPort,
    ca: readFileSync(join(cluster.dir, 'ca.crt'), 'utf8'),
    token: cluster.token,
    metricsPort: cluster.metricsPort,
    pid,
    dir: cluster.dir,
    refusedPort,
  }
}
