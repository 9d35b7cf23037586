/**
 * Benchmark of the ways the agent can reach a pod port, measured in one run:
 *
 * - `static`: plain `net.connect` to an echo server in the host namespace (the static
 *   dialer's path: the floor);
 * - `netns`: {@link NetnsDialer}, an echo server inside a fresh network namespace,
 *   reached through the long-lived helper that passes connected sockets back;
 * - `socat`: the reference, one `nsenter --net=<path> socat - TCP:127.0.0.1:<port>`
 *   process per connection (what dockershim did), relayed through its stdin/stdout;
 * - `runtime`: the netns dialer resolving the pod by UID from a real containerd over
 *   CRI (src/dev/containerd-harness.ts; the same echo server, in the pod sandbox's
 *   namespace): the first dial (ListPodSandbox, verbose PodSandboxStatus, helper start)
 * and cached dials (answered from the resolver's checked cache), both against the static dialer.
 *
 * Dial latency is the time from asking for a connection to the first echoed byte
 * (a process-per-connection dialer only proves it is connected that way). Throughput
 * is `bytes` written and read back through one connection (echo), MiB/s each way.
 * Needs root, `ip`, `nsenter` and `socat`; the runtime rows also containerd (else they
 * report why they are missing).
 *
 * Run alone: `node dist/bench/netns-dialer.js [--json]`; `npm run bench` calls
 * {@link benchNetnsDialer}.
 *
 * @module
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync, realpathSync } from 'node:fs'
import { connect } from 'node:net'
import type { Duplex, Readable, Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { NetnsDialer } from '../src/agent/netns-dialer.js'
import { StaticNetnsResolver } from '../src/agent/netns-resolver.js'
import { CriNetnsResolver } from '../src/agent/cri-resolver.js'
import { ContainerdHarness } from '../src/dev/containerd-harness.js'
import {
  assertNetnsPrerequisites,
  createNetns,
  startServerInNetns,
  startServerOnHost,
} from '../test/helpers/netns.js'
import type { NetnsServer, TestNetns } from '../test/helpers/netns.js'

/** Latency percentiles, ms. */
export interface LatencyStats {
  n: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  meanMs: number
}

/** What {@link benchNetnsDialer} measured. */
export interface NetnsBenchResult {
  /** Time to first echoed byte of a new connection. */
  dial: {
    static: LatencyStats
    netns: LatencyStats
    socat: LatencyStats
    /** The netns dialer's first dial, which starts the helper. */
    netnsColdMs: number
  }
  /** MiB/s each way through one connection (best of `runs`). */
  throughputMiBps: { static: number; netns: number; socat: number }
  /** 200 dials started at once: ms until all had their first echo (connections per second). */
  burst: { static: { ms: number; perSec: number }; netns: { ms: number; perSec: number } }
  /**
   * The runtime (CRI) path, or why it could not run: the first dial (list, status,
   * helper start) and cached dials, time to first echo; CRI calls made.
   */
  runtime:
    { coldMs: number; dial: LatencyStats; lists: number; statuses: number } | { error: string }
  /** Memory of the helper after the run, KiB: RSS, and private (what each extra helper costs). */
  helperRssKiB: number
  helperPrivateKiB: number
  /** Parameters used. */
  params: { dials: number; socatDials: number; throughputMiB: number; runs: number }
}

/** Options for {@link benchNetnsDialer}. */
export interface NetnsBenchOptions {
  /** Dials measured for static and netns (default 300). */
  dials?: number
  /** Dials measured for socat (default 60: each is a process). */
  socatDials?: number
  /** MiB echoed per throughput run (default 64). */
  throughputMiB?: number
  /** Throughput runs per path, the best is kept (default 3). */
  runs?: number
}

function stats(samples: number[]): LatencyStats {
  const s = [...samples].sort((a, b) => a - b)
  const at = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN
  const round = (x: number): number => Math.round(x * 1000) / 1000
  return {
    n: s.length,
    p50Ms: round(at(0.5)),
    p90Ms: round(at(0.9)),
    p99Ms: round(at(0.99)),
    meanMs: round(s.reduce((a, b) => a + b, 0) / s.length),
  }
}

/** A connection under test: where to write, where to read, how to tear it down. */
interface Conn {
  input: Writable
  output: Readable
  close(): Promise<void>
}

const socketConn = (s: Duplex): Conn => ({
  input: s,
  output: s,
  close: () => {
    s.destroy()
    return Promise.resolve()
  },
})

/** Writes one byte and waits for its echo. */
function roundTrip(c: Conn): Promise<void> {
  return new Promise((resolve, reject) => {
    c.output.once('data', () => resolve())
    c.output.once('error', reject)
    c.input.write('x')
  })
}

