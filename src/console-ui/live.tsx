/** The live view: gateway-wide charts, and the sessions and streams with their rates. */
import { useEffect, useMemo, useRef, useState } from 'preact/hooks'
import { send } from './api.js'
import type { Me } from './api.js'
import { Chart, Sparkline } from './charts.js'
import { formatAge, formatBytes, formatRate } from './format.js'
import type {
  GatewayPoint,
  LiveSample as Sample,
  StreamSample as StreamRow,
} from '../protocol/console-view.js'

/** Points kept per stream for its rate chart (one a second). */
const SPARK_POINTS = 60
/** Gateway-wide points shown (one a second: ten minutes). */
const HISTORY_POINTS = 600

type Kill = { kind: 'stream' | 'session'; id: string; what: string }

function useLive(): {
  history: GatewayPoint[]
  sample: Sample | undefined
  rates: Map<string, number[]>
  state: string
} {
  const [history, setHistory] = useState<GatewayPoint[]>([])
  const [sample, setSample] = useState<Sample | undefined>(undefined)
  const [state, setState] = useState('connecting')
  const rates = useRef(new Map<string, number[]>())
  useEffect(() => {
    const es = new EventSource('api/live')
    es.addEventListener('open', () => setState('live'))
    es.addEventListener('error', () => setState('reconnecting'))
    es.addEventListener('history', (e) => {
      setHistory(
        (JSON.parse((e as MessageEvent<string>).data) as GatewayPoint[]).slice(-HISTORY_POINTS),
      )
    })
    es.addEventListener('sample', (e) => {
      const s = JSON.parse((e as MessageEvent<string>).data) as Sample
      const next = new Map<string, number[]>()
      for (const st of s.streams) {
        const prev = rates.current.get(st.id) ?? []
        next.set(st.id, [...prev, st.rateClientToPod + st.ratePodToClient].slice(-SPARK_POINTS))
      }
      rates.current = next
      setHistory((h) => [...h, s.gateway].slice(-HISTORY_POINTS))
      setSample(s)
      setState('live')
    })
    return () => es.close()
  }, [])
  return { history, sample, rates: rates.current, state }
}

type StreamKey = 'user' | 'source' | 'protocol' | 'target' | 'node' | 'age' | 'bytes' | 'rate'

const STREAM_COLUMNS: { key: StreamKey; label: string }[] = [
  { key: 'user', label: 'User' },
  { key: 'source', label: 'Source' },
  { key: 'protocol', label: 'Protocol' },
  { key: 'target', label: 'Target' },
  { key: 'node', label: 'Node' },
  { key: 'age', label: 'Age' },
  { key: 'bytes', label: 'Bytes (to pod / to client)' },
  { key: 'rate', label: 'Rate' },
]

function sortValue(s: StreamRow, key: StreamKey): string | number {
  switch (key) {
    case 'user':
      return s.user
    case 'source':
      return s.sourceAddress
    case 'protocol':
      return s.protocol
    case 'target':
      return `${s.namespace}/${s.pod}:${s.port}`
    case 'node':
      return s.node
    case 'age':
      return -Date.parse(s.openedAt)
    case 'bytes':
      return s.bytesClientToPod + s.bytesPodToClient
    case 'rate':
      return s.rateClientToPod + s.ratePodToClient
  }
}

function matches(filter: string, ...fields: string[]): boolean {
  const f = filter.trim().toLowerCase()
  return f === '' || fields.some((x) => x.toLowerCase().includes(f))
}

