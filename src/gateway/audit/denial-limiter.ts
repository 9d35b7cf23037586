/**
 * The flood budget for refusals. Anyone who can reach the gateway can make it refuse
 * requests, as fast as the network allows; recorded one by one, those refusals would
 * fill disks, logs and collectors (and, before the denials trail existed, rotate real
 * history away). So each source gets a token bucket (`rate` records per second, bursts of
 * `burst`) and all sources share one more (`totalRate`, `totalBurst`): a refusal with
 * tokens in both is recorded (and logged) on its own; any other is only counted, and
 * every `summaryInterval` each source's count becomes one `denials.suppressed` record
 * (docs/audit.md, "Denial floods").
 *
 * A source is a client IP address; IPv6 addresses count per /64 (one host gets a whole
 * /64, so per-address buckets would be free to multiply). Memory is bounded: at most
 * {@link MAX_DENIAL_SOURCES} sources are tracked; idle ones are forgotten at each summary,
 * and while the table is full, new sources share one overflow bucket. At most
 * {@link MAX_SUMMARIES} per-source summaries are written per interval (the largest
 * counts); the rest are folded into one summary without a `sourceAddress`.
 *
 * @module
 */
import { AUDIT_SCHEMA } from '../../protocol/audit-record.js'
import type { AuditRecord } from '../../protocol/audit-record.js'
import { newAuditId } from './record.js'

/** The budget (config `audit.denials`). */
export interface DenialLimits {
  /** Refusals per second a source may have recorded one by one (its bucket's refill). */
  rate: number
  /** The size of a source's bucket: a burst recorded one by one. */
  burst: number
  /** The same for all sources together. */
  totalRate: number
  totalBurst: number
  /** How often suppressed refusals are summarized (ms). */
  summaryIntervalMs: number
}

/** Defaults: 20 at once and then 1 a second per source; 200 and 50 a second in all. */
export const DEFAULT_DENIAL_LIMITS: DenialLimits = {
  rate: 1,
  burst: 20,
  totalRate: 50,
  totalBurst: 200,
  summaryIntervalMs: 10_000,
}

/** The most sources tracked at once (about 200 bytes each). */
export const MAX_DENIAL_SOURCES = 4096
/** The most per-source summaries written per interval. */
export const MAX_SUMMARIES = 100
/** The most users a summary names. */
const MAX_SUMMARY_USERS = 8
/** The key of the shared bucket of sources that found the table full. */
const OVERFLOW = '*'

interface Bucket {
  tokens: number
  at: number
}

interface Source {
  bucket: Bucket
  /** Refusals counted, not recorded, since the last summary. */
  suppressed: number
  first: number
  last: number
  reasons: Map<string, number>
  users: Set<string>
}

/** The source a client address counts as: its IP, or its /64 for IPv6. */
export function denialSourceKey(address: string | undefined): string {
  if (address === undefined || address === '') return 'unknown'
  let host = address
  if (host.startsWith('[')) {
    const end = host.indexOf(']')
    host = host.slice(1, end === -1 ? undefined : end)
  } else if (host.indexOf(':') === host.lastIndexOf(':')) {
    // `ip:port` (one colon): drop the port. A bare IPv6 address has several.
    const colon = host.indexOf(':')
    if (colon !== -1) host = host.slice(0, colon)
  }
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(host)
  if (mapped !== null) return mapped[1] as string
  return host.includes(':') ? ipv6Prefix64(host) : host
}

/** `2001:db8:1:2:3:4:5:6` → `2001:db8:1:2::/64`. */
function ipv6Prefix64(address: string): string {
  const zone = address.indexOf('%')
  const a = zone === -1 ? address : address.slice(0, zone)
  const [head = '', tail] = a.split('::', 2) as [string, string | undefined]
  const split = (s: string): string[] => (s === '' ? [] : s.split(':'))
  const h = split(head)
  const t = tail === undefined ? [] : split(tail)
  // An embedded IPv4 address takes two groups.
  const width = (g: string[]): number => g.reduce((n, x) => n + (x.includes('.') ? 2 : 1), 0)
  const groups =
    tail === undefined
      ? h
      : [...h, ...Array<string>(Math.max(0, 8 - width(h) - width(t))).fill('0'), ...t]
  const first = groups
    .slice(0, 4)
    .map((g) => (/^[0-9a-f]{1,4}$/i.test(g) ? parseInt(g, 16).toString(16) : '0'))
  while (first.length < 4) first.push('0')
  return `${first.join(':')}::/64`
}

/** The flood budget (see the module comment). */
export class DenialLimiter {
  readonly #limits: DenialLimits
  readonly #now: () => number
  readonly #sources = new Map<string, Source>()
  readonly #total: Bucket
  #suppressedTotal = 0

  constructor(limits: DenialLimits, now: () => number = Date.now) {
    for (const k of ['rate', 'burst', 'totalRate', 'totalBurst', 'summaryIntervalMs'] as const)
      if (!(limits[k] > 0)) throw new RangeError(`denial limit ${k} must be > 0`)
    this.#limits = limits
    this.#now = now
    this.#total = { tokens: limits.totalBurst, at: now() }
  }

