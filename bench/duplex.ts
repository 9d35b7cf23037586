/**
 * Full-duplex echo: the client writes `bytes` to an echo server through a path while it
 * reads the echo at the same time, half-closes when it has written everything, and stops
 * the clock when the last echoed byte and the server's end have arrived. Both directions
 * carry `bytes` at once, as an HTTP client uploading while it downloads does; the figure
 * is `bytes` per second (MB/s, 10^6) of echoed data.
 *
 * Paths are measured in interleaved repetitions (each repetition runs every path once),
 * so a slow phase of a shared machine hits every path alike; ratios are the median of
 * each repetition's ratio (bench/main.ts, pairedRatio).
 *
 * @module
 */
import { connect } from 'node:net'
import { median } from './util.js'

/** One path's samples, MB/s. */
export interface DuplexCell {
  path: string
  mbps: number
  samples: number[]
  /**
   * CPU seconds per GB relayed (both directions counted: 2 × the bytes echoed) of each
   * process of the path, client side first, median over the repetitions; when the path
   * said how to read its processes' CPU.
   */
  cpuPerGB?: number[]
}

/** A path to measure; `cpu` reads the CPU seconds of its processes (client side first). */
export interface DuplexPath {
  path: string
  port: number
  cpu?: () => number[]
}

/** Echoes `bytes` through `port` full duplex; resolves with MB/s. */
export function duplexEcho(port: number, bytes: number, timeoutMs = 120_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const chunk = Buffer.alloc(64 * 1024, 0x61)
    const s = connect({ host: '127.0.0.1', port, noDelay: true, allowHalfOpen: true })
    let start = 0
    let sent = 0
    let received = 0
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error(`full-duplex echo: ${received}/${bytes} bytes back after ${timeoutMs} ms`))
    }, timeoutMs)
    const pump = (): void => {
      while (sent < bytes) {
        const n = Math.min(chunk.length, bytes - sent)
        sent += n
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          s.once('drain', pump)
          return
        }
      }
      s.end()
    }
    s.once('connect', () => {
      start = performance.now()
      pump()
    })
    s.on('data', (d: Buffer) => {
      received += d.length
    })
    s.once('end', () => {
      clearTimeout(timer)
      const ms = performance.now() - start
      s.destroy()
      if (received !== bytes) {
        reject(new Error(`full-duplex echo: ${received} of ${bytes} bytes came back`))
        return
      }
      resolve(bytes / 1e6 / (ms / 1000))
    })
    s.once('error', (err) => {
      clearTimeout(timer)
      s.destroy()
      reject(err)
    })
  })
}

/** `reps` interleaved repetitions of a full-duplex echo of `bytes` on every path. */
export async function measureDuplex(
  paths: readonly DuplexPath[],
  bytes: number,
  reps: number,
  log: (line: string) => void,
): Promise<DuplexCell[]> {
  // One unmeasured round first: connection pools, JIT and TLS session set-up.
  for (const p of paths) await duplexEcho(p.port, Math.min(bytes, 8 * 1024 * 1024))
  const cells: DuplexCell[] = paths.map((p) => ({ path: p.path, mbps: NaN, samples: [] }))
  const cpu = paths.map(() => [] as number[][])
  for (let r = 0; r < reps; r++) {
    for (const [i, p] of paths.entries()) {
      const c0 = p.cpu?.()
      const mbps = await duplexEcho(p.port, bytes)
      const c1 = p.cpu?.()
      cells[i]?.samples.push(mbps)
      if (c0 !== undefined && c1 !== undefined) {
        cpu[i]?.push(c1.map((x, j) => (x - (c0[j] as number)) / ((2 * bytes) / 1e9)))
      }
    }
    log(
      `duplex: repetition ${r + 1}/${reps}: ` +
        cells.map((c) => `${c.path} ${c.samples.at(-1)?.toFixed(0)} MB/s`).join(', '),
    )
  }
  for (const [i, c] of cells.entries()) {
    c.mbps = median(c.samples)
    const runs = cpu[i] as number[][]
    if (runs.length > 0) {
      c.cpuPerGB = (runs[0] as number[]).map((_, j) => median(runs.map((x) => x[j] as number)))
    }
  }
  return cells
}
