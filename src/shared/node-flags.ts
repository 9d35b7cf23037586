/**
 * Node/V8 flags for the processes that relay bytes (the gateway and the agents), where
 * pfgate itself starts them: the dev cluster, the container image and the benchmark.
 *
 * `--single-threaded-gc`: V8's concurrent and parallel GC threads compete with the relay
 * for the same few cores and cost more CPU than they save. Measured on the 2-core dev VM
 * (`bench/ab.js`, 6 paired rounds): one stream +20 % up and +19 % down, gateway CPU per
 * GB 2.77 → 1.81 s, agent 2.23 → 1.67 s, stream-open latency unchanged
 * (docs/performance.md). It cannot be set from inside the process (V8 aborts) nor in
 * `NODE_OPTIONS` (Node refuses it), hence the command line.
 *
 * `PFGATE_NODE_FLAGS` (space-separated) replaces the default; set it empty to run
 * without.
 *
 * @module
 */

/** The default flags of relaying components. */
export const RELAY_NODE_FLAGS: readonly string[] = ['--single-threaded-gc']

/** The flags to start a relaying component with (see the module comment). */
export function relayNodeFlags(env: NodeJS.ProcessEnv = process.env): string[] {
  const override = env.PFGATE_NODE_FLAGS
  if (override !== undefined) return override.split(/\s+/).filter((f) => f !== '')
  return [...RELAY_NODE_FLAGS]
}