/** Echoes `payload` through the connection; resolves with the bytes read back. */
function echo(c: Conn, payload: Buffer, total: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let got = 0
    c.output.on('data', (d: Buffer) => {
      got += d.length
      if (got >= total) resolve(got)
    })
    c.output.once('end', () => resolve(got))
    c.output.once('error', reject)
    let sent = 0
    const pump = (): void => {
      while (sent < total) {
        sent += payload.length
        if (!c.input.write(payload)) {
          c.input.once('drain', pump)
          return
        }
      }
      c.input.end()
    }
    pump()
  })
}

/** A dial function for each path. */
type Dial = () => Promise<Conn>

async function measureDials(dial: Dial, n: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    const c = await dial()
    await roundTrip(c)
    out.push(performance.now() - t0)
    await c.close()
  }
  return out
}

async function measureBurst(dial: Dial, n: number): Promise<{ ms: number; perSec: number }> {
  const t0 = performance.now()
  const conns = await Promise.all(
    Array.from({ length: n }, async () => {
      const c = await dial()
      await roundTrip(c)
      return c
    }),
  )
  const ms = performance.now() - t0
  await Promise.all(conns.map((c) => c.close()))
  return { ms: Math.round(ms * 10) / 10, perSec: Math.round((n / ms) * 1000) }
}

async function measureThroughput(dial: Dial, mib: number, runs: number): Promise<number> {
  const payload = randomBytes(256 * 1024)
  const total = mib * 1024 * 1024
  let best = 0
  for (let r = 0; r < runs; r++) {
    const c = await dial()
    const t0 = performance.now()
    const got = await echo(c, payload, total)
    const s = (performance.now() - t0) / 1000
    await c.close()
    if (got < total) throw new Error(`echo returned ${got} of ${total} bytes`)
    best = Math.max(best, mib / s)
  }
  return Math.round(best)
}

/** One `nsenter --net=<path> socat - TCP:127.0.0.1:<port>` process per connection. */
function socatDial(netnsPath: string, port: number): Dial {
  return () =>
    new Promise((resolve, reject) => {
      // -t 10: after our EOF, wait long enough for the echoed tail (the default 0.5 s can cut it).
      const child = spawn(
        'nsenter',
        [`--net=${netnsPath}`, '--', 'socat', '-t', '10', '-', `TCP:127.0.0.1:${port}`],
        { stdio: ['pipe', 'pipe', 'inherit'] },
      )
      const exited = new Promise<void>((r) => child.once('exit', () => r()))
      child.once('error', reject)
      child.once('spawn', () =>
        resolve({
          input: child.stdin,
          output: child.stdout,
          close: async () => {
            child.kill('SIGTERM')
            await exited
          },
        }),
      )
    })
}

/**
 * The runtime-resolved path: a pod sandbox in a private containerd, the echo server in
 * its namespace, dialled by pod UID through {@link CriNetnsResolver}.
 */
async function benchRuntimePath(
  dials: number,
): Promise<{ coldMs: number; dial: LatencyStats; lists: number; statuses: number }> {
  const h = await ContainerdHarness.start({ name: 'bench' })
  let server: NetnsServer | undefined
  let dialer: NetnsDialer | undefined
  try {
    const pod = await h.runPod({ namespace: 'bench', name: 'echo', containers: [] })
    server = await startServerInNetns(pod.netnsPath, 'echo')
    const resolver = new CriNetnsResolver({ endpoint: h.socketPath })
    dialer = new NetnsDialer({ resolver, idleTimeoutMs: 0 })
    const d = dialer
    const port = server.port
    const target = { namespace: pod.namespace, name: pod.name, uid: pod.uid }
    const dial: Dial = async () =>
      socketConn(
        await d.dial(target, port, { signal: new AbortController().signal, timeoutMs: 10_000 }),
      )
    const cold = await measureDials(dial, 1)
    await measureDials(dial, 50)
    const warm = stats(await measureDials(dial, dials))
    const s = resolver.stats()
    return {
      coldMs: Math.round(cold[0]! * 10) / 10,
      dial: warm,
      lists: s.lists,
      statuses: s.statuses,
    }
  } finally {
    await dialer?.close()
    await server?.stop()
    await h.close()
  }
}

