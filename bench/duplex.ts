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
  paths: readonly { path: string; port: number }[],
  bytes: number,
  reps: number,
  log: (line: string) => void,
): Promise<DuplexCell[]> {
  // One unmeasured round first: connection pools, JIT and TLS session set-up.
  for (const p of paths) await duplexEcho(p.port, Math.min(bytes, 8 * 1024 * 1024))
  const cells = paths.map((p) => ({ path: p.path, mbps: NaN, samples: [] as number[] }))
  for (let r = 0; r < reps; r++) {
    for (const [i, p] of paths.entries()) {
      const mbps = await duplexEcho(p.port, bytes)
      cells[i]?.samples.push(mbps)
    }
    log(
      `duplex: repetition ${r + 1}/${reps}: ` +
        cells.map((c) => `${c.path} ${c.samples.at(-1)?.toFixed(0)} MB/s`).join(', '),
    )
  }
  for (const c of cells) c.mbps = median(c.samples)
  return cells
}
