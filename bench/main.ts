/**
 * `npm run bench [-- --quick] [-- --json FILE] [-- --only a,b] [-- --node-arg=FLAG]`:
 * pfgate's performance in one run, on this machine, next to baselines measured in the
 * same run, printed as one table: each figure, its baseline, the ratio, the target
 * and pass/fail (docs/performance.md explains each figure and the tuning behind it).
 *
 * Sections (in this order, on one system under test started from bench/system.ts):
 * 1. `streams`: 10,000 concurrent streams on one client connection; gateway RSS per stream;
 * 2. `latency`: 1,000 sequential stream opens (connect → first echoed byte) through the
 *    CLI, directly, through a plain socat three-hop chain and through the minimal Node
 *    HTTP/2 chain (bench/node-h2-chain.ts); 1,000 opens at once;
 * 3. `audit`: stream-open rate with blocking-strict audit vs the cheapest audit;
 * 4. `throughput`: iperf3 through pfgate, directly, and through socat chains (two and
 *    three hops in clear, three hops with the same TLS as pfgate), 1 and 8 streams, both
 *    directions, with CPU seconds per GB for the CLI, the gateway and the agent;
 * 5. `kubectl`: bench/kubectl.ts when present (see bench/kubectl-contract.ts);
 * 6. `netns`: the agent's network-namespace dialer against the static dialer and against
 *    `nsenter … socat` per connection, and the runtime-resolved path (pod found by UID in
 *    a private containerd over CRI) against the static dialer (bench/netns-dialer.ts;
 *    its own namespaces and containerd; root);
 * 8. `udp`: UDP flows through pfgate against the pod directly and a three-hop socat UDP
 *    chain: round trip p50/p99 and datagrams per second (bench/udp.ts; its own dev cluster);
 * 7. `abuse`: hostile and broken clients against the default limits (bench/abuse.ts; its
 *    own dev clusters): unauthenticated streams, stalled readers against the buffer
 *    budget, SIGTERM with clients that never read, a denial flood against the audit trail.
 * `duplex`: full-duplex echo through pfgate, socat chains, the minimal Node TLS pipe chain
 *    and the minimal Node HTTP/2 chain, with CPU seconds per GB of each process;
 * `chains`: the gateway→agent leg as a pool of pre-established mTLS connections against
 *    the shared HTTP/2 session, in the minimal Node HTTP/2 chain (bench/chains.ts);
 * 8. `replicas`: reverse-connected agents behind HAProxy with 2 replicas against the direct
 *    topology, same run (bench/replicas.ts; its own replica sets; root, nft, haproxy):
 *    stream-open latency, echo throughput, and a replica's memory per agent session and
 *    per stream (docs/scaling.md).
 *
 * `--quick` (under a minute) uses shorter runs, one repetition and fewer baselines.
 *
 * @module
 */
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { parseArgs } from 'node:util'
import {
  CONNECTION_WINDOW,
  MAX_FRAME_SIZE,
  STREAM_HIGH_WATER_MARK,
  STREAM_WINDOW,
} from '../src/protocol/h2-settings.js'
import { measureAuditCost } from './audit-cost.js'
import type { AuditCost } from './audit-cost.js'
import { manyStreams } from './h2-streams.js'
import type { ManyStreamsResult } from './h2-streams.js'
import { runIperf } from './iperf.js'
import type { BenchKubectl, KubectlBenchResult } from './kubectl-contract.js'
import { coldOpens, interleavedOpens, parallelOpens } from './opens.js'
import { measureDuplex } from './duplex.js'
import type { DuplexCell } from './duplex.js'
import { startNodeChain } from './node-chain.js'
import type { NodeChain } from './node-chain.js'
import { startNodeH2Chain } from './node-h2-chain.js'
import { benchChains, chainRows } from './chains.js'
import type { ChainsResult } from './chains.js'
import type { OpenLatency, ParallelOpens } from './opens.js'
import { benchNetnsDialer } from './netns-dialer.js'
import { benchAbuse } from './abuse.js'
import { benchUdp } from './udp.js'
import type { UdpBenchResult } from './udp.js'
import { benchReplicas } from './replicas.js'
import type { ReplicasBenchResult } from './replicas.js'
import type { AbuseResult } from './abuse.js'
import type { NetnsBenchResult } from './netns-dialer.js'
import { startSocatChain } from './socat.js'
import { BENCH_POD, startSystem } from './system.js'
import type { BenchSystem } from './system.js'
import { PATH_NAMES, measureThroughput, modeLabel } from './throughput.js'
import type { Cell, Mode, PathName } from './throughput.js'
import { cpuSeconds, killAllTracked, median } from './util.js'
import { relayNodeFlags } from '../src/shared/node-flags.js'

/** One line of the result table. */
export interface Row {
  figure: string
  value: string
  baseline: string
  baseValue: string
  ratio: string
  target: string
  result: '' | 'PASS' | 'FAIL'
}

