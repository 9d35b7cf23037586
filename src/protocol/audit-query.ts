/**
 * What an audit query means: the filters of `pfgate audit query` and of the admin
 * console's audit search, in one place so that both answer the same question the same
 * way. A query is a set of named text values (the CLI's options, the console's URL
 * parameters); every filter given must match, and a comma-separated list matches any
 * of its values. docs/audit.md describes each filter.
 *
 * @module
 */
import type { AuditRecord } from './audit-record.js'

/** The filters, by name (`--user`, `?user=` …). */
export const AUDIT_FILTERS = [
  'user',
  'gateway',
  'namespace',
  'pod',
  'port',
  'type',
  'outcome',
  'session',
  'stream',
  'since',
  'until',
] as const

export type AuditFilterName = (typeof AUDIT_FILTERS)[number]

/** A query's values as given (unset or empty: no such filter). */
export type AuditQueryInput = Partial<Record<AuditFilterName, string>>

/** Outcomes the `outcome` filter accepts. */
export const OUTCOMES = ['ok', 'denied', 'failed', 'error', 'limit', 'admin', 'restart'] as const

export type AuditOutcome = (typeof OUTCOMES)[number]

/** The outcome of a record, as the `outcome` filter matches it (see docs/audit.md). */
export function recordOutcome(r: AuditRecord): AuditOutcome {
  if (r.type === 'stream.denied' || r.type === 'request.denied') return 'denied'
  if (r.type === 'denials.suppressed') return 'denied'
  if (r.type === 'stream.failed') return 'failed'
  switch (r.endedBy) {
    case 'error':
      return 'error'
    case 'limit':
      return 'limit'
    case 'admin':
      return 'admin'
    case 'gateway-restart':
      return 'restart'
    default:
      return r.error !== undefined ? 'error' : 'ok'
  }
}

/** A bad value in a filter; `filter` names it. */
export class AuditQueryError extends Error {
  readonly filter: AuditFilterName
  constructor(filter: AuditFilterName, message: string) {
    super(message)
    this.filter = filter
  }
}

/** A parsed query. */
export interface AuditQuery {
  /** True when the record matches every filter. */
  matches: (r: AuditRecord) => boolean
  /** The `since` bound (ms since epoch), when given. */
  since: number | undefined
  /** The `until` bound (ms since epoch, exclusive), when given. */
  until: number | undefined
}

/** At most this many values in one list, and this long a value: a query is bounded. */
export const MAX_FILTER_VALUES = 64
export const MAX_FILTER_LENGTH = 1024

/**
 * Parses a query; `now` is the clock for durations (`15m` ago). `flag` is how a message
 * names a filter (the CLI: `--user`; the console: `user`). Throws {@link AuditQueryError}.
 */
export function parseAuditQuery(
  input: AuditQueryInput,
  now: number,
  flag: (name: AuditFilterName) => string = (n) => n,
): AuditQuery {
  const filters: ((r: AuditRecord) => boolean)[] = []
  const list = (name: AuditFilterName): string[] | undefined => {
    const v = input[name]
    if (v === undefined) return undefined
    if (v.length > MAX_FILTER_LENGTH)
      throw new AuditQueryError(
        name,
        `${flag(name)} is longer than ${MAX_FILTER_LENGTH} characters`,
      )
    const values = v
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '')
    if (values.length === 0) throw new AuditQueryError(name, `${flag(name)} needs a value`)
    if (values.length > MAX_FILTER_VALUES)
      throw new AuditQueryError(name, `${flag(name)} has more than ${MAX_FILTER_VALUES} values`)
    return values
  }
  const users = list('user')
  if (users !== undefined) {
    // A session's users, or a summary's, count too.
    const wanted = new Set(users)
    filters.push(
      (r) =>
        (r.user !== undefined && wanted.has(r.user)) ||
        (Array.isArray(r.users) && r.users.some((u) => wanted.has(u))),
    )
  }
  const eq = (name: AuditFilterName, get: (r: AuditRecord) => string | undefined): void => {
    const values = list(name)
    if (values === undefined) return
    const wanted = new Set(values)
    filters.push((r) => {
      const got = get(r)
      return got !== undefined && wanted.has(got)
    })
  }
  eq('gateway', (r) => r.gateway)
  eq('namespace', (r) => r.namespace)
  eq('pod', (r) => r.pod)
  eq('session', (r) => r.sessionId)
  eq('stream', (r) => r.streamId)
  const ports = list('port')?.map((p) => {
    const n = Number(p)
    if (!/^\d+$/.test(p) || n < 1 || n > 65535)
      throw new AuditQueryError(
        'port',
        `${flag('port')} must be 1..65535, not ${JSON.stringify(p)}`,
      )
    return n
  })
  if (ports !== undefined) filters.push((r) => r.port !== undefined && ports.includes(r.port))
  const types = list('type')
  if (types !== undefined) {
    for (const t of types)
      if (!/^[a-z]+(\.[a-z]+)?$/.test(t))
        throw new AuditQueryError('type', `bad ${flag('type')} ${JSON.stringify(t)}`)
    filters.push((r) => types.some((t) => r.type === t || r.type.startsWith(`${t}.`)))
  }
  const outcomes = list('outcome')
  if (outcomes !== undefined) {
    for (const o of outcomes)
      if (!(OUTCOMES as readonly string[]).includes(o))
        throw new AuditQueryError(
          'outcome',
          `${flag('outcome')} must be one of ${OUTCOMES.join(', ')}, not ${JSON.stringify(o)}`,
        )
    filters.push((r) => outcomes.includes(recordOutcome(r)))
  }
  const time = (name: 'since' | 'until'): number | undefined => {
    const v = input[name]
    return v === undefined ? undefined : parseQueryTime(name, v, now, flag)
  }
  const since = time('since')
  const until = time('until')
  if (since !== undefined) filters.push((r) => Date.parse(r.time) >= since)
  if (until !== undefined) filters.push((r) => Date.parse(r.time) < until)
  return { matches: (r) => filters.every((f) => f(r)), since, until }
}

/** RFC 3339 (or any Date.parse-able date), or a duration ago: `90s`, `15m`, `2h`, `7d`. */
export function parseQueryTime(
  name: 'since' | 'until',
  value: string,
  now: number,
  flag: (name: AuditFilterName) => string = (n) => n,
): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(value.trim())
  if (m !== null) {
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms']
    return now - Number(m[1]) * unit
  }
  const t = /^\d{4}-\d{2}-\d{2}/.test(value) ? Date.parse(value) : NaN
  if (Number.isNaN(t))
    throw new AuditQueryError(
      name,
      `${flag(name)} must be a time (2024-05-01T10:00:00Z) or a duration ago (30s, 15m, 2h, 7d), not ${JSON.stringify(value)}`,
    )
  return t
}
