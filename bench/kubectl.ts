/**
 * Benchmark of unmodified kubectl port-forwarding through pfgate (client → kubectl →
 * gateway → agent → echo pod, all real processes on this machine), for the two wire
 * protocols kubectl speaks:
 *
 * - `tunnel`: kubectl 1.33, SPDY tunneled in a WebSocket (`SPDY/3.1+portforward.k8s.io`);
 * - `spdy`: kubectl 1.33 with `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`, the SPDY/3.1
 *   upgrade (not an older kubectl: before 1.32 a local client that closes while the pod
 *   still sends wedges kubectl's whole SPDY connection, docs/kubernetes-clients.md).
 *
 * For each it measures:
 * - **throughput**: `throughputMiB` MiB written to one forwarded local connection while
 *   the echo comes back (both directions at once), MiB/s each way, best of `runs`;
 * - **stream-open latency**: from a new local TCP connection to its first echoed byte
 *   (kubectl creates the error and the data stream, waiting for each SYN_REPLY; the
 *   gateway authenticates, authorizes, audits and dials through the agent), `opens`
 *   samples one after the other;
 * - the gateway's CPU time per GiB relayed during the throughput runs.
 *
 * The numbers are absolute; `npm run bench` (bench/main.ts) prints them as ratios to the
 * native HTTP/2 path and to a plain TCP relay chain measured in the same run.
 *
 * Run alone: `node dist/bench/kubectl.js [--json] [--mib N] [--opens N] [--runs N]`.
 * Needs the kubectl builds that test/helpers/kube-clients.ts looks for.
 *
 * @module
 */
import type { BenchKubectl, KubectlBenchRow } from './kubectl-contract.js'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { readFileSync, realpathSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startTestCluster } from '../test/helpers/cluster.js'
import { startKubectlForward } from '../test/helpers/kube-clients.js'
import type { DevCluster } from '../src/dev/cluster.js'

/** Latency percentiles, ms. */
export interface LatencyStats {
  n: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  meanMs: number
}

/** What was measured for one kubectl protocol. */
export interface KubectlPathResult {
  /** The kubectl build used. */
  kubectl: string
  /** The client protocol as the gateway's audit trail names it. */
  protocol: 'ws-spdy' | 'spdy'
  /** MiB/s each way through one forwarded connection (echo), best of `runs`. */
  throughputMiBps: number
  /** Every run's MiB/s, in order. */
  throughputRunsMiBps: number[]
  /** New local connection → first echoed byte. */
  open: LatencyStats
  /** Gateway CPU seconds (user + system) per GiB relayed each way, in the throughput runs. */
  gatewayCpuSecPerGiB: number
}

/** What {@link benchKubectl} measured. */
export interface KubectlEchoBenchResult {
  tunnel: KubectlPathResult
  spdy: KubectlPathResult
  params: { throughputMiB: number; runs: number; opens: number }
}

/** Options for {@link benchKubectl}. */
export interface KubectlBenchOptions {
  /** A running dev cluster to use (default: one is started and stopped). */
  cluster?: DevCluster
  /** MiB echoed per throughput run (default 64). */
  throughputMiB?: number
  /** Throughput runs per protocol; the best is kept (default 3). */
  runs?: number
  /** Stream-open samples per protocol (default 200). */
  opens?: number
  /** Called with a line per step (progress). */
  log?: (line: string) => void
}

function stats(samples: number[]): LatencyStats {
  const s = [...samples].sort((a, b) => a - b)
  const at = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN
  return {
    n: s.length,
    p50Ms: at(0.5),
    p90Ms: at(0.9),
    p99Ms: at(0.99),
    meanMs: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length),
  }
}

