/**
 * Forwarded throughput: iperf3 through pfgate (the CLI's forwarded port) next to the
 * same iperf3 run directly and through socat chains, all in one run, interleaved
 * (every repetition runs every path once) so slow phases of a shared machine hit
 * every path alike; each figure is the median of its repetitions. For pfgate and the
 * TLS socat chain it also records the CPU seconds each relaying process spent per GB.
 *
 * @module
 */
import { runIperf } from './iperf.js'
import { SOCAT_CHAIN_NAMES, startSocatChain } from './socat.js'
import type { SocatChain, SocatChainKind } from './socat.js'
import type { BenchSystem } from './system.js'
import { cpuDelta, cpuSnapshot, median, sleep } from './util.js'

/** A traffic pattern. */
export interface Mode {
  parallel: 1 | 8
  direction: 'up' | 'down'
}

/** The paths measured. */
export type PathName = 'pfgate' | 'direct' | SocatChainKind

/** Human names. */
export const PATH_NAMES: Record<PathName, string> = {
  pfgate: 'pfgate (native HTTP/2, TLS)',
  direct: 'direct TCP',
  ...SOCAT_CHAIN_NAMES,
}

/** One measured cell: a path in a mode. */
export interface Cell {
  path: PathName
  mode: Mode
  /** Median Gbit/s and every sample. */
  gbps: number
  samples: number[]
  /** Median CPU seconds per GB received, per process (pfgate: cli/gateway/agent; socat: hop0..2). */
  cpuPerGB?: Record<string, number>
}

/** Options for {@link measureThroughput}. */
export interface ThroughputOptions {
  seconds: number
  reps: number
  /** Which paths to run in which modes. */
  plan: { path: PathName; modes: Mode[] }[]
  log: (line: string) => void
}

/** Short label of a mode, e.g. `1 stream up`. */
export function modeLabel(m: Mode): string {
  return `${m.parallel} stream${m.parallel > 1 ? 's' : ''} ${m.direction}`
}

const key = (path: PathName, m: Mode): string => `${path}|${m.parallel}|${m.direction}`

/** Runs the plan; returns one cell per (path, mode). */
export async function measureThroughput(
  sys: BenchSystem,
  options: ThroughputOptions,
): Promise<Cell[]> {
  const chains = new Map<SocatChainKind, SocatChain>()
  const samples = new Map<string, number[]>()
  const cpu = new Map<string, Record<string, number>[]>()
  try {
    for (const { path } of options.plan) {
      if (path !== 'pfgate' && path !== 'direct' && !chains.has(path)) {
        chains.set(path, await startSocatChain(path, sys.pod.iperfPort, sys.dir))
      }
    }
    const portOf = (path: PathName): number =>
      path === 'pfgate'
        ? sys.cli.iperfPort
        : path === 'direct'
          ? sys.pod.iperfPort
          : (chains.get(path) as SocatChain).port
    // Warm-up: JIT and TCP/TLS session set-up of every relay, not measured.
    for (const { path } of options.plan) {
      await runIperf({ port: portOf(path), seconds: 1, parallel: 1, direction: 'up' })
    }
    for (let rep = 0; rep < options.reps; rep++) {
      for (const { path, modes } of options.plan) {
        for (const mode of modes) {
          const chain = path === 'pfgate' || path === 'direct' ? undefined : chains.get(path)
          const pids = sys.pids()
          const c0 = path === 'pfgate' ? cpuSnapshot(pids) : undefined
          const h0 = chain?.cpuSeconds()
          const r = await runIperf({ port: portOf(path), seconds: options.seconds, ...mode })
          let perGB: Record<string, number> | undefined
          const gb = r.bytes / 1e9
          if (c0 !== undefined) {
            const d = cpuDelta(c0, cpuSnapshot(pids))
            perGB = Object.fromEntries(Object.entries(d).map(([k, v]) => [k, v / gb]))
          } else if (chain !== undefined && h0 !== undefined && chain.kind === 'tls3') {
            // The per-connection children are reaped (and counted) once they exit.
            await sleep(200)
            const h1 = chain.cpuSeconds()
            perGB = Object.fromEntries(
              h1.map((v, i) => [`hop${i}`, (v - (h0[i] as number)) / gb] as const),
            )
          }
          const k = key(path, mode)
          samples.set(k, [...(samples.get(k) ?? []), r.gbps])
          if (perGB !== undefined) cpu.set(k, [...(cpu.get(k) ?? []), perGB])
          options.log(
            `  rep ${rep + 1}/${options.reps} ${PATH_NAMES[path]}, ${modeLabel(mode)}: ${r.gbps.toFixed(2)} Gbit/s`,
          )
        }
      }
    }
  } finally {
    for (const c of chains.values()) await c.stop()
  }
  const cells: Cell[] = []
  for (const { path, modes } of options.plan) {
    for (const mode of modes) {
      const k = key(path, mode)
      const s = samples.get(k) ?? []
      const cell: Cell = { path, mode, gbps: median(s), samples: s }
      const c = cpu.get(k)
      if (c !== undefined && c.length > 0) {
        cell.cpuPerGB = Object.fromEntries(
          Object.keys(c[0] as Record<string, number>).map((name) => [
            name,
            median(c.map((x) => x[name] as number)),
          ]),
        )
      }
      cells.push(cell)
    }
  }
  return cells
}
