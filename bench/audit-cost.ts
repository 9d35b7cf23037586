/**
 * What the durable audit trail costs in stream opens: the same open-echo-close cycle
 * through two identical gateways in front of the same agent and pod, one with the
 * production audit (blocking-strict, file sink, fdatasync before the client hears
 * 200) and one with the cheapest audit the config allows (batch, no fsync). Rounds
 * alternate between the two; each figure is the median of its rounds.
 *
 * @module
 */
import type { BenchSystem } from './system.js'
import { connectGateway, openRate } from './h2-streams.js'
import { median } from './util.js'

/** Result at one concurrency. */
export interface AuditCost {
  concurrency: number
  strictPerSec: number
  cheapPerSec: number
  /** Median over back-to-back pairs of (cheap − strict) / cheap, percent. */
  costPct: number
  errors: number
}

/**
 * Measures the open rate of both gateways at `concurrency`: `rounds` alternating rounds
 * of `ms` each, after `warmupMs` of warm-up on each gateway.
 */
export async function measureAuditCost(
  sys: BenchSystem,
  concurrency: number,
  rounds: number,
  ms: number,
  warmupMs = 2000,
): Promise<AuditCost> {
  const strict = await connectGateway(sys.gateway.url, sys.dir)
  const cheap = await connectGateway(sys.cheapGateway.url, sys.dir)
  try {
    // Warm-up of both paths (JIT, agent sessions): seconds, not less — a gateway that
    // served fewer streams before is measurably slower for a while.
    await openRate(cheap, sys.token, 32, warmupMs)
    await openRate(strict, sys.token, 32, warmupMs)
    const s: number[] = []
    const c: number[] = []
    let errors = 0
    for (let i = 0; i < rounds; i++) {
      // Alternate which goes first so a drift in machine speed hits both alike.
      const order = i % 2 === 0 ? (['cheap', 'strict'] as const) : (['strict', 'cheap'] as const)
      for (const which of order) {
        const r = await openRate(which === 'strict' ? strict : cheap, sys.token, concurrency, ms)
        errors += r.errors
        ;(which === 'strict' ? s : c).push(r.perSec)
      }
    }
    // The cost is the median over rounds of 1 − strict/cheap, each pair measured back to
    // back: slow and fast phases of a shared machine cancel out better than in the ratio
    // of two medians.
    const pairCost = s.map((x, i) => 1 - x / (c[i] as number))
    return {
      concurrency,
      strictPerSec: Math.round(median(s)),
      cheapPerSec: Math.round(median(c)),
      costPct: Math.round(median(pairCost) * 1000) / 10,
      errors,
    }
  } finally {
    strict.close()
    cheap.close()
  }
}
