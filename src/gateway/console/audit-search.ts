/**
 * The console's audit search: the filters of `pfgate audit query`
 * (src/protocol/audit-query.ts), newest first, a page at a time, and the export of a
 * whole result as JSON lines or CSV. Memory is bounded by the page window, not by the
 * trail: a search keeps only the last `(page + 1) × size` matches while it reads.
 *
 * @module
 */
import type { AuditRecord } from '../../protocol/audit-record.js'
import type { AuditQuery, AuditQueryInput } from '../../protocol/audit-query.js'
import {
  AUDIT_FILTERS,
  AuditQueryError,
  parseAuditQuery,
  recordOutcome,
} from '../../protocol/audit-query.js'
import { appError } from '../../shared/errors.js'

/** The deepest a page may reach (page × size): older records are for `pfgate audit query`. */
export const MAX_WINDOW = 10_000
export const MAX_PAGE_SIZE = 500

export interface AuditPage {
  items: (AuditRecord & { outcome: string })[]
  /** Matching records in the whole trail. */
  total: number
  page: number
  size: number
}

function withOutcome(r: AuditRecord): AuditRecord & { outcome: string } {
  return { ...r, outcome: recordOutcome(r) }
}

/** One page of the matching records, newest first (page 0 is the newest). */
export async function searchAudit(
  records: AsyncIterable<AuditRecord>,
  query: AuditQuery,
  page: number,
  size: number,
): Promise<AuditPage> {
  const window = (page + 1) * size
  const ring: AuditRecord[] = new Array<AuditRecord>(window)
  let total = 0
  for await (const r of records) {
    if (!query.matches(r)) continue
    ring[total % window] = r
    total++
  }
  const items: (AuditRecord & { outcome: string })[] = []
  // Newest first: index total-1 is the newest match.
  for (let i = total - 1 - page * size; i >= 0 && i >= total - window; i--) {
    items.push(withOutcome(ring[i % window] as AuditRecord))
  }
  return { items, total, page, size }
}

/** The records of one stream (and its session's open and close), oldest first. */
export async function streamTimeline(
  records: AsyncIterable<AuditRecord>,
  streamId: string,
  max = 1000,
): Promise<(AuditRecord & { outcome: string })[]> {
  const out: (AuditRecord & { outcome: string })[] = []
  let sessionId: string | undefined
  const session: AuditRecord[] = []
  for await (const r of records) {
    if (r.streamId === streamId) {
      sessionId ??= r.sessionId
      if (out.length < max) out.push(withOutcome(r))
    } else if (r.sessionId !== undefined && r.type.startsWith('session.')) {
      // Kept until the stream's session is known (a session has two such records).
      if (session.length < 2 * max) session.push(r)
    }
  }
  if (out.length === 0) return out
  const own = session.filter((r) => r.sessionId === sessionId).map(withOutcome)
  return [...own, ...out].sort((a, b) => Date.parse(a.time) - Date.parse(b.time))
}

/** CSV columns of an export, in order. */
export const CSV_COLUMNS = [
  'time',
  'type',
  'outcome',
  'user',
  'sourceAddress',
  'protocol',
  'sessionId',
  'streamId',
  'namespace',
  'pod',
  'port',
  'node',
  'bytesClientToPod',
  'bytesPodToClient',
  'durationMs',
  'endedBy',
  'endedByUser',
  'reason',
  'status',
  'errorCode',
  'errorMessage',
  'ref',
  'id',
] as const

/**
 * One CSV field (RFC 4180 quoting). A text that a spreadsheet would run as a formula
 * (`=`, `+`, `-`, `@`, tab, CR first) gets a leading `'`: records hold client-chosen text.
 */
export function csvField(value: unknown): string {
  if (value === undefined || value === null) return ''
  if (typeof value === 'number') return String(value)
  let s: string
  if (Array.isArray(value)) s = value.join(' ')
  else if (typeof value === 'string') s = value
  else s = JSON.stringify(value)
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s
}

/** One record as a CSV line (CRLF-terminated). */
export function csvLine(r: AuditRecord): string {
  const cells = CSV_COLUMNS.map((c) => {
    switch (c) {
      case 'outcome':
        return recordOutcome(r)
      case 'user':
        return r.user ?? r.users?.join(' ')
      case 'errorCode':
        return r.error?.code
      case 'errorMessage':
        return r.error?.message
      default:
        return r[c]
    }
  })
  return `${cells.map(csvField).join(',')}\r\n`
}

export const CSV_HEADER = `${CSV_COLUMNS.join(',')}\r\n`

/** The audit filters of a query string (and the named extra parameters); 400 on anything else. */
export function auditQuery(
  raw: unknown,
  extraNames: readonly string[],
  filters = true,
): {
  query: AuditQuery
  extra: Record<string, string | undefined>
} {
  const input: AuditQueryInput = {}
  const extra: Record<string, string | undefined> = {}
  for (const [name, value] of Object.entries((raw ?? {}) as Record<string, unknown>)) {
    if (typeof value !== 'string') {
      throw appError('PFG_ERR_ROUTE_BAD_QUERY', `query parameter ${name} given more than once`)
    }
    if (extraNames.includes(name)) extra[name] = value
    else if (filters && (AUDIT_FILTERS as readonly string[]).includes(name)) {
      if (value !== '') input[name as keyof AuditQueryInput] = value
    } else throw appError('PFG_ERR_ROUTE_BAD_QUERY', `unknown query parameter ${name}`)
  }
  try {
    return { query: parseAuditQuery(input, Date.now()), extra }
  } catch (err) {
    if (err instanceof AuditQueryError) throw appError('PFG_ERR_ROUTE_BAD_QUERY', err.message)
    throw err
  }
}

function intParam(
  value: string | undefined,
  name: string,
  dflt: number,
  min: number,
  max: number,
): number {
  if (value === undefined || value === '') return dflt
  const n = Number(value)
  if (!/^\d+$/.test(value) || n < min || n > max) {
    throw appError('PFG_ERR_ROUTE_BAD_QUERY', `${name} must be ${min}..${max}`)
  }
  return n
}

/** A search's query string: the filters, `page` and `size` (400 on anything else). */
export function searchParams(raw: unknown): { query: AuditQuery; page: number; size: number } {
  const { query, extra } = auditQuery(raw, ['page', 'size'])
  const size = intParam(extra.size, 'size', 50, 1, MAX_PAGE_SIZE)
  const page = intParam(extra.page, 'page', 0, 0, Math.floor(MAX_WINDOW / size) - 1)
  return { query, page, size }
}
