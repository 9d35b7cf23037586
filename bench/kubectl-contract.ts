/**
 * The contract between `npm run bench` (bench/main.ts) and the optional kubectl
 * section, bench/kubectl.ts: when that file exists, main.ts imports it and calls its
 * `benchKubectl(context)` export once the native figures are in, on the same system
 * under test (same gateway, agent and pod). Each row it returns is printed with its
 * ratio to native HTTP/2 in the same direction (target ≥ 0.7×).
 *
 * @module
 */
import type { IperfResult, IperfRun } from './iperf.js'

/** What main.ts hands to bench/kubectl.ts. */
export interface KubectlBenchContext {
  /** `--quick`: keep it to a few seconds. */
  quick: boolean
  /** The system's state directory: dev PKI (`ca.crt`), `kubeconfig`, configs. */
  dir: string
  /** A kubeconfig whose current context points at the gateway with a valid token. */
  kubeconfig: string
  /** The production-like gateway, e.g. `https://127.0.0.1:PORT`. */
  gatewayUrl: string
  /** A bearer token allowed to forward to the bench pod. */
  token: string
  /** The bench pod (in the registry; an iperf3 server and an echo server). */
  pod: { namespace: string; name: string; node: string; iperfPort: number; echoPort: number }
  /** iperf3 as main.ts runs it: `run({ port, seconds, parallel, direction })`. */
  iperf: { seconds: number; reps: number; run: (run: IperfRun) => Promise<IperfResult> }
  /** Progress lines (stderr). */
  log: (line: string) => void
}

/** One measured kubectl path. */
export interface KubectlBenchRow {
  /** e.g. `kubectl 1.33 WebSocket tunnel`, `kubectl 1.28 SPDY`. */
  path: string
  direction: 'up' | 'down'
  /** Median Gbit/s, one stream. */
  gbps: number
}

/** What bench/kubectl.ts returns. */
export interface KubectlBenchResult {
  rows: KubectlBenchRow[]
}

/** The export main.ts calls. */
export type BenchKubectl = (context: KubectlBenchContext) => Promise<KubectlBenchResult>
