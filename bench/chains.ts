/**
 * The `chains` section: the gateway→agent leg as a pool of pre-established mutual-TLS
 * connections, one per stream, against today's shared HTTP/2 session — both in the
 * minimal Node HTTP/2 chain (bench/node-h2-chain.ts, none of pfgate's code), measured in
 * the same run on the same echo server:
 *
 * - the first 100 opens of each freshly started chain (cold), then sequential opens
 *   interleaved in blocks (bench/opens.ts), with each hop's CPU milliseconds per open;
 * - full-duplex echo (bench/duplex.ts) with each hop's CPU seconds per GB, pfgate's
 *   in the same repetitions for comparison.
 *
 * Variants: `h2` (the shared session, as pfgate), `pool` (refilled with a full mTLS
 * handshake per stream taken), `pool-resume` (refilled with resumed TLS sessions),
 * `pool-prefilled` (filled before the measurement with more sockets than it serves: no
 * handshake on any measured open, so its opens are the pool's critical path alone).
 *
 * @module
 */
import { measureDuplex } from './duplex.js'
import type { DuplexCell } from './duplex.js'
import type { NodeChain } from './node-chain.js'
import { startNodeH2Chain } from './node-h2-chain.js'
import type { H2ChainVariant } from './node-h2-chain.js'
import { coldOpens, interleavedOpens } from './opens.js'
import type { OpenLatency } from './opens.js'
import type { BenchSystem } from './system.js'
import { cpuSeconds } from './util.js'

/** What the section measured. */
export interface ChainsResult {
  /** Sequential opens per variant (and `direct`), interleaved. */
  opens: Record<string, OpenLatency>
  /** The first 100 opens of each freshly started variant. */
  cold: Record<string, OpenLatency>
  /** CPU ms per open of each hop (forwarder, gateway, agent), over the interleaved opens. */
  cpuMsPerOpen: Record<string, number[]>
  /** Full-duplex echo: the variants and pfgate (`cpuPerGB`: each hop, client side first). */
  duplex: { bytes: number; cells: DuplexCell[] }
}

const VARIANTS: readonly H2ChainVariant[] = ['h2', 'pool', 'pool-resume', 'pool-prefilled']
/** The names in the table. */
export const CHAIN_LABEL: Record<H2ChainVariant, string> = {
  h2: 'minimal chain, shared HTTP/2 session',
  pool: 'minimal chain, mTLS pool',
  'pool-resume': 'minimal chain, mTLS pool, resumed',
  'pool-prefilled': 'minimal chain, mTLS pool, prefilled',
}

/** Runs the section against the system's echo server. */
export async function benchChains(
  sys: BenchSystem,
  options: { quick: boolean; log: (line: string) => void },
): Promise<ChainsResult> {
  const { quick, log } = options
  const n = quick ? 300 : 1000
  const warmup = 50
  const reps = quick ? 2 : 6
  const bytes = (quick ? 16 : 64) * 1048576
  // The prefilled pool serves every open of the section without a handshake.
  const prefill = 100 + warmup + n + reps + 1 + 50
  const chains: { variant: H2ChainVariant; chain: NodeChain }[] = []
  try {
    for (const variant of VARIANTS) {
      log(`chains: starting the ${variant} chain`)
      chains.push({
        variant,
        chain: await startNodeH2Chain(variant, sys.pod.echoPort, sys.dir, {
          poolSize: variant === 'pool-prefilled' ? prefill : 8,
        }),
      })
    }
    log(`chains: first 100 opens of each, then ${n} sequential opens each, interleaved`)
    const cold = await coldOpens(
      chains.map((c) => c.chain.port),
      100,
    )
    const cpu0 = chains.map((c) => c.chain.cpuSeconds())
    const warm = await interleavedOpens(
      [sys.pod.echoPort, ...chains.map((c) => c.chain.port)],
      [n, ...chains.map(() => n)],
      10,
      warmup,
    )
    const cpuMsPerOpen: Record<string, number[]> = {}
    for (const [i, c] of chains.entries()) {
      const before = cpu0[i] as number[]
      cpuMsPerOpen[c.variant] = c.chain
        .cpuSeconds()
        .map((x, j) => ((x - (before[j] as number)) * 1000) / (n + warmup))
    }
    const opens: Record<string, OpenLatency> = { direct: warm[0] as OpenLatency }
    const coldBy: Record<string, OpenLatency> = {}
    for (const [i, c] of chains.entries()) {
      opens[c.variant] = warm[i + 1] as OpenLatency
      coldBy[c.variant] = cold[i] as OpenLatency
    }
    log(`chains: ${bytes / 1048576} MiB full-duplex echo, ${reps} repetitions`)
    const pids = sys.pids()
    const duplex = await measureDuplex(
      [
        {
          path: 'pfgate',
          port: sys.cli.echoPort,
          cpu: () => [pids.cli, pids.gateway, pids.agent].map((p) => cpuSeconds(p)),
        },
        ...chains
          .filter((c) => c.variant !== 'pool-prefilled')
          .map((c) => ({ path: c.variant, port: c.chain.port, cpu: () => c.chain.cpuSeconds() })),
      ],
      bytes,
      reps,
      log,
    )
    return { opens, cold: coldBy, cpuMsPerOpen, duplex: { bytes, cells: duplex } }
  } finally {
    await Promise.all(chains.map((c) => c.chain.stop()))
  }
}

