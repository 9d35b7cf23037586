/**
 * The stream table's sweeper on an injected clock and ticker: it ends streams idle or alive
 * too long, with the limit's words, and nothing earlier. Sessions and streams get ids of
 * their gateway, and the per-user counts follow reserve/release/add/remove.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { LiveStream, StreamTable } from '../../../src/gateway/forward/stream-table.js'
import type { Ticker } from '../../../src/gateway/forward/stream-table.js'
import type { Stop } from '../../../src/protocol/stream-end.js'
import type { DuplexRelay } from '../../../src/shared/duplex-relay.js'
import { ALICE, NODE, POD } from './harness.js'

function table(limits: { idleTimeoutMs: number; maxLifetimeMs: number }) {
  const clock = { now: 1000 }
  const ticks: { every: number; tick: () => void }[] = []
  const ticker: Ticker = (every, tick) => {
    ticks.push({ every, tick })
    return { stop: () => ticks.splice(0) }
  }
  const hits: string[] = []
  const t = new StreamTable({
    prefix: 'gw',
    now: () => clock.now,
    ...limits,
    onLimit: (l) => hits.push(l),
    ticker,
  })
  return { t, clock, ticks, hits }
}

/** A live stream whose relay only notes how it was stopped. */
function live(t: StreamTable, now: number, stops: Stop[], lastActivity = now): LiveStream {
  const session = t.newSession({
    protocol: 'native-h2',
    sourceAddress: '192.0.2.1:1',
    terminate: () => {},
  })
  t.reserve(session, ALICE.user)
  const s = new LiveStream(t.newStreamId(), session, ALICE, POD, NODE, 8080, now, undefined)
  let done = false
  s.relay = {
    get done() {
      return done
    },
    lastActivity,
    abort: () => {
      done = true
      stops.push(s.stopped as Stop)
    },
  } as unknown as DuplexRelay<'client' | 'pod'>
  t.add(s)
  return s
}

test('no limits, no sweeper', () => {
  const { ticks } = table({ idleTimeoutMs: 0, maxLifetimeMs: 0 })
  assert.equal(ticks.length, 0)
})

test('the sweeper ends idle streams and streams past their lifetime, not before', () => {
  const { t, clock, ticks, hits } = table({ idleTimeoutMs: 2000, maxLifetimeMs: 10_000 })
  assert.equal(ticks.length, 1)
  assert.equal(ticks[0]?.every, 500)
  const stops: Stop[] = []
  const idle = live(t, clock.now, stops)
  const busy = live(t, clock.now, stops)
  assert.match(idle.id, /^s-gw-/)
  assert.match(idle.session.id, /^c-gw-/)
  clock.now += 1999
  t.sweep()
  assert.deepEqual(stops, [])
  ;(busy.relay as { lastActivity: number }).lastActivity = clock.now
  clock.now += 1
  ticks[0]?.tick()
  assert.deepEqual(stops, [
    {
      endedBy: 'limit',
      reason: 'limit:idle-timeout',
      error: { code: 'PFG_ERR_LIMIT_IDLE', message: 'no bytes either way for 2000 ms' },
    },
  ])
  clock.now = 1000 + 10_000
  ;(busy.relay as { lastActivity: number }).lastActivity = clock.now
  t.sweep()
  assert.equal((stops as Stop[])[1]?.reason, 'limit:max-lifetime')
  assert.deepEqual(hits, ['idle-timeout', 'max-lifetime'])
  t.stop()
  assert.equal(ticks.length, 0)
})

test('per-user counts: reserved, live, released and removed', () => {
  const { t, clock } = table({ idleTimeoutMs: 0, maxLifetimeMs: 0 })
  const s = live(t, clock.now, [])
  assert.equal(t.userStreams(ALICE.user), 1)
  assert.equal(s.session.pending, 0)
  assert.equal(t.streamCount, 1)
  t.reserve(s.session, ALICE.user)
  assert.equal(t.userStreams(ALICE.user), 2)
  t.release(s.session, ALICE.user)
  t.remove(s)
  assert.equal(t.userStreams(ALICE.user), 0)
  assert.equal(t.streamCount, 0)
  assert.equal(t.sessionCount, 1)
  t.removeSession(s.session)
  assert.equal(t.sessionCount, 0)
})
