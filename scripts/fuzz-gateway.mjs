#!/usr/bin/env node
// Long-running protocol fuzzing of a real gateway process: starts a dev cluster (gateway,
// agents, demo pods) in a temp directory and runs the harness of
// test/helpers/gateway-fuzz.ts against it, round after round (the bounded version runs
// in the test suite as test/e2e/protocol-fuzz.test.ts).
// Build first (npx tsc -p tsconfig.json), then:
//   node scripts/fuzz-gateway.mjs [--seconds N] [--seed N] [--concurrency N]
// Each round (at most 60 s) uses the next seed; the checks (no crash, no leak, neighbours
// unharmed) run at the end of every round. Exits 1 on the first round with failures.
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

const args = process.argv.slice(2)
function opt(name, fallback) {
  const i = args.indexOf(`--${name}`)
  if (i < 0) return fallback
  const v = Number(args[i + 1])
  if (!Number.isFinite(v)) {
    console.error(`--${name} needs a number`)
    process.exit(2)
  }
  return v
}
const seconds = opt('seconds', 300)
const concurrency = opt('concurrency', 8)
let seed = opt('seed', Date.now() % 0x7fffffff)

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..')
const { startTestCluster } = await import(join(root, 'dist/test/helpers/cluster.js'))
const { closedPort } = await import(join(root, 'dist/test/helpers/kube-clients.js'))
const { fuzzTarget, runGatewayFuzz } = await import(join(root, 'dist/test/helpers/gateway-fuzz.js'))

const cluster = await startTestCluster()
let code = 0
try {
  const target = fuzzTarget(cluster, await closedPort())
  const end = Date.now() + seconds * 1000
  let total = 0
  for (; Date.now() < end; seed++) {
    const report = await runGatewayFuzz(target, {
      seed,
      concurrency,
      iterations: 1_000_000,
      timeMs: Math.min(end - Date.now(), 60_000),
      progress: (r) =>
        process.stderr.write(
          `\rseed ${seed}: ${r.iterations} connections, ${r.upgraded} upgraded   `,
        ),
    })
    total += report.iterations
    process.stderr.write('\n')
    const { failures, ...summary } = report
    console.log(JSON.stringify(summary))
    if (failures.length > 0) {
      console.error(`FAILURES with seed ${seed}:`)
      for (const f of failures) console.error(`- ${f}`)
      code = 1
      break
    }
  }
  if (code === 0) console.log(`ok: ${total} fuzzed connections without a failure`)
} finally {
  await cluster.cleanup()
}
process.exit(code)