/** Everything one run measured (the `--json` output). */
export interface BenchReport {
  quick: boolean
  environment: Record<string, string | number>
  streams?: ManyStreamsResult
  latency?: {
    pfgate: OpenLatency
    direct: OpenLatency
    socat3: OpenLatency
    /** The minimal Node HTTP/2 chain (bench/node-h2-chain.ts, shared sessions). */
    h2chain?: OpenLatency
    /** CPU ms per open of each process over the interleaved opens, client side first. */
    cpuMsPerOpen?: { pfgate: number[]; h2chain: number[] }
  }
  /** The first 100 opens of the freshly started forward, before the warm ones. */
  coldLatency?: { pfgate: OpenLatency; direct: OpenLatency; h2chain?: OpenLatency }
  /** Full-duplex echo through pfgate and the baselines (bench/duplex.ts). */
  duplex?: { bytes: number; cells: DuplexCell[] }
  /** The gateway→agent leg as an mTLS pool vs a shared HTTP/2 session (bench/chains.ts). */
  chains?: ChainsResult
  parallel?: { pfgate: ParallelOpens; direct: ParallelOpens }
  audit?: AuditCost[]
  throughput?: Cell[]
  kubectl?: KubectlBenchResult | { error: string } | 'not available'
  /** The agent's network-namespace dialer against the static one (bench/netns-dialer.ts). */
  netns?: NetnsBenchResult
  /** Hostile clients against the default limits (bench/abuse.ts). */
  abuse?: AbuseResult
  /** UDP flows against the pod directly and socat UDP relays (bench/udp.ts). */
  udp?: UdpBenchResult
  /** Reverse agents + HAProxy + replicas against the direct topology (bench/replicas.ts). */
  replicas?: ReplicasBenchResult
  /** Sections that failed, with the error. */
  errors?: Partial<Record<string, string>>
  rows: Row[]
  seconds: number
}

const SECTIONS = [
  'streams',
  'latency',
  'audit',
  'throughput',
  'duplex',
  'chains',
  'kubectl',
  'netns',
  'abuse',
  'replicas',
  'udp',
] as const
/** The sections that measure the shared system under test (the others start their own). */
const SYSTEM_SECTIONS: readonly Section[] = [
  'streams',
  'latency',
  'audit',
  'throughput',
  'duplex',
  'chains',
  'kubectl',
]
type Section = (typeof SECTIONS)[number]

const UP1: Mode = { parallel: 1, direction: 'up' }
const DOWN1: Mode = { parallel: 1, direction: 'down' }
const UP8: Mode = { parallel: 8, direction: 'up' }
const DOWN8: Mode = { parallel: 8, direction: 'down' }

function log(line: string): void {
  process.stderr.write(line + '\n')
}

/** Raises this process's open-file limit so the children (which inherit it) have room. */
function raiseFileLimit(): string {
  try {
    execFileSync('prlimit', [`--pid=${process.pid}`, '--nofile=65536:65536'], { stdio: 'ignore' })
  } catch {
    // Not permitted here: keep the current limit (10,000 streams fit in 20,000).
  }
  const limits = readFileSync('/proc/self/limits', 'utf8')
  return /^Max open files\s+(\d+)/m.exec(limits)?.[1] ?? 'unknown'
}

function toolVersion(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
      .split('\n')
      .find((l) => /\d+\.\d+/.test(l))
      ?.trim()
      .slice(0, 60) as string
  } catch {
    throw new Error(`${cmd} is required (Debian package ${cmd}); it was not found`)
  }
}