  /** Sources tracked now (for tests and metrics). */
  get sources(): number {
    return this.#sources.size
  }

  /** Refusals counted instead of recorded since start. */
  get suppressedTotal(): number {
    return this.#suppressedTotal
  }

  /**
   * Decides for one refusal: true to record it (a token was taken from its source's bucket
   * and the shared one), false when it is only counted toward its source's summary.
   */
  admit(record: AuditRecord): boolean {
    const now = this.#now()
    const source = this.#source(denialSourceKey(record.sourceAddress), now)
    const l = this.#limits
    refill(source.bucket, l.rate, l.burst, now)
    refill(this.#total, l.totalRate, l.totalBurst, now)
    if (source.bucket.tokens >= 1 && this.#total.tokens >= 1) {
      source.bucket.tokens--
      this.#total.tokens--
      return true
    }
    if (source.suppressed === 0) source.first = now
    source.suppressed++
    source.last = now
    this.#suppressedTotal++
    const reason = record.reason ?? 'unknown'
    // Reason words are few (docs/audit.md), so this map stays small.
    source.reasons.set(reason, (source.reasons.get(reason) ?? 0) + 1)
    if (record.user !== undefined && source.users.size < MAX_SUMMARY_USERS)
      source.users.add(record.user)
    return false
  }

  /**
   * The `denials.suppressed` records for what was counted since the last call (oldest
   * first), and forgets sources that have been quiet long enough to have a full bucket.
   */
  summaries(gatewayId: string): AuditRecord[] {
    const now = this.#now()
    const pending: [string, Source][] = []
    for (const [key, s] of this.#sources) {
      if (s.suppressed > 0) pending.push([key, s])
      else {
        refill(s.bucket, this.#limits.rate, this.#limits.burst, now)
        if (s.bucket.tokens >= this.#limits.burst) this.#sources.delete(key)
      }
    }
    pending.sort((a, b) => b[1].suppressed - a[1].suppressed)
    const out: AuditRecord[] = []
    let rest: Source | undefined
    for (const [i, [key, s]] of pending.entries()) {
      if (i < MAX_SUMMARIES && key !== OVERFLOW) {
        out.push(summary(gatewayId, now, s, key))
      } else {
        rest ??= newSource(now, 0)
        rest.suppressed += s.suppressed
        rest.first = rest.suppressed === s.suppressed ? s.first : Math.min(rest.first, s.first)
        rest.last = Math.max(rest.last, s.last)
        for (const [r, n] of s.reasons) rest.reasons.set(r, (rest.reasons.get(r) ?? 0) + n)
        for (const u of s.users) if (rest.users.size < MAX_SUMMARY_USERS) rest.users.add(u)
      }
      s.suppressed = 0
      s.reasons.clear()
      s.users.clear()
    }
    if (rest !== undefined) out.push(summary(gatewayId, now, rest, undefined))
    return out.sort((a, b) => (a.firstTime ?? '').localeCompare(b.firstTime ?? ''))
  }

  #source(key: string, now: number): Source {
    const known = this.#sources.get(key)
    if (known !== undefined) return known
    if (this.#sources.size >= MAX_DENIAL_SOURCES) {
      // Forget the oldest source if it is idle; else share the overflow bucket.
      const [oldKey, old] = this.#sources.entries().next().value as [string, Source]
      refill(old.bucket, this.#limits.rate, this.#limits.burst, now)
      if (old.suppressed === 0 && old.bucket.tokens >= this.#limits.burst && oldKey !== OVERFLOW)
        this.#sources.delete(oldKey)
      else return this.#overflow(now)
    }
    const s = newSource(now, this.#limits.burst)
    this.#sources.set(key, s)
    return s
  }

  #overflow(now: number): Source {
    let s = this.#sources.get(OVERFLOW)
    if (s === undefined) {
      // Beyond the table's bound by one entry at most.
      s = newSource(now, this.#limits.burst)
      this.#sources.set(OVERFLOW, s)
    }
    return s
  }
}

function newSource(now: number, tokens: number): Source {
  return {
    bucket: { tokens, at: now },
    suppressed: 0,
    first: now,
    last: now,
    reasons: new Map(),
    users: new Set(),
  }
}

function refill(b: Bucket, rate: number, burst: number, now: number): void {
  if (now > b.at) b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * rate)
  b.at = now
}

function summary(gatewayId: string, now: number, s: Source, key: string | undefined): AuditRecord {
  const rec: AuditRecord = {
    schema: AUDIT_SCHEMA,
    id: newAuditId(),
    time: new Date(now).toISOString(),
    type: 'denials.suppressed',
    gateway: gatewayId,
    count: s.suppressed,
    firstTime: new Date(s.first).toISOString(),
    lastTime: new Date(s.last).toISOString(),
    reasons: Object.fromEntries([...s.reasons].sort((a, b) => b[1] - a[1])),
  }
  if (key !== undefined) rec.sourceAddress = key
  if (s.users.size > 0) rec.users = [...s.users]
  return rec
}