/** User + system CPU seconds of a process so far. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the command name.
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** Echoes `bytes` through a local port; resolves with the elapsed ms. */
async function echo(port: number, bytes: number, block: Buffer): Promise<number> {
  const sock = connect({ port, host: '127.0.0.1', allowHalfOpen: true, noDelay: true })
  await once(sock, 'connect')
  const t0 = performance.now()
  let got = 0
  const done = new Promise<void>((resolve, reject) => {
    sock.on('data', (d: Buffer) => (got += d.length))
    sock.once('end', () =>
      got >= bytes ? resolve() : reject(new Error(`echo short: ${got}/${bytes}`)),
    )
    sock.once('error', reject)
  })
  for (let sent = 0; sent < bytes;) {
    const n = Math.min(block.length, bytes - sent)
    sent += n
    if (!sock.write(n === block.length ? block : block.subarray(0, n))) await once(sock, 'drain')
  }
  sock.end()
  await done
  const ms = performance.now() - t0
  sock.destroy()
  return ms
}

/** One new connection: connect, send a byte, wait for it back. */
async function openOnce(port: number): Promise<number> {
  const t0 = performance.now()
  const sock = connect({ port, host: '127.0.0.1', noDelay: true })
  const back = new Promise<void>((resolve, reject) => {
    sock.once('data', () => resolve())
    sock.once('error', reject)
    sock.once('close', () => reject(new Error('closed before the echo')))
  })
  await once(sock, 'connect')
  sock.write('x')
  await back
  const ms = performance.now() - t0
  sock.destroy()
  return ms
}