export function LiveView({
  me,
  announce,
  onTimeline,
}: {
  me: Me
  announce: (message: string) => void
  onTimeline: (streamId: string) => void
}) {
  const { history, sample, rates, state } = useLive()
  const [filter, setFilter] = useState('')
  const [sort, setSort] = useState<{ key: StreamKey; desc: boolean }>({ key: 'age', desc: false })
  const [kill, setKill] = useState<Kill | undefined>(undefined)
  const dialog = useRef<HTMLDialogElement>(null)
  const now = sample?.gateway.t ?? Date.now()

  const xs = useMemo(() => history.map((p) => p.t / 1000), [history])
  const opens = useMemo(() => history.map((p) => p.opensPerSec), [history])
  const bytes = useMemo(() => history.map((p) => p.bytesPerSec), [history])
  const denials = useMemo(() => history.map((p) => p.denialsPerSec), [history])

  const streams = useMemo(() => {
    const rows = (sample?.streams ?? []).filter((s) =>
      matches(
        filter,
        s.service ?? '',
        s.user,
        s.sourceAddress,
        s.protocol,
        s.namespace,
        s.pod,
        s.node,
        String(s.port),
        s.id,
      ),
    )
    const dir = sort.desc ? -1 : 1
    return rows.sort((a, b) => {
      const x = sortValue(a, sort.key)
      const y = sortValue(b, sort.key)
      return (x < y ? -1 : x > y ? 1 : 0) * dir
    })
  }, [sample, filter, sort])
  const sessions = (sample?.sessions ?? []).filter((s) =>
    matches(filter, s.id, s.sourceAddress, s.protocol, ...s.users),
  )

  useEffect(() => {
    if (kill !== undefined && dialog.current !== null && !dialog.current.open)
      dialog.current.showModal()
  }, [kill])

  const confirmKill = async (): Promise<void> => {
    const k = kill
    dialog.current?.close()
    setKill(undefined)
    if (k === undefined) return
    try {
      await send(
        'DELETE',
        `api/${k.kind === 'stream' ? 'streams' : 'sessions'}/${encodeURIComponent(k.id)}`,
        me.csrf,
      )
      announce(`Ended ${k.kind} ${k.id}.`)
    } catch (err) {
      announce(`Could not end ${k.kind} ${k.id}: ${(err as Error).message}`)
    }
  }

  const header = (key: StreamKey, label: string) => {
    const active = sort.key === key
    return (
      <th scope="col" aria-sort={active ? (sort.desc ? 'descending' : 'ascending') : 'none'}>
        <button
          type="button"
          class="sort"
          onClick={() =>
            setSort({ key, desc: active ? !sort.desc : key === 'bytes' || key === 'rate' })
          }
        >
          {label}
          <span aria-hidden="true">{active ? (sort.desc ? ' ▼' : ' ▲') : ''}</span>
        </button>
      </th>
    )
  }

  return (
    <section aria-labelledby="live-title">
      <h2 id="live-title">
        Live <span class={`badge ${state}`}>{state}</span>
      </h2>
      <div class="charts">
        <Chart title="Streams opened per second" xs={xs} ys={opens} format={(v) => v.toFixed(1)} />
        <Chart title="Bytes relayed per second" xs={xs} ys={bytes} format={formatRate} />
        <Chart title="Denials per second" xs={xs} ys={denials} format={(v) => v.toFixed(1)} />
      </div>
      <p>
        <label for="live-filter">Filter sessions and streams</label>{' '}
        <input
          id="live-filter"
          type="search"
          value={filter}
          placeholder="user, pod, address…"
          onInput={(e) => setFilter((e.target as HTMLInputElement).value)}
        />
      </p>
      <table class="data" id="streams">
        <caption>
          Streams ({streams.length}
          {sample !== undefined && sample.totalStreams > sample.streams.length
            ? ` of ${sample.totalStreams}, the busiest shown`
            : ''}
          )
        </caption>
        <thead>
          <tr>
            {STREAM_COLUMNS.map((c) => header(c.key, c.label))}
            <th scope="col">Rate, last minute</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {streams.length === 0 ? (
            <tr>
              <td colSpan={10}>No live streams.</td>
            </tr>
          ) : (
            streams.map((s) => (
              <tr key={s.id} data-stream={s.id}>
                <td>{s.user}</td>
                <td>{s.sourceAddress}</td>
                <td>{s.protocol}</td>
                <td>
                  {s.namespace}/{s.pod}:{s.port}
                  {s.transport !== undefined && s.transport !== 'tcp' ? `/${s.transport}` : ''}
                  {s.service !== undefined ? ` (via ${s.service})` : ''}
                </td>
                <td>{s.node}</td>
                <td>{formatAge(s.openedAt, now)}</td>
                <td class="num" data-bytes={s.bytesClientToPod + s.bytesPodToClient}>
                  {formatBytes(s.bytesClientToPod)} / {formatBytes(s.bytesPodToClient)}
                </td>
                <td class="num">{formatRate(s.rateClientToPod + s.ratePodToClient)}</td>
                <td>
                  <Sparkline
                    values={rates.get(s.id) ?? []}
                    label={`Rate of stream ${s.id} over the last minute`}
                  />
                </td>
                <td class="actions">
                  <button
                    type="button"
                    onClick={() => onTimeline(s.id)}
                    aria-label={`Timeline of stream ${s.id}`}
                  >
                    Timeline
                  </button>{' '}
                  <EndButton
                    label={`End stream ${s.id}`}
                    onClick={() =>
                      setKill({
                        kind: 'stream',
                        id: s.id,
                        what: `${s.user}'s stream to ${s.namespace}/${s.pod}:${s.port}`,
                      })
                    }
                  />
                </td>
              </tr>
            ))
          )}
        </tbody>
      </table>
      <table class="data" id="sessions">
        <caption>Client sessions ({sessions.length})</caption>
        <thead>
          <tr>
            <th scope="col">Session</th>
            <th scope="col">Users</th>
            <th scope="col">Source</th>
            <th scope="col">Protocol</th>
            <th scope="col">Age</th>
            <th scope="col">Streams</th>
            <th scope="col">Bytes (to pod / to client)</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {sessions.length === 0 ? (
            <tr>
              <td colSpan={8}>No client sessions.</td>
            </tr>
          ) : (
            sessions.map((s) => (
              <tr key={s.id} data-session={s.id}>
                <td>{s.id}</td>
                <td>{s.users.join(', ')}</td>
                <td>{s.sourceAddress}</td>
                <td>{s.protocol}</td>
                <td>{formatAge(s.openedAt, now)}</td>
                <td class="num">{s.streams}</td>
                <td class="num">
                  {formatBytes(s.bytesClientToPod)} / {formatBytes(s.bytesPodToClient)}
                </td>
                <td class="actions">
                  <EndButton
                    label={`End session ${s.id}`}
                    onClick={() =>
                      setKill({
                        kind: 'session',
                        id: s.id,
                        what: `the session of ${s.users.join(', ')} from ${s.sourceAddress}`,
                      })
                    }
                  />
                </td>
              </tr>
            ))
          )}
        </tbody>
      </table>
      <dialog ref={dialog} aria-labelledby="kill-title" onClose={() => setKill(undefined)}>
        <h3 id="kill-title">End {kill?.kind}?</h3>
        <p>
          End {kill?.what} ({kill?.id})? Its client sees a reset, and the audit record names you (
          {me.user}).
        </p>
        <div class="buttons">
          <button type="button" autofocus onClick={() => dialog.current?.close()}>
            Cancel
          </button>{' '}
          <button type="button" class="danger" onClick={() => void confirmKill()}>
            End {kill?.kind}
          </button>
        </div>
      </dialog>
    </section>
  )
}

/** The button that asks to end a stream or a session (a confirmation follows). */
function EndButton(props: { label: string; onClick: () => void }) {
  return (
    <button type="button" class="danger" aria-label={props.label} onClick={props.onClick}>
      End…
    </button>
  )
}
