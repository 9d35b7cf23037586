/** The audit search (the filters of `pfgate audit query`), a stream's timeline, exports. */
import { useEffect, useState } from 'preact/hooks'
import { getJson } from './api.js'
import { formatBytes, formatTime } from './format.js'

interface Rec {
  id: string
  time: string
  type: string
  outcome: string
  user?: string
  users?: string[]
  sourceAddress?: string
  protocol?: string
  sessionId?: string
  streamId?: string
  namespace?: string
  pod?: string
  port?: number
  node?: string
  bytesClientToPod?: number
  bytesPodToClient?: number
  durationMs?: number
  endedBy?: string
  endedByUser?: string
  reason?: string
  status?: number
  error?: { code: string; message: string }
  path?: string
  count?: number
}

interface Page {
  items: Rec[]
  total: number
  page: number
  size: number
}

const FIELDS: { name: string; label: string; hint: string }[] = [
  { name: 'user', label: 'User', hint: 'alice,bob' },
  { name: 'namespace', label: 'Namespace', hint: 'default' },
  { name: 'pod', label: 'Pod', hint: 'web-0' },
  { name: 'port', label: 'Port', hint: '8080' },
  { name: 'type', label: 'Type', hint: 'stream.closed, session' },
  { name: 'session', label: 'Session id', hint: '' },
  { name: 'stream', label: 'Stream id', hint: '' },
  { name: 'since', label: 'Since', hint: '15m or 2026-01-01T10:00:00Z' },
  { name: 'until', label: 'Until', hint: '5m or an RFC 3339 time' },
]

const OUTCOMES = ['', 'ok', 'denied', 'failed', 'error', 'limit', 'admin', 'restart']

const PAGE_SIZE = 50
const MAX_PAGES = 10_000 / PAGE_SIZE

function queryString(filters: Record<string, string>, extra: Record<string, string> = {}): string {
  const p = new URLSearchParams()
  for (const [k, v] of Object.entries({ ...filters, ...extra }))
    if (v.trim() !== '') p.set(k, v.trim())
  return p.toString()
}

function what(r: Rec): string {
  const target =
    r.pod !== undefined
      ? `${r.namespace ?? ''}/${r.pod}${r.port !== undefined ? `:${r.port}` : ''}`
      : (r.path ?? '')
  return target
}

function detail(r: Rec): string {
  const parts: string[] = []
  if (r.bytesClientToPod !== undefined)
    parts.push(`${formatBytes(r.bytesClientToPod)} / ${formatBytes(r.bytesPodToClient ?? 0)}`)
  if (r.endedBy !== undefined)
    parts.push(`ended by ${r.endedBy}${r.endedByUser !== undefined ? ` (${r.endedByUser})` : ''}`)
  if (r.reason !== undefined) parts.push(r.reason)
  if (r.status !== undefined) parts.push(`HTTP ${r.status}`)
  if (r.error !== undefined) parts.push(r.error.code)
  if (r.count !== undefined) parts.push(`${r.count} refusals`)
  return parts.join('; ')
}