async function measure(
  cluster: DevCluster,
  version: string,
  protocol: 'ws-spdy' | 'spdy',
  o: Required<Omit<KubectlBenchOptions, 'cluster' | 'log'>>,
  log: (line: string) => void,
): Promise<KubectlPathResult> {
  const f = await startKubectlForward(version, ['echo', ':5000'], 1, {
    kubeconfig: cluster.kubeconfig,
    home: join(cluster.dir, `bench-home-${protocol}`),
    env: protocol === 'spdy' ? { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' } : {},
  })
  try {
    const port = f.local[0]!.port
    const pid = cluster.pid('gateway')
    const block = randomBytes(256 * 1024)
    const bytes = o.throughputMiB * 1024 * 1024
    await echo(port, 4 * 1024 * 1024, block) // warm-up
    const runs: number[] = []
    const cpu0 = pid !== undefined ? cpuSeconds(pid) : NaN
    for (let i = 0; i < o.runs; i++) {
      const ms = await echo(port, bytes, block)
      runs.push((o.throughputMiB / ms) * 1000)
      log(
        `kubectl ${version} (${protocol}): run ${i + 1}: ${runs.at(-1)!.toFixed(0)} MiB/s each way`,
      )
    }
    const cpu = pid !== undefined ? cpuSeconds(pid) - cpu0 : NaN
    for (let i = 0; i < 5; i++) await openOnce(port) // warm-up
    const samples: number[] = []
    for (let i = 0; i < o.opens; i++) samples.push(await openOnce(port))
    const open = stats(samples)
    log(
      `kubectl ${version} (${protocol}): open p50 ${open.p50Ms.toFixed(2)} ms, p99 ${open.p99Ms.toFixed(2)} ms`,
    )
    return {
      kubectl: version,
      protocol,
      throughputMiBps: Math.max(...runs),
      throughputRunsMiBps: runs,
      open,
      gatewayCpuSecPerGiB: cpu / ((o.throughputMiB * o.runs) / 1024),
    }
  } finally {
    await f.stop()
  }
}

/**
 * Measures kubectl 1.33 over the tunnel and over plain SPDY through pfgate. Uses
 * `options.cluster` when given (its `echo` pod, port 5000), else starts a dev cluster.
 *
 * @example
 * ```ts
 * const r = await benchKubectl({ throughputMiB: 64, opens: 200 })
 * console.log(r.tunnel.throughputMiBps, r.spdy.open.p50Ms)
 * ```
 */
export async function benchKubectlEcho(
  options: KubectlBenchOptions = {},
): Promise<KubectlEchoBenchResult> {
  const o = {
    throughputMiB: options.throughputMiB ?? 64,
    runs: options.runs ?? 3,
    opens: options.opens ?? 200,
  }
  const log = options.log ?? (() => {})
  const own = options.cluster === undefined ? await startTestCluster() : undefined
  const cluster: DevCluster = options.cluster ?? own!
  try {
    const tunnel = await measure(cluster, '1.33', 'ws-spdy', o, log)
    const spdy = await measure(cluster, '1.33', 'spdy', o, log)
    return { tunnel, spdy, params: o }
  } finally {
    await own?.cleanup()
  }
}

function arg(name: string): number | undefined {
  const i = process.argv.indexOf(`--${name}`)
  if (i < 0) return undefined
  const v = Number(process.argv[i + 1])
  return Number.isFinite(v) ? v : undefined
}

const isMain = (() => {
  try {
    return realpathSync(process.argv[1] ?? '') === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
})()

if (isMain) {
  const json = process.argv.includes('--json')
  const mib = arg('mib')
  const opens = arg('opens')
  const runs = arg('runs')
  const r = await benchKubectlEcho({
    ...(mib !== undefined ? { throughputMiB: mib } : {}),
    ...(opens !== undefined ? { opens } : {}),
    ...(runs !== undefined ? { runs } : {}),
    log: json ? undefined : (l) => console.error(l),
  })
  if (json) {
    console.log(JSON.stringify(r, null, 2))
  } else {
    for (const p of [r.tunnel, r.spdy]) {
      console.log(
        `kubectl ${p.kubectl} ${p.protocol.padEnd(7)}  ${p.throughputMiBps.toFixed(0).padStart(5)} MiB/s each way` +
          `  open p50 ${p.open.p50Ms.toFixed(2)} ms p90 ${p.open.p90Ms.toFixed(2)} ms p99 ${p.open.p99Ms.toFixed(2)} ms` +
          `  gateway ${p.gatewayCpuSecPerGiB.toFixed(2)} CPU-s/GiB`,
      )
    }
  }
}

/**
 * The `npm run bench` section (bench/kubectl-contract.ts): iperf3 through
 * `kubectl port-forward` to the bench pod of the same system under test, the same way
 * main.ts measures the native path, so each row's ratio to native HTTP/2 compares like
 * with like.
 */
export const benchKubectl: BenchKubectl = async (ctx) => {
  const rows: KubectlBenchRow[] = []
  // SPDY with kubectl 1.33 (WebSockets turned off), not 1.28: kubectl before 1.32 wedges
  // its whole SPDY connection when a local client closes while the pod still sends, as
  // iperf3 -R does at the end of every run (docs/kubernetes-clients.md, Known limits).
  const paths = [
    { version: '1.33', path: 'kubectl 1.33 WebSocket tunnel', env: {} },
    {
      version: '1.33',
      path: 'kubectl 1.33 SPDY',
      env: { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' },
    },
  ]
  for (const [i, { version, path, env }] of paths.entries()) {
    const f = await startKubectlForward(
      version,
      ['-n', ctx.pod.namespace, ctx.pod.name, `:${ctx.pod.iperfPort}`],
      1,
      { kubeconfig: ctx.kubeconfig, home: join(ctx.dir, `bench-home-${i}`), env },
    )
    try {
      const port = f.local[0]!.port
      for (const direction of ['up', 'down'] as const) {
        const runs: number[] = []
        for (let i = 0; i < ctx.iperf.reps; i++) {
          const r = await ctx.iperf.run({
            port,
            seconds: ctx.iperf.seconds,
            parallel: 1,
            direction,
          })
          runs.push(r.gbps)
          ctx.log(
            `  rep ${i + 1}/${ctx.iperf.reps} ${path}, 1 stream ${direction}: ${r.gbps.toFixed(2)} Gbit/s`,
          )
        }
        runs.sort((a, b) => a - b)
        rows.push({ path, direction, gbps: runs[Math.floor(runs.length / 2)] as number })
      }
    } finally {
      await f.stop()
    }
  }
  return { rows }
}