/** Runs the measurements in fresh namespaces; needs root, `ip`, `nsenter`, `socat`. */
export async function benchNetnsDialer(options: NetnsBenchOptions = {}): Promise<NetnsBenchResult> {
  const params = {
    dials: options.dials ?? 300,
    socatDials: options.socatDials ?? 60,
    throughputMiB: options.throughputMiB ?? 64,
    runs: options.runs ?? 3,
  }
  assertNetnsPrerequisites()
  let ns: TestNetns | undefined
  const servers: NetnsServer[] = []
  let dialer: NetnsDialer | undefined
  try {
    ns = createNetns({ prefix: 'pfgate-bench' })
    const inNs = await startServerInNetns(ns.name, 'echo')
    servers.push(inNs)
    const onHost = await startServerOnHost('echo')
    servers.push(onHost)
    dialer = new NetnsDialer({
      resolver: new StaticNetnsResolver([
        { namespace: 'bench', name: 'echo', uid: 'bench-echo', netns: ns.name },
      ]),
      idleTimeoutMs: 0,
    })
    const d = dialer
    const staticDial: Dial = () =>
      new Promise((resolve, reject) => {
        const s = connect({
          host: '127.0.0.1',
          port: onHost.port,
          allowHalfOpen: true,
          noDelay: true,
        })
        s.once('connect', () => resolve(socketConn(s)))
        s.once('error', reject)
      })
    const netnsDial: Dial = async () =>
      socketConn(
        await d.dial({ namespace: 'bench', name: 'echo', uid: 'bench-echo' }, inNs.port, {
          signal: new AbortController().signal,
          timeoutMs: 10_000,
        }),
      )
    const socat = socatDial(ns.path, inNs.port)

    const cold = await measureDials(netnsDial, 1)
    // Warm up the JIT on both in-process paths before measuring.
    await measureDials(staticDial, 50)
    await measureDials(netnsDial, 50)
    const dial = {
      static: stats(await measureDials(staticDial, params.dials)),
      netns: stats(await measureDials(netnsDial, params.dials)),
      socat: stats(await measureDials(socat, params.socatDials)),
      netnsColdMs: Math.round(cold[0]! * 10) / 10,
    }
    const throughputMiBps = {
      static: await measureThroughput(staticDial, params.throughputMiB, params.runs),
      netns: await measureThroughput(netnsDial, params.throughputMiB, params.runs),
      socat: await measureThroughput(socat, params.throughputMiB, params.runs),
    }
    const burst = {
      static: await measureBurst(staticDial, 200),
      netns: await measureBurst(netnsDial, 200),
    }
    const runtime = await benchRuntimePath(params.dials).catch((err: unknown) => ({
      error: err instanceof Error ? err.message : String(err),
    }))
    const pid = d.helpers()[0]?.pid
    const mem = pid === undefined ? '' : readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')
    const kib = (field: string): number =>
      Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(mem)?.[1] ?? NaN)
    return {
      dial,
      throughputMiBps,
      burst,
      runtime,
      helperRssKiB: kib('Rss'),
      helperPrivateKiB: kib('Private_Clean') + kib('Private_Dirty'),
      params,
    }
  } finally {
    await dialer?.close()
    await Promise.all(servers.map((s) => s.stop()))
    ns?.destroy()
  }
}

/** Human-readable lines for a result, with the ratios the lead's bench prints. */
export function formatNetnsBench(r: NetnsBenchResult): string[] {
  const row = (name: string, l: LatencyStats, mibps: number): string =>
    `${name.padEnd(7)} dial p50 ${l.p50Ms.toFixed(3)} ms  p90 ${l.p90Ms.toFixed(3)}  p99 ${l.p99Ms.toFixed(3)}  (n=${l.n})   throughput ${mibps} MiB/s each way`
  const t = r.throughputMiBps
  return [
    row('static', r.dial.static, t.static),
    row('netns', r.dial.netns, t.netns),
    row('socat', r.dial.socat, t.socat),
    `burst of 200 concurrent dials: static ${r.burst.static.ms} ms (${r.burst.static.perSec}/s), netns ${r.burst.netns.ms} ms (${r.burst.netns.perSec}/s)`,
    `netns first dial (helper start) ${r.dial.netnsColdMs} ms; helper RSS ${r.helperRssKiB} KiB, private ${r.helperPrivateKiB} KiB`,
    'error' in r.runtime
      ? `runtime (CRI) path: not measured (${r.runtime.error})`
      : `runtime (CRI) first dial ${r.runtime.coldMs} ms (${(r.runtime.coldMs / r.dial.static.p50Ms).toFixed(0)}× static p50); cached dial p50 ${r.runtime.dial.p50Ms.toFixed(3)} ms p90 ${r.runtime.dial.p90Ms.toFixed(3)} (${(r.runtime.dial.p50Ms / r.dial.static.p50Ms).toFixed(2)}× static, ${(r.runtime.dial.p50Ms / r.dial.netns.p50Ms).toFixed(2)}× netns from config); ${r.runtime.lists} ListPodSandbox, ${r.runtime.statuses} PodSandboxStatus`,
    `ratios: dial p50 netns/static ${(r.dial.netns.p50Ms / r.dial.static.p50Ms).toFixed(2)}×, socat/netns ${(r.dial.socat.p50Ms / r.dial.netns.p50Ms).toFixed(1)}×; throughput netns/static ${(t.netns / t.static).toFixed(2)}, netns/socat ${(t.netns / t.socat).toFixed(2)}×`,
  ]
}

function isMain(): boolean {
  const entry = process.argv[1]
  if (entry === undefined) return false
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}

if (isMain()) {
  const result = await benchNetnsDialer()
  if (process.argv.includes('--json')) console.log(JSON.stringify(result, null, 2))
  else for (const line of formatNetnsBench(result)) console.log(line)
}
