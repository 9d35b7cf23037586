/**
 * What the durable audit trail costs in stream opens: the same open-echo-close cycle
 * through two identical gateways in front of the same agent and pod, one with the
 * production audit (blocking-strict, file sink, fdatasync before the client hears
 * 200) and one with the cheapest audit the config allows (batch, no fsync). Each round
 * measures cheap, strict, strict, cheap back to back; the rates are medians, the cost is
 * the median of the rounds' costs.
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
  /** Median over rounds of (cheap − strict) / cheap, percent. */
  costPct: number
  errors: number
}

/**
 * Measures the open rate of both gateways at `concurrency`: `rounds` rounds of four runs
 * of `ms` each (cheap, strict, strict, cheap), after `warmupMs` of warm-up on each.
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
    // served fewer streams before is measurably slower for a while, which showed as a
    // "negative cost" with 300 ms of warm-up.
    await openRate(cheap, sys.token, 32, warmupMs)
    await openRate(strict, sys.token, 32, warmupMs)
    const s: number[] = []
    const c: number[] = []
    const roundCost: number[] = []
    let errors = 0
    for (let i = 0; i < rounds; i++) {
      // Each round is cheap, strict, strict, cheap: a linear drift in machine speed during
      // the round hits both alike. The round's cost is 1 − (strict total)/(cheap total).
      let strictSum = 0
      let cheapSum = 0
      for (const which of ['cheap', 'strict', 'strict', 'cheap'] as const) {
        const r = await openRate(which === 'strict' ? strict : cheap, sys.token, concurrency, ms)
        errors += r.errors
        if (which === 'strict') {
          s.push(r.perSec)
          strictSum += r.perSec
        } else {
          c.push(r.perSec)
          cheapSum += r.perSec
        }
      }
      roundCost.push(1 - strictSum / cheapSum)
    }
    return {
      concurrency,
      strictPerSec: Math.round(median(s)),
      cheapPerSec: Math.round(median(c)),
      costPct: Math.round(median(roundCost) * 1000) / 10,
      errors,
    }
  } finally {
    strict.close()
    cheap.close()
  }
}
