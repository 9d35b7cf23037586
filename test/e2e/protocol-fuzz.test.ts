/**
 * Protocol robustness against the running gateway (a real process of a dev cluster):
 * seeded random and mutated SPDY frames (raw and tunneled), WebSocket frames and
 * channel messages, and malformed upgrade requests, over real TLS connections, while
 * a SPDY and a v4 neighbour session keep echoing. The gateway must never crash, never
 * leak (sessions, streams, file descriptors, audit closes, memory) and end only the
 * offending session. See test/helpers/gateway-fuzz.ts for what is sent and checked;
 * `node scripts/fuzz-gateway.mjs --seconds N` runs it for longer.
 *
 * Bounded for CI: PFGATE_FUZZ_SECONDS (default 20) and PFGATE_FUZZ_SEED.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { startTestCluster } from '../helpers/cluster.js'
import { closedPort } from '../helpers/kube-clients.js'
import { fuzzTarget, runGatewayFuzz } from '../helpers/gateway-fuzz.js'
import type { DevCluster } from '../../src/dev/cluster.js'

let cluster: DevCluster & { cleanup(): Promise<void> }

before(async () => {
  cluster = await startTestCluster()
})

after(async () => {
  await cluster?.cleanup()
})

test('fuzzed SPDY, WebSocket and upgrade input never crashes, leaks or disturbs other sessions', async (t) => {
  const seconds = Number(process.env.PFGATE_FUZZ_SECONDS ?? 20)
  const seed = Number(process.env.PFGATE_FUZZ_SEED ?? Date.now() % 0x7fffffff)
  const report = await runGatewayFuzz(fuzzTarget(cluster, await closedPort()), {
    seed,
    timeMs: seconds * 1000,
    iterations: 1_000_000,
  })
  const { failures, ...summary } = report
  t.diagnostic(JSON.stringify(summary))
  assert.deepEqual(failures, [], `seed ${seed}: ${failures.join('\n')}`)
  assert.ok(report.iterations > 50, 'the run did some work')
  assert.ok(report.upgraded > 20, 'upgrades were accepted and then fuzzed')
  assert.ok(report.neighbourEchoes > 10, 'the neighbours kept echoing')
  assert.ok(report.streamsOpened > 0, 'valid input opened real streams')
})
