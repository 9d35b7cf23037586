/**
 * Audit cost benchmark: is the audit log cheap enough for many concurrent stream opens?
 *
 * For each concurrency (1, 16, 256 by default) it measures, each for `durationMs`:
 * 1. appends/s: `c` workers appending `stream.opened` records to a blocking-strict
 *    AuditLog over a file sink with fsync=always, and the fsyncs per append (group commit);
 * 2. the stream-open rate without audit: `c` workers opening HTTP/2 streams on one
 *    loopback h2c session (the server answers 200 and one byte, then ends), a stand-in for
 *    the relay's own work per forwarded connection;
 * 3. the same with audit as the relay does it: `await append(stream.opened)` before the
 *    stream, `append(stream.closed)` after it (not awaited by the worker, but written).
 *
 * The target (issue: "audit cost ≤ 10 % of the stream-open rate") applies when many
 * streams open concurrently; at concurrency 1 every open waits for its own fsync.
 *
 * Run: `npx tsc -p tsconfig.json && node dist/bench/audit.js [durationMs]`
 *
 * @module
 */
import { connect, createServer } from 'node:http2'
import type { ClientHttp2Session, Http2Server } from 'node:http2'
import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { AuditLog } from '../src/gateway/audit/audit-log.js'
import { FileSink } from '../src/gateway/audit/file-sink.js'
import { createAuditRecord } from '../src/gateway/audit/record.js'
import type { AuditFields } from '../src/gateway/audit/record.js'

/** One line of results. */
export interface AuditBenchRow {
  concurrency: number
  /** Appends per second (blocking-strict, fsync=always). */
  appendsPerSec: number
  /** fdatasyncs per append in that run (group commit makes it ≪ 1). */
  fsyncsPerAppend: number
  /** Stream opens per second without audit. */
  opensPerSecNoAudit: number
  /** Stream opens per second with audit. */
  opensPerSecAudit: number
  /** (noAudit − audit) / noAudit, in percent: the closed-loop throughput cost. */
  overheadPct: number
  /** Process CPU per stream open without audit, µs. */
  cpuUsPerOpenNoAudit: number
  /** Process CPU per stream open with audit (two records), µs. */
  cpuUsPerOpenAudit: number
  /** Extra CPU per open with audit, in percent of the CPU per open without. */
  cpuOverheadPct: number
}

/** Options for {@link runAuditBench}. */
export interface AuditBenchOptions {
  /** Per measurement; default 1500 ms. */
  durationMs?: number
  /** Default [1, 16, 256]. */
  concurrencies?: number[]
  /** Where to put the trail (default: a temp directory on the default file system). */
  dir?: string
}

const FIELDS: AuditFields = {
  gateway: 'gw-bench',
  user: 'alice@example.com',
  groups: ['dev', 'system:authenticated'],
  sourceAddress: '[2001:db8::1]:50123',
  protocol: 'native-h2',
  userAgent: 'pfgate/0.1.0 (linux/amd64)',
  sessionId: 'c-0001',
  node: 'node-1.example.internal',
  namespace: 'default',
  pod: 'web-0',
  podUid: '3f2a7c1e-5b8d-4e0a-9c6f-1d2e3f4a5b6c',
  port: 8080,
}

/** Operations per second and process CPU time (user + system) per operation. */
interface Rate {
  perSec: number
  cpuUsPerOp: number
}

/** Runs `c` workers calling `op` until `ms` pass. */
async function rate(c: number, ms: number, op: (w: number) => Promise<void>): Promise<Rate> {
  let count = 0
  const end = performance.now() + ms
  const start = performance.now()
  const cpu0 = process.cpuUsage()
  await Promise.all(
    Array.from({ length: c }, async (_, w) => {
      while (performance.now() < end) {
        await op(w)
        count++
      }
    }),
  )
  const cpu = process.cpuUsage(cpu0)
  return {
    perSec: count / ((performance.now() - start) / 1000),
    cpuUsPerOp: (cpu.user + cpu.system) / count,
  }
}

async function h2Server(): Promise<{ server: Http2Server; session: ClientHttp2Session }> {
  const server = createServer()
  server.on('stream', (stream) => {
    stream.respond({ ':status': 200 })
    stream.end('x')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const session = connect(`http://127.0.0.1:${port}`, {
    settings: { maxConcurrentStreams: 1000 },
  })
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve())
    session.once('error', reject)
  })
  return { server, session }
}

