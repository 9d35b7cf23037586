/**
 * The audit query semantics shared by `pfgate audit query` and the admin console's
 * search (src/protocol/audit-query.ts).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { AuditQueryError, parseAuditQuery, recordOutcome } from '../../src/protocol/audit-query.js'
import type { AuditRecord } from '../../src/protocol/audit-record.js'

const NOW = Date.parse('2026-01-01T12:00:00Z')

function rec(fields: Partial<AuditRecord>): AuditRecord {
  return {
    schema: 'pfgate.audit/v2',
    id: 'x',
    time: '2026-01-01T11:59:00.000Z',
    type: 'stream.closed',
    ...fields,
  }
}

test('every filter must match; a list matches any of its values', () => {
  const q = parseAuditQuery({ user: 'alice, bob', port: '80,8080', outcome: 'ok' }, NOW)
  assert.equal(q.matches(rec({ user: 'bob', port: 8080 })), true)
  assert.equal(q.matches(rec({ user: 'carol', port: 8080 })), false)
  assert.equal(q.matches(rec({ user: 'bob', port: 443 })), false)
  assert.equal(q.matches(rec({ user: 'bob', port: 80, endedBy: 'admin' })), false)
  // A session's users count for the user filter.
  assert.equal(
    parseAuditQuery({ user: 'alice' }, NOW).matches(
      rec({ type: 'session.closed', users: ['x', 'alice'] }),
    ),
    true,
  )
})

test('type matches a whole type or its prefix; outcome follows the record', () => {
  const q = parseAuditQuery({ type: 'session' }, NOW)
  assert.equal(q.matches(rec({ type: 'session.opened' })), true)
  assert.equal(q.matches(rec({ type: 'stream.opened' })), false)
  assert.equal(recordOutcome(rec({ type: 'request.denied' })), 'denied')
  assert.equal(recordOutcome(rec({ type: 'stream.failed' })), 'failed')
  assert.equal(recordOutcome(rec({ endedBy: 'admin' })), 'admin')
  assert.equal(recordOutcome(rec({ endedBy: 'gateway-restart' })), 'restart')
  assert.equal(recordOutcome(rec({ endedBy: 'pod' })), 'ok')
})

test('time bounds: a duration ago or an RFC 3339 time; until is exclusive', () => {
  const q = parseAuditQuery({ since: '2m', until: '2026-01-01T11:59:30Z' }, NOW)
  assert.equal(q.since, NOW - 120_000)
  assert.equal(q.matches(rec({ time: '2026-01-01T11:59:00.000Z' })), true)
  assert.equal(q.matches(rec({ time: '2026-01-01T11:59:30.000Z' })), false)
  assert.equal(q.matches(rec({ time: '2026-01-01T11:57:59.000Z' })), false)
})

test('bad values are refused with the filter named as the caller names it', () => {
  const bad: [Record<string, string>, string, RegExp][] = [
    [{ port: '0' }, 'port', /--port must be 1\.\.65535/],
    [{ outcome: 'maybe' }, 'outcome', /--outcome must be one of ok, denied/],
    [{ type: 'Stream!' }, 'type', /bad --type/],
    [{ since: 'yesterday' }, 'since', /--since must be a time/],
    [{ user: ' , ' }, 'user', /--user needs a value/],
    [{ pod: 'p'.repeat(2000) }, 'pod', /--pod is longer than/],
  ]
  for (const [input, filter, message] of bad) {
    assert.throws(
      () => parseAuditQuery(input, NOW, (n) => `--${n}`),
      (err: unknown) =>
        err instanceof AuditQueryError && err.filter === filter && message.test(err.message),
      JSON.stringify(input),
    )
  }
  assert.throws(() => parseAuditQuery({ port: 'x' }, NOW), /^Error: port must be/)
})