export function AuditView({
  timeline,
  onTimeline,
}: {
  timeline: string | undefined
  onTimeline: (streamId: string | undefined) => void
}) {
  const [filters, setFilters] = useState<Record<string, string>>({ outcome: '' })
  const [applied, setApplied] = useState<Record<string, string>>({})
  const [page, setPage] = useState(0)
  const [result, setResult] = useState<Page | undefined>(undefined)
  const [error, setError] = useState<string | undefined>(undefined)
  const [busy, setBusy] = useState(false)
  const [events, setEvents] = useState<Rec[] | undefined>(undefined)

  const run = async (f: Record<string, string>, p: number): Promise<void> => {
    setBusy(true)
    setError(undefined)
    try {
      setResult(
        await getJson<Page>(
          `api/audit?${queryString(f, { page: String(p), size: String(PAGE_SIZE) })}`,
        ),
      )
      setApplied(f)
      setPage(p)
    } catch (err) {
      setError((err as Error).message)
    } finally {
      setBusy(false)
    }
  }

  useEffect(() => {
    void run({}, 0)
  }, [])

  useEffect(() => {
    setEvents(undefined)
    if (timeline === undefined) return
    getJson<{ items: Rec[] }>(`api/audit/timeline?${queryString({ stream: timeline })}`).then(
      (r) => setEvents(r.items),
      (err: Error) => setError(err.message),
    )
  }, [timeline])

  const pages = result !== undefined ? Math.max(1, Math.ceil(result.total / PAGE_SIZE)) : 1
  // The gateway pages as deep as 10 000 records; older ones are for `pfgate audit query`.
  const reachable = Math.min(pages, MAX_PAGES)
  const exportQs = queryString(applied)

  return (
    <section aria-labelledby="audit-title">
      <h2 id="audit-title">Audit</h2>
      {timeline !== undefined ? (
        <section class="timeline" aria-labelledby="timeline-title">
          <h3 id="timeline-title">Timeline of stream {timeline}</h3>
          {events === undefined ? (
            <p>Loading…</p>
          ) : events.length === 0 ? (
            <p>No records of this stream yet (its open record is written when it opens).</p>
          ) : (
            <ol>
              {events.map((r) => (
                <li key={r.id}>
                  <time dateTime={r.time}>{formatTime(r.time)}</time> <strong>{r.type}</strong>{' '}
                  {r.outcome} {r.user ?? r.users?.join(', ') ?? ''} {what(r)} {detail(r)}
                </li>
              ))}
            </ol>
          )}
          <button type="button" onClick={() => onTimeline(undefined)}>
            Close timeline
          </button>
        </section>
      ) : null}
      <form
        class="filters"
        aria-label="Audit filters"
        onSubmit={(e) => {
          e.preventDefault()
          void run(filters, 0)
        }}
      >
        {FIELDS.map((f) => (
          <div class="field" key={f.name}>
            <label for={`f-${f.name}`}>{f.label}</label>
            <input
              id={`f-${f.name}`}
              name={f.name}
              value={filters[f.name] ?? ''}
              placeholder={f.hint}
              onInput={(e) =>
                setFilters({ ...filters, [f.name]: (e.target as HTMLInputElement).value })
              }
            />
          </div>
        ))}
        <div class="field">
          <label for="f-outcome">Outcome</label>
          <select
            id="f-outcome"
            name="outcome"
            value={filters.outcome ?? ''}
            onChange={(e) =>
              setFilters({ ...filters, outcome: (e.target as HTMLSelectElement).value })
            }
          >
            {OUTCOMES.map((o) => (
              <option value={o} key={o}>
                {o === '' ? 'any' : o}
              </option>
            ))}
          </select>
        </div>
        <div class="field buttons">
          <button type="submit" disabled={busy}>
            Search
          </button>
        </div>
      </form>
      {error !== undefined ? (
        <p role="alert" class="error">
          {error}
        </p>
      ) : null}
      <p class="export">
        Export this result:{' '}
        <a href={`api/audit/export?${exportQs}${exportQs === '' ? '' : '&'}format=jsonl`} download>
          JSON lines
        </a>{' '}
        ·{' '}
        <a href={`api/audit/export?${exportQs}${exportQs === '' ? '' : '&'}format=csv`} download>
          CSV
        </a>
      </p>
      <table class="data" id="audit-results">
        <caption>
          {result === undefined
            ? 'Records'
            : `${result.total} matching records, newest first (page ${page + 1} of ${pages})`}
        </caption>
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Type</th>
            <th scope="col">Outcome</th>
            <th scope="col">User</th>
            <th scope="col">Source</th>
            <th scope="col">Target</th>
            <th scope="col">Details</th>
            <th scope="col">Stream</th>
          </tr>
        </thead>
        <tbody>
          {(result?.items ?? []).map((r) => (
            <tr key={r.id}>
              <td>
                <time dateTime={r.time}>{formatTime(r.time)}</time>
              </td>
              <td>{r.type}</td>
              <td class={`outcome ${r.outcome}`}>{r.outcome}</td>
              <td>{r.user ?? r.users?.join(', ') ?? ''}</td>
              <td>{r.sourceAddress ?? ''}</td>
              <td>{what(r)}</td>
              <td>{detail(r)}</td>
              <td>
                {r.streamId !== undefined ? (
                  <button
                    type="button"
                    onClick={() => onTimeline(r.streamId)}
                    aria-label={`Timeline of stream ${r.streamId}`}
                  >
                    {r.streamId}
                  </button>
                ) : (
                  ''
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <nav class="pager" aria-label="Result pages">
        <button
          type="button"
          disabled={busy || page === 0}
          onClick={() => void run(applied, page - 1)}
        >
          Newer
        </button>{' '}
        <span>
          Page {page + 1} of {pages}
        </span>{' '}
        <button
          type="button"
          disabled={busy || page + 1 >= reachable}
          onClick={() => void run(applied, page + 1)}
        >
          Older
        </button>
      </nav>
    </section>
  )
}
