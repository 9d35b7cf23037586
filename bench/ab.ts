/**
 * A/B comparison of tuning variants, for docs/performance.md: one system under test
 * per variant, all started at once (idle systems cost nothing), then the same
 * measurements on each, interleaved round by round so the slow and fast phases of a
 * shared machine hit every variant alike. Reports medians and each variant relative
 * to the first.
 *
 * A variant is `name|node flags|bin`: flags for the gateway, agent and CLI processes
 * (space separated), and optionally another build's `bin/pfgate.js` (e.g. a copy of
 * dist/ with one setting changed).
 *
 *   node dist/bench/ab.js --reps 7 --seconds 2 'base' 'stgc|--single-threaded-gc'
 *   node dist/bench/ab.js --opens 300 'base' 'hwm1m||/tmp/var-hwm1m/bin/pfgate.js'
 *   node dist/bench/ab.js --modes '' --duplex 64 'base' 'frame16k||/tmp/var-f16k/bin/pfgate.js'
 *
 * `--duplex MiB`: a full-duplex echo of that many MiB per round (bench/duplex.ts) through
 * the CLI's echo port, with CPU seconds per GB relayed (both directions) per process.
 *
 * @module
 */
import { parseArgs } from 'node:util'
import { manyStreams } from './h2-streams.js'
import { runIperf } from './iperf.js'
import { duplexEcho } from './duplex.js'
import { timeOpens } from './opens.js'
import { startSystem } from './system.js'
import type { BenchSystem } from './system.js'
import { cpuDelta, cpuSnapshot, killAllTracked, median, quantile } from './util.js'

interface Variant {
  name: string
  nodeArgs: string[]
  bin?: string
}

function parseVariant(spec: string): Variant {
  const [name = spec, flags = '', bin = ''] = spec.split('|')
  const v: Variant = { name, nodeArgs: flags.split(' ').filter((x) => x !== '') }
  if (bin !== '') v.bin = bin
  return v
}