const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : 'n/a')
const f3 = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : 'n/a')
const ratio = (a: number, b: number): string => (b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a')
const verdict = (ok: boolean): 'PASS' | 'FAIL' => (ok ? 'PASS' : 'FAIL')
const signedMs = (d: number): string => `${d >= 0 ? '+' : '−'}${f3(Math.abs(d))} ms`
/** The minimal Node HTTP/2 chain's name in the table (bench/node-h2-chain.ts). */
const MINIMAL_H2 = 'minimal Node HTTP/2 chain'

/**
 * The ratio of two throughput cells: the median over repetitions of each repetition's
 * ratio (both were measured within seconds of each other in that repetition), which
 * cancels the slow and fast phases of a shared machine better than a ratio of medians.
 */
export function pairedRatio(a: Cell, b: Cell): number {
  const n = Math.min(a.samples.length, b.samples.length)
  if (n === 0) return NaN
  return median(
    Array.from({ length: n }, (_, i) => (a.samples[i] as number) / (b.samples[i] as number)),
  )
}

/** Builds the table rows from what was measured. */
export function buildRows(r: BenchReport): Row[] {
  const rows: Row[] = []
  const row = (x: Partial<Row> & { figure: string }): void => {
    rows.push({ value: '', baseline: '', baseValue: '', ratio: '', target: '', result: '', ...x })
  }

  // Throughput.
  const cells = r.throughput ?? []
  const cell = (path: PathName, m: Mode): Cell | undefined =>
    cells.find(
      (c) => c.path === path && c.mode.parallel === m.parallel && c.mode.direction === m.direction,
    )
  for (const m of [UP1, DOWN1]) {
    const p = cell('pfgate', m)
    if (p === undefined) continue
    const figure = `throughput, ${modeLabel(m)} (Gbit/s)`
    const targets: Partial<Record<PathName, number>> = { tls3: 0.9, plain3: 0.6 }
    let first = true
    for (const path of ['tls3', 'plain3', 'plain2', 'direct'] as const) {
      const b = cell(path, m)
      if (b === undefined) continue
      const t = targets[path]
      const q = pairedRatio(p, b)
      row({
        figure: first ? figure : '',
        value: first ? f2(p.gbps) : '',
        baseline: PATH_NAMES[path],
        baseValue: f2(b.gbps),
        ratio: `${f2(q)}×`,
        target: t !== undefined ? `≥ ${t}×` : '',
        result: t !== undefined ? verdict(q >= t) : '',
      })
      first = false
    }
  }
  for (const [m8, m1] of [
    [UP8, UP1],
    [DOWN8, DOWN1],
  ] as const) {
    const p = cell('pfgate', m8)
    const one = cell('pfgate', m1)
    if (p === undefined || one === undefined) continue
    const q = pairedRatio(p, one)
    row({
      figure: `throughput, ${modeLabel(m8)}, one connection (Gbit/s)`,
      value: f2(p.gbps),
      baseline: `pfgate, ${modeLabel(m1)}`,
      baseValue: f2(one.gbps),
      ratio: `${f2(q)}×`,
      target: '≥ 1.0×',
      result: verdict(q >= 1),
    })
    for (const path of ['tls3', 'direct'] as const) {
      const b = cell(path, m8)
      if (b === undefined) continue
      row({
        figure: '',
        baseline: `${PATH_NAMES[path]}, ${modeLabel(m8)}`,
        baseValue: f2(b.gbps),
        ratio: `${f2(pairedRatio(p, b))}×`,
      })
    }
  }
  for (const m of [UP1, DOWN1]) {
    const p = cell('pfgate', m)
    const s = cell('tls3', m)
    if (p?.cpuPerGB === undefined) continue
    const socatMid = s?.cpuPerGB?.hop1
    for (const proc of ['cli', 'gateway', 'agent'] as const) {
      const v = p.cpuPerGB[proc] as number
      const isGw = proc === 'gateway'
      row({
        figure: `CPU s/GB, ${proc}, ${modeLabel(m)}`,
        value: f2(v),
        baseline: isGw && socatMid !== undefined ? 'socat TLS middle hop' : '',
        baseValue: isGw && socatMid !== undefined ? f2(socatMid) : '',
        ratio: isGw && socatMid !== undefined ? ratio(v, socatMid) : '',
      })
    }
  }

  // Stream opens.
  if (r.latency !== undefined) {
    const { pfgate, direct, socat3 } = r.latency
    for (const q of ['p50', 'p99'] as const) {
      const k = q === 'p50' ? 'p50Ms' : 'p99Ms'
      const limit = q === 'p50' ? 1 : 5
      const added = pfgate[k] - direct[k]
      row({
        figure: `stream open ${q}, ${pfgate.n} sequential (ms)`,
        value: f3(pfgate[k]),
        baseline: 'direct TCP',
        baseValue: f3(direct[k]),
        ratio: `+${f3(added)} ms`,
        target: `≤ +${limit} ms`,
        result: verdict(added <= limit),
      })
      row({
        figure: '',
        baseline: 'socat 3-hop TCP',
        baseValue: f3(socat3[k]),
        ratio: signedMs(pfgate[k] - socat3[k]),
      })
      if (r.latency.h2chain !== undefined) {
        row({
          figure: '',
          baseline: MINIMAL_H2,
          baseValue: f3(r.latency.h2chain[k]),
          ratio: signedMs(pfgate[k] - r.latency.h2chain[k]),
        })
      }
    }
  }
  if (r.latency !== undefined) {
    const { pfgate, direct, h2chain } = r.latency
    row({
      figure: `stream open p99.9, ${pfgate.n} sequential (ms)`,
      value: f3(pfgate.p999Ms),
      baseline: 'direct TCP',
      baseValue: f3(direct.p999Ms),
      ratio: `+${f3(pfgate.p999Ms - direct.p999Ms)} ms`,
    })
    if (h2chain !== undefined) {
      row({
        figure: '',
        baseline: MINIMAL_H2,
        baseValue: f3(h2chain.p999Ms),
        ratio: signedMs(pfgate.p999Ms - h2chain.p999Ms),
      })
    }
    const cpu = r.latency.cpuMsPerOpen
    if (cpu !== undefined) {
      row({
        figure: 'CPU ms per open, CLI / gateway / agent',
        value: cpu.pfgate.map(f2).join(' / '),
        baseline: `${MINIMAL_H2} (same hops)`,
        baseValue: cpu.h2chain.map(f2).join(' / '),
      })
    }
  }
  if (r.coldLatency !== undefined) {
    const { pfgate, direct, h2chain } = r.coldLatency
    for (const k of ['p50Ms', 'p99Ms'] as const) {
      row({
        figure: `stream open ${k.slice(0, 3)}, first ${pfgate.n} (cold) (ms)`,
        value: f3(pfgate[k]),
        baseline: 'direct TCP, first opens',
        baseValue: f3(direct[k]),
        ratio: `+${f3(pfgate[k] - direct[k])} ms`,
      })
      if (h2chain !== undefined) {
        row({
          figure: '',
          baseline: `${MINIMAL_H2}, first opens`,
          baseValue: f3(h2chain[k]),
          ratio: signedMs(pfgate[k] - h2chain[k]),
        })
      }
    }
  }
  if (r.duplex !== undefined) {
    const cells = r.duplex.cells
    const p = cells.find((c) => c.path === 'pfgate')
    const targets: Record<string, number> = { 'node TLS chain': 1.0, 'socat 3-hop TLS': 0.9 }
    let first = true
    for (const b of cells) {
      if (p === undefined || b === p) continue
      const n = Math.min(p.samples.length, b.samples.length)
      const q = median(
        Array.from({ length: n }, (_, i) => (p.samples[i] as number) / (b.samples[i] as number)),
      )
      const t = targets[b.path]
      row({
        figure: first ? `full-duplex echo, ${r.duplex.bytes / 1048576} MiB (MB/s)` : '',
        value: first ? f2(p.mbps) : '',
        baseline: b.path,
        baseValue: f2(b.mbps),
        ratio: `${f2(q)}×`,
        target: t !== undefined ? `≥ ${t}×` : '',
        result: t !== undefined ? verdict(q >= t) : '',
      })
      first = false
    }
    const mid = p?.cpuPerGB?.[1]
    for (const b of cells) {
      const bMid = b.cpuPerGB?.[1]
      if (p === undefined || mid === undefined || bMid === undefined) continue
      row({
        figure: b === p ? 'full-duplex: CPU s/GB relayed, middle hop (gateway)' : '',
        value: b === p ? f2(mid) : '',
        baseline: b === p ? 'CLI / gateway / agent' : `${b.path}, its middle hop`,
        baseValue: b === p ? (p.cpuPerGB ?? []).map(f2).join(' / ') : f2(bMid),
        ratio: b === p ? '' : ratio(mid, bMid),
      })
    }
  }
  if (r.chains !== undefined) chainRows(r.chains, row)
  if (r.parallel !== undefined) {
    const { pfgate, direct } = r.parallel
    row({
      figure: `${pfgate.n} opens at once: echoed`,
      value: `${pfgate.ok}/${pfgate.n} in ${pfgate.ms} ms`,
      baseline: 'direct TCP',
      baseValue: `${direct.ok}/${direct.n} in ${direct.ms} ms`,
      target: 'all',
      result: verdict(pfgate.ok === pfgate.n),
    })
  }
  if (r.streams !== undefined) {
    const s = r.streams
    row({
      figure: `${s.target} concurrent streams, one connection`,
      value: `${s.ok} echoed, ${s.errors} errors`,
      baseValue: `opened in ${s.openMs} ms`,
      target: 'all, 0 errors',
      result: verdict(s.ok === s.target && s.errors === 0),
    })
    row({
      figure: 'gateway RSS per idle stream (KiB)',
      value: f2(s.gatewayKiBPerStream),
      baseline: 'agent, per stream',
      baseValue: f2(s.agentKiBPerStream),
      target: '≤ 16 KiB',
      result: verdict(s.gatewayKiBPerStream <= 16),
    })
  }
  for (const a of r.audit ?? []) {
    const evaluated = a.concurrency > 1
    row({
      figure: `open rate, blocking-strict audit, ${a.concurrency} concurrent (/s)`,
      value: String(a.strictPerSec),
      baseline: 'batch audit, no fsync',
      baseValue: String(a.cheapPerSec),
      ratio: `cost ${a.costPct.toFixed(1)} %`,
      target: evaluated ? '≤ 10 %' : '',
      result: evaluated ? verdict(a.costPct <= 10 && a.errors === 0) : '',
    })
  }

  for (const [name, message] of Object.entries(r.errors ?? {})) {
    row({
      figure: `section ${name}`,
      value: `error: ${message ?? ''}`.slice(0, 80),
      result: 'FAIL',
    })
  }

  // kubectl.
  const k = r.kubectl
  if (k === 'not available') {
    row({ figure: 'kubectl paths (bench/kubectl.ts)', value: 'not available' })
  } else if (k !== undefined && 'error' in k) {
    row({ figure: 'kubectl paths (bench/kubectl.ts)', value: `error: ${k.error}`, result: 'FAIL' })
  } else if (k !== undefined) {
    for (const kr of k.rows) {
      const native = cell('pfgate', { parallel: 1, direction: kr.direction })
      row({
        figure: `${kr.path}, 1 stream ${kr.direction} (Gbit/s)`,
        value: f2(kr.gbps),
        baseline: 'pfgate native HTTP/2',
        baseValue: native !== undefined ? f2(native.gbps) : 'n/a',
        ratio: native !== undefined ? ratio(kr.gbps, native.gbps) : '',
        target: '≥ 0.7×',
        result: native !== undefined ? verdict(kr.gbps >= 0.7 * native.gbps) : '',
      })
    }
  }

  // The netns dialer (issue 5): ratios to the static dialer, and to nsenter+socat per connection.
  const n = r.netns
  if (n !== undefined) {
    const t = n.throughputMiBps
    row({
      figure: 'netns dialer, 1 connection (MiB/s each way)',
      value: f2(t.netns),
      baseline: 'static dialer (host port)',
      baseValue: f2(t.static),
      ratio: ratio(t.netns, t.static),
    })
    row({
      figure: '',
      baseline: 'nsenter + socat per connection',
      baseValue: f2(t.socat),
      ratio: ratio(t.netns, t.socat),
    })
    row({
      figure: 'netns dialer, dial to first echo p50 (ms)',
      value: f3(n.dial.netns.p50Ms),
      baseline: 'static dialer (host port)',
      baseValue: f3(n.dial.static.p50Ms),
      ratio: ratio(n.dial.netns.p50Ms, n.dial.static.p50Ms),
    })
    row({
      figure: '',
      baseline: 'nsenter + socat per connection',
      baseValue: f3(n.dial.socat.p50Ms),
      ratio: ratio(n.dial.netns.p50Ms, n.dial.socat.p50Ms),
    })
    // The runtime-resolved path (issue 9): the pod found by UID in containerd over CRI.
    if ('error' in n.runtime) {
      row({ figure: 'runtime (CRI) dialer', value: `error: ${n.runtime.error}`, result: 'FAIL' })
    } else {
      row({
        figure: 'runtime (CRI) dialer, first dial to first echo (ms)',
        value: f3(n.runtime.coldMs),
        baseline: 'static dialer p50',
        baseValue: f3(n.dial.static.p50Ms),
        ratio: ratio(n.runtime.coldMs, n.dial.static.p50Ms),
      })
      row({
        figure: 'runtime (CRI) dialer, cached dial to first echo p50 (ms)',
        value: f3(n.runtime.dial.p50Ms),
        baseline: 'static dialer (host port)',
        baseValue: f3(n.dial.static.p50Ms),
        ratio: ratio(n.runtime.dial.p50Ms, n.dial.static.p50Ms),
      })
      row({
        figure: '',
        baseline: 'netns dialer, namespace from config',
        baseValue: f3(n.dial.netns.p50Ms),
        ratio: ratio(n.runtime.dial.p50Ms, n.dial.netns.p50Ms),
      })
    }
  } else if (r.errors?.netns !== undefined) {
    row({
      figure: 'netns dialer (bench/netns-dialer.ts)',
      value: `error: ${r.errors.netns}`,
      result: 'FAIL',
    })
  }
  if (r.abuse !== undefined) abuseRows(r.abuse, row)
  // Reverse agents behind HAProxy with replicas, against the direct topology.
  const rp = r.replicas
  if (rp !== undefined) {
    const q50 = rp.opens.reverse.p50 / rp.opens.direct.p50
    row({
      figure: 'replicas: stream open p50 via HAProxy + reverse agent (ms)',
      value: f2(rp.opens.reverse.p50),
      baseline: 'one gateway, dialed agent',
      baseValue: f2(rp.opens.direct.p50),
      ratio: `${f2(q50)}×`,
      target: '≤ 2×',
      result: verdict(q50 <= 2),
    })
    row({
      figure: 'replicas: stream open p99 (ms)',
      value: f2(rp.opens.reverse.p99),
      baseline: 'one gateway, dialed agent',
      baseValue: f2(rp.opens.direct.p99),
      ratio: `${f2(rp.opens.reverse.p99 / rp.opens.direct.p99)}×`,
    })
    for (const [label, t] of [
      ['1 stream', rp.throughput1],
      ['8 streams', rp.throughput8],
    ] as const) {
      const q = t.reverse / t.direct
      row({
        figure: `replicas: echo throughput, ${label} (MB/s)`,
        value: f2(t.reverse),
        baseline: 'one gateway, dialed agent',
        baseValue: f2(t.direct),
        ratio: `${f2(q)}×`,
        target: '≥ 0.5×',
        result: verdict(q >= 0.5),
      })
    }
    row({
      figure: `replicas: replica RSS per idle reverse agent session (KiB, ${rp.agentSessionKiB.n})`,
      value: f2(rp.agentSessionKiB.perSession),
    })
    row({
      figure: `replicas: replica RSS per open idle stream (KiB, ${rp.streamKiB.n})`,
      value: f2(rp.streamKiB.perStream),
    })
  }
  if (r.udp !== undefined) udpRows(r.udp, row)
  return rows
}

/** The UDP section's rows (bench/udp.ts): pfgate against the direct path and socat. */
function udpRows(u: UdpBenchResult, row: (x: Partial<Row> & { figure: string }) => void): void {
  for (const [figure, pick] of [
    ['UDP round trip p50 (µs), 64 B', (p: UdpBenchResult['pfgate']) => p.p50Us],
    ['UDP round trip p99 (µs), 64 B', (p: UdpBenchResult['pfgate']) => p.p99Us],
    ['UDP datagrams/s, 32 in flight', (p: UdpBenchResult['pfgate']) => p.perSecond],
  ] as const) {
    row({
      figure,
      value: String(pick(u.pfgate)),
      baseline: 'direct',
      baseValue: String(pick(u.direct)),
      ratio: ratio(pick(u.pfgate), pick(u.direct)),
    })
    row({
      figure: '',
      baseline: 'socat 3-hop UDP',
      baseValue: String(pick(u.socat3)),
      ratio: ratio(pick(u.pfgate), pick(u.socat3)),
    })
  }
  row({
    figure: 'UDP datagrams lost at 32 in flight (pfgate / direct / socat)',
    value: `${u.pfgate.lost} of ${u.pfgate.sent}`,
    baseValue: `${u.direct.lost} / ${u.socat3.lost}`,
  })
}

/** The abuse section's rows (bench/abuse.ts): each figure against its bound. */
function abuseRows(a: AbuseResult, row: (x: Partial<Row> & { figure: string }) => void): void {
  const u = a.unauthenticated
  row({
    figure: `unauthenticated never-ending streams, 1 source (${u.attemptedConnections} conn × ${u.attemptedStreams / u.attemptedConnections})`,
    value: `${u.acceptedStreams} taken`,
    baseline: 'connectionsPerSource × unauthenticatedStreams',
    baseValue: String(u.bound),
    ratio: `${u.refusedConnections} conn refused`,
    target: '≤ bound',
    result: verdict(u.acceptedStreams <= u.bound),
  })
  row({
    figure: '  gateway RSS growth (MB)',
    value: String(u.rssGrowthMB),
    baseline: 'per stream taken (KiB)',
    baseValue: u.acceptedStreams > 0 ? f2((u.rssGrowthMB * 1024) / u.acceptedStreams) : 'n/a',
  })
  const s = a.stalled
  row({
    figure: `stalled readers (${s.streams} × ${s.mibEach} MiB sent, never read): relay buffers (MiB)`,
    value: String(s.relayBufferedMiB),
    baseline: 'limits.bufferBudget (MiB)',
    baseValue: String(s.budgetMiB),
    ratio: `${s.resetByBudget} reset`,
    target: '≤ budget',
    result: verdict(s.relayBufferedMiB <= s.budgetMiB),
  })
  row({
    figure: '  gateway RSS growth (MB)',
    value: String(s.rssGrowthMB),
    baseline: 'per stalled stream (MB)',
    baseValue: f2(s.rssGrowthMB / s.streams),
  })
  const sh = a.shutdown
  row({
    figure: 'SIGTERM to exit, clients never read (s)',
    value: `${sh.exitS}${sh.signal !== null ? ` (${sh.signal})` : ''}`,
    baseline: 'shutdownGrace (s)',
    baseValue: String(sh.graceS),
    target: `≤ ${sh.graceS + 1} s`,
    result: verdict(sh.exitS <= sh.graceS + 1 && sh.signal === null && sh.exitCode === 0),
  })
  const f = a.auditFlood
  row({
    figure: `audit: earlier stream records after a ${f.seconds} s denial flood`,
    value: `${f.earlierFound}/${f.earlierRecords} found`,
    baseline: `${f.denialsSent} denials, main trail (MiB, files)`,
    baseValue: `${f.trailMiB}, ${f.trailFiles}`,
    target: 'all',
    result: verdict(f.earlierFound === f.earlierRecords),
  })
}

/** Formats rows as an aligned text table. */
export function formatTable(rows: readonly Row[]): string {
  const cols = ['figure', 'value', 'baseline', 'baseValue', 'ratio', 'target', 'result'] as const
  const head: Record<(typeof cols)[number], string> = {
    figure: 'figure',
    value: 'pfgate',
    baseline: 'baseline (same run)',
    baseValue: 'baseline',
    ratio: 'ratio',
    target: 'target',
    result: 'result',
  }
  const all: Record<(typeof cols)[number], string>[] = [head, ...rows]
  const widths = cols.map((c) => Math.max(...all.map((r) => r[c].length)))
  const line = (r: Record<(typeof cols)[number], string>): string =>
    cols
      .map((c, i) => {
        const w = widths[i] as number
        return c === 'figure' || c === 'baseline' ? r[c].padEnd(w) : r[c].padStart(w)
      })
      .join('  ')
      .trimEnd()
  const sep = widths.map((w) => '-'.repeat(w)).join('  ')
  return [line(head), sep, ...rows.map(line)].join('\n')
}

async function loadKubectlSection(): Promise<BenchKubectl | undefined> {
  const url = new URL('./kubectl.js', import.meta.url)
  if (!existsSync(url)) return undefined
  const mod = (await import(url.href)) as Record<string, unknown>
  const fn = mod.benchKubectl ?? mod.runKubectlBench ?? mod.default
  if (typeof fn !== 'function') {
    throw new Error('bench/kubectl.ts has no benchKubectl export (see bench/kubectl-contract.ts)')
  }
  return fn as BenchKubectl
}

/** Runs the benchmark; returns the report. */
export async function runBench(options: {
  quick: boolean
  only?: readonly Section[]
  nodeArgs?: string[]
  verbose?: boolean
}): Promise<BenchReport> {
  const t0 = performance.now()
  const { quick } = options
  const want = (s: Section): boolean => options.only === undefined || options.only.includes(s)
  const fileLimit = raiseFileLimit()
  const report: BenchReport = {
    quick,
    environment: {
      node: process.version,
      cpus: cpus().length,
      cpu: cpus()[0]?.model ?? 'unknown',
      kernel: execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim(),
      iperf3: toolVersion('iperf3', ['--version']),
      socat: toolVersion('socat', ['-V']),
      openFileLimit: fileLimit,
      h2: `stream window ${STREAM_WINDOW / 1024} KiB, connection window ${CONNECTION_WINDOW / 1048576} MiB, max frame ${MAX_FRAME_SIZE / 1024} KiB, stream HWM ${STREAM_HIGH_WATER_MARK / 1024} KiB`,
      relayNodeFlags: relayNodeFlags().join(' ') || '(none)',
      componentNodeArgs: (options.nodeArgs ?? []).join(' ') || '(none)',
    },
    rows: [],
    seconds: 0,
  }
  // Only the sections that measure the shared system need it.
  let sys: BenchSystem | undefined
  if (SYSTEM_SECTIONS.some(want)) {
    log(`pfgate bench${quick ? ' --quick' : ''}: starting the system under test`)
    sys = await startSystem({
      ...(options.nodeArgs !== undefined ? { nodeArgs: options.nodeArgs } : {}),
      verbose: options.verbose === true,
    })
  }
  let mark = t0
  const lap = (what: string): void => {
    const now = performance.now()
    log(`${what}: done in ${((now - mark) / 1000).toFixed(1)} s`)
    mark = now
  }
  lap('start-up')
  /** Runs one section; a failure is reported in the table (FAIL) and the run goes on. */
  const section = async (name: Section, fn: (sys: BenchSystem) => Promise<void>): Promise<void> => {
    if (!want(name)) return
    try {
      await fn(sys as BenchSystem)
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err)
      log(`${name}: failed: ${message}`)
      report.errors = { ...report.errors, [name]: message }
    }
    lap(name)
  }
  try {
    await section('streams', async (sys) => {
      const n = 10_000
      log(`streams: ${n} concurrent streams on one connection`)
      report.streams = await manyStreams(
        sys.gateway.url,
        sys.dir,
        sys.token,
        sys.pids(),
        n,
        256,
        quick ? 1500 : 3000,
      )
    })
    await section('latency', async (sys) => {
      const n = quick ? 300 : 1000
      log(
        `latency: ${n} sequential opens through pfgate, direct, socat 3-hop, the minimal HTTP/2 chain`,
      )
      const socat3 = await startSocatChain('plain3', sys.pod.echoPort, sys.dir)
      let h2chain: NodeChain | undefined
      try {
        h2chain = await startNodeH2Chain('h2', sys.pod.echoPort, sys.dir, {
          ...(options.nodeArgs !== undefined ? { nodeArgs: options.nodeArgs } : {}),
        })
        // The forward and the chain have carried nothing yet: their first opens are cold.
        const [coldPfgate, coldDirect, coldChain] = await coldOpens(
          [sys.cli.echoPort, sys.pod.echoPort, h2chain.port],
          100,
        )
        report.coldLatency = {
          pfgate: coldPfgate as OpenLatency,
          direct: coldDirect as OpenLatency,
          h2chain: coldChain as OpenLatency,
        }
        const pids = sys.pids()
        const pfgateCpu = (): number[] =>
          [pids.cli, pids.gateway, pids.agent].map((p) => cpuSeconds(p))
        const cpu0 = [pfgateCpu(), h2chain.cpuSeconds()]
        const warmup = 50
        const [direct, pfgate, socat, chain] = await interleavedOpens(
          [sys.pod.echoPort, sys.cli.echoPort, socat3.port, h2chain.port],
          [n, n, quick ? 100 : 300, n],
          10,
          warmup,
        )
        const perOpen = (before: number[], after: number[]): number[] =>
          after.map((x, i) => ((x - (before[i] as number)) * 1000) / (n + warmup))
        report.latency = {
          direct: direct as OpenLatency,
          pfgate: pfgate as OpenLatency,
          socat3: socat as OpenLatency,
          h2chain: chain as OpenLatency,
          cpuMsPerOpen: {
            pfgate: perOpen(cpu0[0] as number[], pfgateCpu()),
            h2chain: perOpen(cpu0[1] as number[], h2chain.cpuSeconds()),
          },
        }
      } finally {
        await socat3.stop()
        await h2chain?.stop()
      }
      log('latency: 1000 opens at once')
      report.parallel = {
        direct: await parallelOpens(sys.pod.echoPort, 1000),
        pfgate: await parallelOpens(sys.cli.echoPort, 1000),
      }
    })
    await section('audit', async (sys) => {
      report.audit = []
      for (const c of quick ? [32] : [1, 32]) {
        log(`audit: open rate at concurrency ${c}, blocking-strict vs batch`)
        report.audit.push(
          await measureAuditCost(sys, c, quick ? 5 : 9, quick ? 400 : 600, quick ? 1500 : 3000),
        )
      }
    })
    await section('throughput', async (sys) => {
      const all: Mode[] = [UP1, DOWN1, UP8, DOWN8]
      const ones: Mode[] = [UP1, DOWN1]
      const plan: { path: PathName; modes: Mode[] }[] = quick
        ? [
            { path: 'pfgate', modes: all },
            { path: 'tls3', modes: ones },
            { path: 'plain3', modes: ones },
            { path: 'direct', modes: ones },
          ]
        : [
            { path: 'pfgate', modes: all },
            { path: 'tls3', modes: all },
            { path: 'plain3', modes: ones },
            { path: 'plain2', modes: ones },
            { path: 'direct', modes: all },
          ]
      log('throughput: iperf3 through pfgate and the baselines')
      report.throughput = await measureThroughput(sys, {
        seconds: quick ? 1 : 3,
        reps: quick ? 1 : 3,
        plan,
        log,
      })
    })
    await section('duplex', async (sys) => {
      const bytes = (quick ? 16 : 64) * 1048576
      log(`duplex: ${bytes / 1048576} MiB full-duplex echo through pfgate and the baselines`)
      const chains = [
        {
          path: 'socat 3-hop TCP',
          chain: await startSocatChain('plain3', sys.pod.echoPort, sys.dir),
        },
        {
          path: 'socat 3-hop TLS',
          chain: await startSocatChain('tls3', sys.pod.echoPort, sys.dir),
        },
        { path: 'node TLS chain', chain: await startNodeChain(sys.pod.echoPort, sys.dir) },
        {
          path: MINIMAL_H2,
          chain: await startNodeH2Chain('h2', sys.pod.echoPort, sys.dir, {
            ...(options.nodeArgs !== undefined ? { nodeArgs: options.nodeArgs } : {}),
          }),
        },
      ]
      const pids = sys.pids()
      try {
        const cells = await measureDuplex(
          [
            {
              path: 'pfgate',
              port: sys.cli.echoPort,
              cpu: () => [pids.cli, pids.gateway, pids.agent].map((p) => cpuSeconds(p)),
            },
            ...chains.map((c) => ({
              path: c.path,
              port: c.chain.port,
              // socat's work is in a child per connection, reaped some time after it ends.
              ...(c.path.startsWith('socat') ? {} : { cpu: () => c.chain.cpuSeconds() }),
            })),
            { path: 'direct', port: sys.pod.echoPort },
          ],
          bytes,
          quick ? 2 : 6,
          log,
        )
        report.duplex = { bytes, cells }
      } finally {
        await Promise.all(chains.map((c) => c.chain.stop()))
      }
    })
    await section('chains', async (sys) => {
      log('chains: the gateway→agent leg as an mTLS pool vs a shared HTTP/2 session')
      report.chains = await benchChains(sys, { quick, log })
    })
    await section('kubectl', async (sys) => {
      const fn = await loadKubectlSection().catch((err: unknown) => {
        report.kubectl = { error: (err as Error).message }
        return undefined
      })
      if (fn === undefined) {
        report.kubectl ??= 'not available'
        return
      }
      log('kubectl: bench/kubectl.ts')
      try {
        report.kubectl = await fn({
          quick,
          dir: sys.dir,
          kubeconfig: sys.kubeconfig,
          gatewayUrl: sys.gateway.url,
          token: sys.token,
          pod: { ...BENCH_POD },
          iperf: { seconds: quick ? 1 : 3, reps: quick ? 1 : 3, run: runIperf },
          log,
        })
      } catch (err) {
        report.kubectl = { error: (err as Error).message }
      }
    })
    await section('abuse', async () => {
      report.abuse = await benchAbuse({ quick, log })
    })
    await section('replicas', async () => {
      log('replicas: reverse agents behind HAProxy (2 replicas) vs direct')
      report.replicas = await benchReplicas({ quick, log })
    })
    await section('udp', async () => {
      report.udp = await benchUdp({ quick, log })
    })
    await section('netns', async () => {
      // Its own namespaces and echo servers, not the system under test (needs root, ip, socat).
      log('netns: the agent dialer in a network namespace vs the static dialer')
      report.netns = await benchNetnsDialer(
        quick ? { dials: 100, socatDials: 20, throughputMiB: 16, runs: 1 } : {},
      )
    })
  } finally {
    await sys?.stop()
  }
  report.rows = buildRows(report)
  report.seconds = Math.round((performance.now() - t0) / 1000)
  return report
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      quick: { type: 'boolean' },
      json: { type: 'string' },
      only: { type: 'string' },
      'node-arg': { type: 'string', multiple: true },
      verbose: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help === true) {
    process.stdout.write(
      `usage: npm run bench -- [--quick] [--json FILE] [--only ${SECTIONS.join(',')}] [--node-arg=FLAG ...] [--verbose]\n`,
    )
    return 0
  }
  let only: Section[] | undefined
  if (values.only !== undefined) {
    only = values.only.split(',').map((s) => s.trim()) as Section[]
    const bad = only.filter((s) => !SECTIONS.includes(s))
    if (bad.length > 0) throw new Error(`unknown section(s) ${bad.join(', ')}`)
  }
  const report = await runBench({
    quick: values.quick === true,
    ...(only !== undefined ? { only } : {}),
    ...(values['node-arg'] !== undefined ? { nodeArgs: values['node-arg'] } : {}),
    verbose: values.verbose === true,
  })
  const env = Object.entries(report.environment)
    .map(([k, v]) => `${k}: ${v}`)
    .join('\n')
  process.stdout.write(`\n${env}\n\n${formatTable(report.rows)}\n\n`)
  const failed = report.rows.filter((r) => r.result === 'FAIL').length
  const passed = report.rows.filter((r) => r.result === 'PASS').length
  process.stdout.write(`${passed} passed, ${failed} failed; ${report.seconds} s\n`)
  if (values.json !== undefined) writeFileSync(values.json, JSON.stringify(report, null, 2) + '\n')
  return 0
}

process.on('exit', () => killAllTracked())
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    killAllTracked()
    process.exit(130)
  })
}
main().then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    process.stderr.write(
      `bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    )
    killAllTracked()
    process.exitCode = 1
  },
)