function openStream(session: ClientHttp2Session): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': '/stream' })
    req.on('error', reject)
    req.on('data', () => {})
    req.on('end', () => resolve())
    req.end('y')
  })
}

/** Runs the benchmark and returns one row per concurrency. */
export async function runAuditBench(options: AuditBenchOptions = {}): Promise<AuditBenchRow[]> {
  const ms = options.durationMs ?? 1500
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'pfgate-bench-audit-')))
  const { server, session } = await h2Server()
  const rows: AuditBenchRow[] = []
  try {
    for (const c of options.concurrencies ?? [1, 16, 256]) {
      // 1. Raw appends.
      const sink = await FileSink.open({ path: join(dir, `append-${c}.log`), fsync: 'always' })
      const log = new AuditLog({ sinks: [sink] })
      let n = 0
      const { perSec: appendsPerSec } = await rate(c, ms, () =>
        log.append(createAuditRecord('stream.opened', { ...FIELDS, streamId: `s${n++}` })),
      )
      const fsyncsPerAppend = sink.stats.syncs / Math.max(1, sink.stats.records)
      await log.close()

      // 2. Stream opens without audit.
      const noAudit = await rate(c, ms, () => openStream(session))

      // 3. Stream opens with audit, as the relay does it.
      const sink2 = await FileSink.open({ path: join(dir, `streams-${c}.log`), fsync: 'always' })
      const log2 = new AuditLog({ sinks: [sink2] })
      const closes: Promise<void>[] = []
      let m = 0
      const audit = await rate(c, ms, async () => {
        const streamId = `s${m++}`
        const t0 = performance.now()
        await log2.append(createAuditRecord('stream.opened', { ...FIELDS, streamId }))
        await openStream(session)
        closes.push(
          log2.append(
            createAuditRecord('stream.closed', {
              ...FIELDS,
              streamId,
              bytesClientToPod: 1,
              bytesPodToClient: 1,
              durationMs: performance.now() - t0,
              endedBy: 'client',
            }),
          ),
        )
        if (closes.length > 4096) await Promise.all(closes.splice(0))
      })
      await Promise.all(closes)
      await log2.close()
      rows.push({
        concurrency: c,
        appendsPerSec: Math.round(appendsPerSec),
        fsyncsPerAppend: Number(fsyncsPerAppend.toFixed(4)),
        opensPerSecNoAudit: Math.round(noAudit.perSec),
        opensPerSecAudit: Math.round(audit.perSec),
        overheadPct: pct(noAudit.perSec - audit.perSec, noAudit.perSec),
        cpuUsPerOpenNoAudit: Number(noAudit.cpuUsPerOp.toFixed(1)),
        cpuUsPerOpenAudit: Number(audit.cpuUsPerOp.toFixed(1)),
        cpuOverheadPct: pct(audit.cpuUsPerOp - noAudit.cpuUsPerOp, noAudit.cpuUsPerOp),
      })
    }
  } finally {
    session.close()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    if (options.dir === undefined) await rm(dir, { recursive: true, force: true })
  }
  return rows
}

function pct(part: number, whole: number): number {
  return Number(((part / whole) * 100).toFixed(1))
}

/** Prints the rows as a table. */
export function formatAuditBench(rows: readonly AuditBenchRow[]): string {
  const cols: [string, (r: AuditBenchRow) => string][] = [
    ['conc', (r) => String(r.concurrency)],
    ['appends/s', (r) => String(r.appendsPerSec)],
    ['fsync/append', (r) => r.fsyncsPerAppend.toFixed(4)],
    ['opens/s no audit', (r) => String(r.opensPerSecNoAudit)],
    ['opens/s audit', (r) => String(r.opensPerSecAudit)],
    ['rate cost', (r) => `${r.overheadPct}%`],
    ['cpu µs/open no audit', (r) => String(r.cpuUsPerOpenNoAudit)],
    ['cpu µs/open audit', (r) => String(r.cpuUsPerOpenAudit)],
    ['cpu cost', (r) => `${r.cpuOverheadPct}%`],
  ]
  const table = [cols.map(([h]) => h), ...rows.map((r) => cols.map(([, f]) => f(r)))]
  const widths = cols.map((_, i) => Math.max(...table.map((row) => row[i]!.length)))
  return table.map((row) => row.map((c, i) => c.padStart(widths[i]!)).join('  ')).join('\n')
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const durationMs = process.argv[2] !== undefined ? Number(process.argv[2]) : undefined
  const rows = await runAuditBench(durationMs !== undefined ? { durationMs } : {})
  console.log(formatAuditBench(rows))
}
