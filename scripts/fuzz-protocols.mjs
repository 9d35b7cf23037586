#!/usr/bin/env node
// Long-running fuzzing of the SPDY framer, header codec, session, port-forward layer
// and the v4 channel codec (the harness is test/protocol/spdy/fuzz-harness.ts; the
// bounded version runs in the test suite).
// Build first (npx tsc -p tsconfig.json), then:
//   node scripts/fuzz-protocols.mjs [--seconds N] [--iterations N] [--seed N] [--rounds N]
// Each round uses the next seed. Exits 1 on the first round with failures and prints them.
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
const seconds = opt('seconds', 60)
const iterations = opt('iterations', Number.POSITIVE_INFINITY)
const rounds = opt('rounds', Number.POSITIVE_INFINITY)
let seed = opt('seed', Date.now() % 0x7fffffff)

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..')
const { runFuzz } = await import(join(root, 'dist/test/protocol/spdy/fuzz-harness.js'))

const end = Date.now() + seconds * 1000
let total = 0
for (let round = 0; round < rounds && Date.now() < end && total < iterations; round++, seed++) {
  const budget = Math.min(end - Date.now(), 60_000)
  const report = await runFuzz({
    seed,
    iterations: Math.min(iterations - total, 1_000_000),
    timeMs: budget,
    progress: (r) =>
      process.stderr.write(
        `\rseed ${seed}: ${r.iterations} iterations, ${r.protocolErrors} protocol errors   `,
      ),
  })
  total += report.iterations
  process.stderr.write('\n')
  const { failures, ...summary } = report
  console.log(JSON.stringify(summary))
  if (failures.length > 0) {
    console.error(`FAILURES with seed ${seed}:`)
    for (const f of failures) console.error(`- ${f}`)
    process.exit(1)
  }
}
console.log(`ok: ${total} iterations without a failure`)
