/**
 * Loaded into the CLI, the gateway and the agent with `--import` when the bench runs with
 * `--profile DIR` (bench/profile.ts); never part of pfgate itself. It does nothing until
 * the bench sends SIGUSR2: the first signal opens a measuring window (V8's CPU profiler,
 * the same sampler `--cpu-prof` uses, started through the in-process inspector; an
 * event-loop delay histogram; GC entries counted from a PerformanceObserver), the next one
 * closes it and writes `PID.cpuprofile` and `PID.stats.json` into the directory named in
 * `$PFGATE_PROFILE_DIR/window` (the stats file last: the bench waits for it).
 *
 * @module
 */
import { Session } from 'node:inspector/promises'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PerformanceObserver, constants, monitorEventLoopDelay } from 'node:perf_hooks'
import type { IntervalHistogram, PerformanceEntry } from 'node:perf_hooks'

/** GC pauses by kind: count and total main-thread milliseconds. */
export interface GcTotals {
  count: number
  ms: number
}

/** What `PID.stats.json` holds. */
export interface WindowStats {
  pid: number
  argv: string[]
  wallMs: number
  gc: Record<'scavenge' | 'markCompact' | 'incremental' | 'weakCallbacks', GcTotals>
  /**
   * Event-loop delay, ms: how late a 10 ms timer fired (perf_hooks.monitorEventLoopDelay
   * records the whole interval between firings; the 10 ms are taken off here).
   */
  loopDelay: { p50: number; p99: number; max: number; samples: number }
}

const GC_KINDS: Record<number, keyof WindowStats['gc']> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'scavenge',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'markCompact',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakCallbacks',
}

const dir = process.env.PFGATE_PROFILE_DIR
const RESOLUTION_MS = 10

interface Window {
  session: Session
  histogram: IntervalHistogram
  observer: PerformanceObserver
  gc: WindowStats['gc']
  start: number
}
let open: Window | undefined
let busy = false

async function start(): Promise<Window> {
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.start')
  const histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
  histogram.enable()
  const zero = (): GcTotals => ({ count: 0, ms: 0 })
  const gc = { scavenge: zero(), markCompact: zero(), incremental: zero(), weakCallbacks: zero() }
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const detail = (e as PerformanceEntry & { detail?: { kind?: number } }).detail
      const kind = GC_KINDS[detail?.kind ?? -1]
      if (kind === undefined) continue
      gc[kind].count++
      gc[kind].ms += e.duration
    }
  })
  observer.observe({ entryTypes: ['gc'] })
  return { session, histogram, observer, gc, start: performance.now() }
}

async function stop(w: Window, outDir: string): Promise<void> {
  const { profile } = await w.session.post('Profiler.stop')
  w.session.disconnect()
  w.histogram.disable()
  w.observer.disconnect()
  const ms = (ns: number): number => Math.max(0, Math.round((ns - RESOLUTION_MS * 1e6) / 1e4) / 100)
  const stats: WindowStats = {
    pid: process.pid,
    argv: process.argv.slice(2),
    wallMs: Math.round(performance.now() - w.start),
    gc: w.gc,
    loopDelay: {
      p50: ms(w.histogram.percentile(50)),
      p99: ms(w.histogram.percentile(99)),
      max: ms(w.histogram.max),
      samples: w.histogram.count,
    },
  }
  writeFileSync(join(outDir, `${process.pid}.cpuprofile`), JSON.stringify(profile))
  writeFileSync(join(outDir, `${process.pid}.stats.json`), JSON.stringify(stats, null, 2))
}

if (dir !== undefined) {
  process.on('SIGUSR2', () => {
    if (busy) return
    busy = true
    const w = open
    const step =
      w === undefined
        ? start().then((x) => {
            open = x
          })
        : stop(w, readFileSync(join(dir, 'window'), 'utf8').trim()).then(() => {
            open = undefined
          })
    step
      .catch((err: unknown) => process.stderr.write(`profile-preload: ${String(err)}\n`))
      .finally(() => {
        busy = false
      })
  })
}