/** A table row as bench/main.ts builds them. */
interface RowParts {
  figure: string
  value?: string
  baseline?: string
  baseValue?: string
  ratio?: string
}

const f2 = (x: number | undefined): string =>
  x !== undefined && Number.isFinite(x) ? x.toFixed(2) : 'n/a'
const f3 = (x: number | undefined): string =>
  x !== undefined && Number.isFinite(x) ? x.toFixed(3) : 'n/a'
const signedMs = (d: number): string => `${d >= 0 ? '+' : '−'}${f3(Math.abs(d))} ms`

/** The median of the per-repetition ratios of two duplex cells. */
export function pairedDuplexRatio(a: DuplexCell, b: DuplexCell): number {
  const n = Math.min(a.samples.length, b.samples.length)
  const qs = Array.from(
    { length: n },
    (_, i) => (a.samples[i] as number) / (b.samples[i] as number),
  ).sort((x, y) => x - y)
  if (n === 0) return NaN
  return n % 2 === 1
    ? (qs[n >> 1] as number)
    : ((qs[(n >> 1) - 1] as number) + (qs[n >> 1] as number)) / 2
}

/** The section's rows: every pool variant against the shared HTTP/2 session. */
export function chainRows(c: ChainsResult, row: (x: RowParts) => void): void {
  const h2 = c.opens.h2
  const direct = c.opens.direct
  if (h2 === undefined || direct === undefined) return
  for (const [q, k] of [
    ['p50', 'p50Ms'],
    ['p99', 'p99Ms'],
    ['p99.9', 'p999Ms'],
  ] as const) {
    row({
      figure: `chains: open ${q}, ${h2.n} sequential (ms): ${CHAIN_LABEL.h2}`,
      value: f3(h2[k]),
      baseline: 'direct TCP',
      baseValue: f3(direct[k]),
      ratio: signedMs(h2[k] - direct[k]),
    })
    for (const v of VARIANTS) {
      const o = c.opens[v]
      if (v === 'h2' || o === undefined) continue
      row({
        figure: `  ${CHAIN_LABEL[v]}`,
        value: f3(o[k]),
        baseline: CHAIN_LABEL.h2,
        baseValue: f3(h2[k]),
        ratio: signedMs(o[k] - h2[k]),
      })
    }
  }
  for (const k of ['p50Ms', 'p99Ms'] as const) {
    const base = c.cold.h2
    if (base === undefined) continue
    for (const v of VARIANTS) {
      const o = c.cold[v]
      if (v === 'h2' || o === undefined) continue
      row({
        figure: `chains: open ${k.slice(0, 3)}, first ${o.n} (cold) (ms): ${CHAIN_LABEL[v]}`,
        value: f3(o[k]),
        baseline: CHAIN_LABEL.h2,
        baseValue: f3(base[k]),
        ratio: signedMs(o[k] - base[k]),
      })
    }
  }
  const h2Cpu = c.cpuMsPerOpen.h2
  for (const v of VARIANTS) {
    const cpu = c.cpuMsPerOpen[v]
    if (v === 'h2' || cpu === undefined || h2Cpu === undefined) continue
    row({
      figure: `chains: CPU ms per open, gateway / agent: ${CHAIN_LABEL[v]}`,
      value: `${f2(cpu[1])} / ${f2(cpu[2])}`,
      baseline: CHAIN_LABEL.h2,
      baseValue: `${f2(h2Cpu[1])} / ${f2(h2Cpu[2])}`,
    })
  }
  const cells = c.duplex.cells
  const base = cells.find((x) => x.path === 'h2')
  if (base === undefined) return
  for (const cell of cells) {
    if (cell === base) continue
    const label = cell.path === 'pfgate' ? 'pfgate' : CHAIN_LABEL[cell.path as H2ChainVariant]
    row({
      figure: `chains: full-duplex echo, ${c.duplex.bytes / 1048576} MiB (MB/s): ${label}`,
      value: f2(cell.mbps),
      baseline: CHAIN_LABEL.h2,
      baseValue: f2(base.mbps),
      ratio: `${f2(pairedDuplexRatio(cell, base))}×`,
    })
    const mid = cell.cpuPerGB?.[1]
    const baseMid = base.cpuPerGB?.[1]
    if (mid !== undefined && baseMid !== undefined) {
      row({
        figure: '  CPU s/GB relayed, gateway (middle hop)',
        value: f2(mid),
        baseline: "the shared-session chain's gateway",
        baseValue: f2(baseMid),
        ratio: `${f2(mid / baseMid)}×`,
      })
    }
  }
}
