/**
 * Bounded fuzzing (seeded, a few seconds): see fuzz-harness.ts for what is checked.
 * For long runs: `node scripts/fuzz-protocols.mjs --seconds 600`.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runFuzz } from './fuzz-harness.js'

test('fuzz: framer, header codec, session, port-forward and channel codec survive hostile input', async (t) => {
  const report = await runFuzz({ seed: 0x5eed, iterations: 5000, timeMs: 8000 })
  t.diagnostic(
    `fuzz: ${report.iterations} iterations in ${report.elapsedMs.toFixed(0)} ms, ` +
      `${report.sessions} sessions (${report.protocolErrors} ended on a protocol error, ` +
      `${report.cleanEnds} cleanly), ${report.requests} forward requests, ` +
      `max parser backlog ${report.maxParserBuffered} B, max session output ${report.maxWritten} B, ` +
      `heap growth ${(report.heapGrowthBytes / 1048576).toFixed(1)} MiB`,
  )
  assert.deepEqual(report.failures, [])
  assert.ok(report.iterations >= 1000, `only ${report.iterations} iterations ran`)
  assert.ok(report.protocolErrors > 0 && report.cleanEnds > 0, 'both outcomes were exercised')
  assert.ok(report.requests > 0, 'some inputs reached the port-forward layer')
  assert.ok(report.heapGrowthBytes < 64 * 1024 * 1024)
})