interface Acc {
  gbps: Map<string, number[]>
  cpu: Map<string, Record<string, number>[]>
  opens: number[]
  /** Each round's open p50 and p99 (ms), for paired deltas. */
  openP50: number[]
  openP99: number[]
  /** CPU µs per open by process (utime + stime from /proc), per round. */
  openCpu: Record<string, number>[]
  /** Gateway RSS KiB per idle stream, per round. */
  rss: number[]
  /** Full-duplex echo MB/s per round, and CPU s/GB relayed per process. */
  duplex: number[]
  duplexCpu: Record<string, number>[]
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    args: process.argv.slice(2),
    allowPositionals: true,
    options: {
      reps: { type: 'string', default: '5' },
      seconds: { type: 'string', default: '2' },
      modes: { type: 'string', default: 'up1,down1' },
      opens: { type: 'string', default: '0' },
      streams: { type: 'string', default: '0' },
      duplex: { type: 'string', default: '0' },
    },
  })
  const variants = positionals.map(parseVariant)
  if (variants.length === 0) throw new Error('give at least one variant')
  const reps = Number(values.reps)
  const seconds = Number(values.seconds)
  const opens = Number(values.opens)
  const streams = Number(values.streams)
  const duplexBytes = Number(values.duplex) * 1048576
  const modes = values.modes
    .split(',')
    .filter((m) => m !== '')
    .map((m) => {
      const r = /^(up|down)(\d+)$/.exec(m)
      if (r === null) throw new Error(`bad mode ${m} (up1, down8, ...)`)
      return { label: m, direction: r[1] as 'up' | 'down', parallel: Number(r[2]) }
    })
  const systems: BenchSystem[] = []
  try {
    for (const v of variants) {
      systems.push(
        await startSystem({
          nodeArgs: v.nodeArgs,
          relayFlags: [],
          ...(v.bin ? { bin: v.bin } : {}),
        }),
      )
    }
    const acc: Acc[] = variants.map(() => ({
      gbps: new Map(),
      cpu: new Map(),
      opens: [],
      openP50: [],
      openP99: [],
      openCpu: [],
      rss: [],
      duplex: [],
      duplexCpu: [],
    }))
    // Warm-up.
    for (const s of systems) {
      if (modes.length > 0) {
        await runIperf({ port: s.cli.iperfPort, seconds: 1, parallel: 1, direction: 'up' })
      }
      if (opens > 0) await timeOpens(s.cli.echoPort, 100)
      if (duplexBytes > 0) await duplexEcho(s.cli.echoPort, Math.min(duplexBytes, 8 << 20))
    }
    for (let rep = 0; rep < reps; rep++) {
      // Rotate the order each round.
      for (let j = 0; j < systems.length; j++) {
        const i = (j + rep) % systems.length
        const s = systems[i] as BenchSystem
        const a = acc[i] as Acc
        for (const m of modes) {
          const pids = s.pids()
          const c0 = cpuSnapshot(pids)
          const r = await runIperf({ port: s.cli.iperfPort, seconds, ...m })
          const d = cpuDelta(c0, cpuSnapshot(pids))
          a.gbps.set(m.label, [...(a.gbps.get(m.label) ?? []), r.gbps])
          const perGB = Object.fromEntries(
            Object.entries(d).map(([k, v]) => [k, v / (r.bytes / 1e9)]),
          )
          a.cpu.set(m.label, [...(a.cpu.get(m.label) ?? []), perGB])
        }
        if (opens > 0) {
          const n = Math.ceil(opens / reps)
          const pids = s.pids()
          const c0 = cpuSnapshot(pids)
          const times = await timeOpens(s.cli.echoPort, n)
          const d = cpuDelta(c0, cpuSnapshot(pids))
          a.opens.push(...times)
          a.openP50.push(quantile(times, 0.5))
          a.openP99.push(quantile(times, 0.99))
          a.openCpu.push(Object.fromEntries(Object.entries(d).map(([k, v]) => [k, (v * 1e6) / n])))
        }
        if (duplexBytes > 0) {
          const pids = s.pids()
          const c0 = cpuSnapshot(pids)
          a.duplex.push(await duplexEcho(s.cli.echoPort, duplexBytes))
          const d = cpuDelta(c0, cpuSnapshot(pids))
          a.duplexCpu.push(
            Object.fromEntries(
              Object.entries(d).map(([k, v]) => [k, v / ((2 * duplexBytes) / 1e9)]),
            ),
          )
        }
        if (streams > 0) {
          const r = await manyStreams(s.gateway.url, s.dir, s.token, s.pids(), streams)
          a.rss.push(r.gatewayKiBPerStream)
        }
      }
      process.stderr.write(`round ${rep + 1}/${reps} done\n`)
    }
    const base = acc[0] as Acc
    for (let i = 0; i < variants.length; i++) {
      const v = variants[i] as Variant
      const a = acc[i] as Acc
      const parts: string[] = []
      for (const m of modes) {
        const g = median(a.gbps.get(m.label) ?? [])
        const g0 = median(base.gbps.get(m.label) ?? [])
        const cpu = a.cpu.get(m.label) ?? []
        const c = ['cli', 'gateway', 'agent']
          .map((k) => median(cpu.map((x) => x[k] as number)).toFixed(2))
          .join('/')
        // Paired: each round measured every variant within seconds of the others.
        const mine = a.gbps.get(m.label) ?? []
        const theirs = base.gbps.get(m.label) ?? []
        const paired = median(mine.map((x, r) => x / (theirs[r] as number)))
        const rounds = mine.map((x) => x.toFixed(2)).join(' ')
        void g0
        parts.push(
          `${m.label} ${g.toFixed(2)} Gbit/s (paired ${((paired - 1) * 100).toFixed(0)}%) cpu ${c} [${rounds}]`,
        )
      }
      if (opens > 0) {
        // Paired: each round's p50/p99 minus the first variant's in the same round (ms).
        const delta = (mine: number[], theirs: number[]): string => {
          const d = mine.map((x, r) => x - (theirs[r] as number))
          const f = (x: number): string => `${x >= 0 ? '+' : ''}${x.toFixed(2)}`
          return `${f(median(d))} [${f(Math.min(...d))} … ${f(Math.max(...d))}]`
        }
        const cpu = ['cli', 'gateway', 'agent']
          .map((k) => median(a.openCpu.map((x) => x[k] as number)).toFixed(0))
          .join('/')
        parts.push(
          `open p50 ${quantile(a.opens, 0.5).toFixed(2)} p99 ${quantile(a.opens, 0.99).toFixed(2)} ms` +
            ` (paired p50 ${delta(a.openP50, base.openP50)}, p99 ${delta(a.openP99, base.openP99)} ms)` +
            ` cpu µs/open ${cpu}`,
        )
      }
      if (duplexBytes > 0) {
        const ratios = a.duplex.map((x, r) => x / (base.duplex[r] as number))
        const paired = median(ratios)
        const range = `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}×`
        const c = ['cli', 'gateway', 'agent']
          .map((k) => median(a.duplexCpu.map((x) => x[k] as number)).toFixed(2))
          .join('/')
        const rounds = a.duplex.map((x) => x.toFixed(0)).join(' ')
        parts.push(
          `duplex ${median(a.duplex).toFixed(1)} MB/s (paired ${((paired - 1) * 100).toFixed(0)}%, rounds ${range}) cpu ${c} [${rounds}]`,
        )
      }
      if (streams > 0) {
        parts.push(`gateway RSS/stream ${median(a.rss).toFixed(1)} KiB [${a.rss.join(' ')}]`)
      }
      process.stdout.write(`${v.name.padEnd(14)} ${parts.join('  |  ')}\n`)
    }
  } finally {
    for (const s of systems) await s.stop()
  }
}

process.on('exit', () => killAllTracked())
main().catch((err: unknown) => {
  process.stderr.write(
    `ab failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  )
  killAllTracked()
  process.exitCode = 1
})
