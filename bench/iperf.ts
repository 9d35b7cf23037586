/**
 * iperf3 as the traffic driver: the client runs against a port (the forwarded local
 * port, a socat chain, or the server itself), every connection it opens — the control
 * connection and each data stream — goes through the path under test.
 *
 * @module
 */
import { spawn } from 'node:child_process'

/** Options of one iperf3 run. */
export interface IperfRun {
  port: number
  seconds: number
  /** Parallel data streams (`-P`). */
  parallel: number
  /** `up` = client → server (client → pod); `down` = `-R` (pod → client). */
  direction: 'up' | 'down'
}

/** What one run measured at the receiver. */
export interface IperfResult {
  gbps: number
  bytes: number
  seconds: number
}

interface IperfJson {
  error?: string
  end?: { sum_received?: { bytes: number; seconds: number; bits_per_second: number } }
}

/**
 * Runs `iperf3 -c 127.0.0.1 -p PORT -t S -P N [-R] -J`. The server serves one test at
 * a time and may still be closing the previous one (its connections end through the
 * path under test): "busy" answers are retried for a few seconds, other failures once.
 */
export async function runIperf(run: IperfRun): Promise<IperfResult> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await runIperfOnce(run)
    } catch (err) {
      // "Busy" is retried for a few seconds; any other failure once, after a second.
      const busy = (err as Error).message.includes('busy')
      if (busy ? attempt >= 30 : attempt >= 1) throw err
      await new Promise((resolve) => setTimeout(resolve, busy ? 200 : 1000))
    }
  }
}

function runIperfOnce(run: IperfRun): Promise<IperfResult> {
  const args = [
    '-c',
    '127.0.0.1',
    '-p',
    String(run.port),
    '-t',
    String(run.seconds),
    '-P',
    String(run.parallel),
    '-J',
    '--connect-timeout',
    '5000',
  ]
  if (run.direction === 'down') args.push('-R')
  return new Promise((resolve, reject) => {
    const child = spawn('iperf3', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), (run.seconds + 20) * 1000)
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      let json: IperfJson
      try {
        json = JSON.parse(out) as IperfJson
      } catch {
        reject(new Error(`iperf3 (exit ${code}) gave no JSON: ${err || out.slice(0, 500)}`))
        return
      }
      const sum = json.end?.sum_received
      if (json.error !== undefined || sum === undefined) {
        reject(new Error(`iperf3 to port ${run.port}: ${json.error ?? 'no result'}`))
        return
      }
      resolve({ gbps: sum.bits_per_second / 1e9, bytes: sum.bytes, seconds: sum.seconds })
    })
  })
}
