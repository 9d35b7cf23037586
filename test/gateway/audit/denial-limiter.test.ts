import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  DenialLimiter,
  MAX_DENIAL_SOURCES,
  MAX_SUMMARIES,
  denialSourceKey,
} from '../../../src/gateway/audit/denial-limiter.js'
import type { DenialLimits } from '../../../src/gateway/audit/denial-limiter.js'
import { rec } from './helpers.js'

const LIMITS: DenialLimits = {
  rate: 1,
  burst: 5,
  totalRate: 1000,
  totalBurst: 1000,
  summaryIntervalMs: 10_000,
}

function clock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start
  return { now: () => t, advance: (ms) => (t += ms) }
}

const denial = (source: string, reason = 'unauthenticated', user?: string) =>
  rec('stream.denied', {
    sourceAddress: source,
    reason,
    ...(user !== undefined ? { user } : { user: undefined }),
  })

test('a source is counted per IP, and per /64 for IPv6', () => {
  assert.equal(denialSourceKey('203.0.113.7:50123'), '203.0.113.7')
  assert.equal(denialSourceKey('[::ffff:203.0.113.7]:1'), '203.0.113.7')
  assert.equal(denialSourceKey('[2001:db8:1:2:3:4:5:6]:443'), '2001:db8:1:2::/64')
  assert.equal(denialSourceKey('[2001:db8:1:2::9]:443'), '2001:db8:1:2::/64')
  assert.equal(denialSourceKey('[2001:db8::1]:443'), '2001:db8:0:0::/64')
  assert.equal(denialSourceKey('[::1]:80'), '0:0:0:0::/64')
  assert.equal(denialSourceKey('[fe80::1%eth0]:80'), 'fe80:0:0:0::/64')
  assert.equal(denialSourceKey('unknown'), 'unknown')
  assert.equal(denialSourceKey(undefined), 'unknown')
})

test('a burst per source, then one a second; the rest is counted in one summary', () => {
  const c = clock()
  const l = new DenialLimiter(LIMITS, c.now)
  let recorded = 0
  for (let i = 0; i < 100; i++) if (l.admit(denial('198.51.100.1:1000'))) recorded++
  assert.equal(recorded, LIMITS.burst)
  // Another source has its own budget.
  assert.equal(l.admit(denial('198.51.100.2:1000')), true)
  c.advance(3000)
  recorded = 0
  for (let i = 0; i < 10; i++)
    if (l.admit(denial('198.51.100.1:2000', 'forbidden', 'eve'))) recorded++
  assert.equal(recorded, 3, 'three seconds: three more tokens')
  const sums = l.summaries('gw')
  assert.equal(sums.length, 1)
  const s = sums[0]!
  assert.equal(s.type, 'denials.suppressed')
  assert.equal(s.sourceAddress, '198.51.100.1')
  assert.equal(s.count, 95 + 7)
  assert.deepEqual(s.reasons, { unauthenticated: 95, forbidden: 7 })
  assert.deepEqual(s.users, ['eve'])
  assert.equal(s.firstTime, new Date(1_000_000).toISOString())
  assert.equal(s.lastTime, new Date(1_003_000).toISOString())
  assert.equal(l.suppressedTotal, 102)
  assert.deepEqual(l.summaries('gw'), [], 'each refusal is summarized once')
})

test('the shared budget holds many sources back together', () => {
  const c = clock()
  const l = new DenialLimiter({ ...LIMITS, totalRate: 10, totalBurst: 20 }, c.now)
  let recorded = 0
  for (let i = 0; i < 200; i++) if (l.admit(denial(`192.0.2.${i}:1`))) recorded++
  assert.equal(recorded, 20)
  const sums = l.summaries('gw')
  assert.equal(
    sums.reduce((n, s) => n + s.count!, 0),
    180,
  )
  assert.ok(sums.length <= MAX_SUMMARIES + 1)
  const rest = sums.find((s) => s.sourceAddress === undefined)
  assert.ok(rest !== undefined, 'sources beyond the per-source summaries are folded into one')
  assert.equal(rest.count, 180 - MAX_SUMMARIES)
})

test('memory is bounded: sources beyond the table share one bucket; idle ones are forgotten', () => {
  const c = clock()
  const l = new DenialLimiter({ ...LIMITS, totalRate: 1e9, totalBurst: 1e9 }, c.now)
  // Every source suppressed (not idle): the table fills, then the overflow bucket serves.
  for (let i = 0; i < MAX_DENIAL_SOURCES + 5000; i++) {
    const src = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:1`
    for (let j = 0; j <= LIMITS.burst; j++) l.admit(denial(src))
  }
  assert.ok(l.sources <= MAX_DENIAL_SOURCES + 1, `${l.sources} sources tracked`)
  const sums = l.summaries('gw')
  const total = sums.reduce((n, s) => n + s.count!, 0)
  assert.ok(total >= MAX_DENIAL_SOURCES, `${total} counted`)
  // Quiet for long enough to refill: forgotten at the next summary.
  c.advance(60_000)
  l.summaries('gw')
  assert.equal(l.sources, 0)
})
