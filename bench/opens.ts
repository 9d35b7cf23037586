/**
 * Stream-open measurements through a local TCP port (the CLI's forwarded port, a
 * socat chain, or the echo pod itself as the direct baseline):
 *
 * - sequential opens: connect, write one byte, wait for its echo, close; the time
 *   from `connect()` to the echoed byte, `n` times one after the other;
 * - parallel opens: `n` connections started at once, each must echo its byte; all
 *   stay open until every one has answered (so they are really concurrent).
 *
 * @module
 */
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import { quantile, round } from './util.js'

/** Latency summary of sequential opens, ms. */
export interface OpenLatency {
  n: number
  p50Ms: number
  p99Ms: number
  p999Ms: number
  maxMs: number
  /** Opens per second achieved by the sequential loop. */
  perSec: number
}

/** Result of parallel opens. */
export interface ParallelOpens {
  n: number
  ok: number
  failed: number
  /** Time until every connection had its echo (or failed), ms. */
  ms: number
  firstError?: string
}

/** Connects, writes one byte, resolves with the socket once the byte came back. */
export function openEcho(port: number, timeoutMs = 15_000): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, noDelay: true })
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error(`no echo within ${timeoutMs} ms`))
    }, timeoutMs)
    s.once('connect', () => s.write('x'))
    s.once('data', () => {
      clearTimeout(timer)
      s.removeAllListeners('error')
      s.on('error', () => {
        // A reset after the measurement (e.g. the relay tearing down) is not a failure.
      })
      resolve(s)
    })
    s.once('error', (err) => {
      clearTimeout(timer)
      s.destroy()
      reject(err)
    })
    s.once('end', () => {
      clearTimeout(timer)
      reject(new Error('closed before the echo'))
    })
  })
}

/** Times `n` sequential opens (ms each), after `warmup` unmeasured ones. */
export async function timeOpens(port: number, n: number, warmup = 0): Promise<number[]> {
  for (let i = 0; i < warmup; i++) (await openEcho(port)).destroy()
  const samples: number[] = []
  for (let i = 0; i < n; i++) {
    const start = performance.now()
    const s = await openEcho(port)
    samples.push(performance.now() - start)
    s.destroy()
  }
  return samples
}

/** Summarizes open times; `wallMs` is the time the loop took (for the rate). */
export function summarizeOpens(samples: readonly number[], wallMs: number): OpenLatency {
  return {
    n: samples.length,
    p50Ms: round(quantile(samples, 0.5), 3),
    p99Ms: round(quantile(samples, 0.99), 3),
    p999Ms: round(quantile(samples, 0.999), 3),
    maxMs: round(Math.max(...samples), 3),
    perSec: Math.round((samples.length / wallMs) * 1000),
  }
}

/**
 * Sequential opens on several paths, interleaved in `blocks` so a slow phase of a
 * shared machine hits every path alike. `counts[i]` opens on `ports[i]` in total.
 */
export async function interleavedOpens(
  ports: readonly number[],
  counts: readonly number[],
  blocks = 10,
  warmup = 50,
): Promise<OpenLatency[]> {
  for (const port of ports) await timeOpens(port, 0, warmup)
  const samples = ports.map(() => [] as number[])
  const wall = ports.map(() => 0)
  for (let b = 0; b < blocks; b++) {
    for (let i = 0; i < ports.length; i++) {
      const total = counts[i] as number
      const n = Math.floor((total * (b + 1)) / blocks) - Math.floor((total * b) / blocks)
      const t0 = performance.now()
      ;(samples[i] as number[]).push(...(await timeOpens(ports[i] as number, n)))
      wall[i] = (wall[i] as number) + performance.now() - t0
    }
  }
  return samples.map((s, i) => summarizeOpens(s, wall[i] as number))
}

/**
 * The first `n` opens on each path, one path after the other, with nothing before them:
 * what a freshly started forward costs (connection set-up, code not yet optimized).
 */
export async function coldOpens(ports: readonly number[], n = 100): Promise<OpenLatency[]> {
  const out: OpenLatency[] = []
  for (const port of ports) {
    const t0 = performance.now()
    out.push(summarizeOpens(await timeOpens(port, n), performance.now() - t0))
  }
  return out
}

/** `n` opens started at once; each must echo. */
export async function parallelOpens(port: number, n: number): Promise<ParallelOpens> {
  const t0 = performance.now()
  const results = await Promise.allSettled(Array.from({ length: n }, () => openEcho(port, 30_000)))
  const ms = performance.now() - t0
  let ok = 0
  let firstError: string | undefined
  for (const r of results) {
    if (r.status === 'fulfilled') {
      ok++
      r.value.destroy()
    } else {
      firstError ??= (r.reason as Error).message
    }
  }
  const out: ParallelOpens = { n, ok, failed: n - ok, ms: Math.round(ms) }
  if (firstError !== undefined) out.firstError = firstError
  return out
}
