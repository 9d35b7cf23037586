/**
 * The audit log the relay talks to: `append(record)` hands one record to every sink,
 * and resolves according to the mode (kube-apiserver's audit backend modes):
 *
 * - `blocking-strict` (default): resolves once the record is durable in every sink. If
 *   any sink fails, it rejects with `PFG_ERR_AUDIT_UNAVAILABLE` (the gateway answers 503
 *   and relays nothing) and {@link AuditLog.healthy} turns false (readiness); while it is
 *   false, appends reject at once. Fail closed.
 * - `blocking`: resolves once every healthy sink has written the record; a failing sink
 *   is logged and counted but does not fail the stream.
 * - `batch`: resolves as soon as the record is queued; a flusher writes batches in the
 *   background. The queue is bounded: when it is full, `append` waits (never drops).
 *
 * How it works: each sink has its own ordered queue (a "lane") and writes one batch at a
 * time. Records appended while a batch is being written form the next batch, so many
 * concurrent appends cost one write+fsync (group commit). Sinks progress independently,
 * so a record is written once to each sink even when another sink fails.
 *
 * Only `stream.opened` holds anything up (no byte is relayed before it is written). In the
 * blocking modes every other record (closes, denials, sessions) lingers up to `lingerMs`
 * (default 10 ms) for a `stream.opened` to share its write, and is written then at the
 * latest; its `append` resolves when it is written, as before. Under load that halves the
 * durable writes (each open no longer pays for the previous stream's close) and no open
 * waits behind a close's fsync; the price is that a crash can lose the closes of the last
 * `lingerMs`, which the restart then records as ended by `gateway-restart`
 * (docs/audit.md).
 *
 * Nothing handed to `append` is silently lost:
 * - A failed batch stays at the head of its lane and is retried with exponential backoff
 *   (`retry`, default 50 ms … 5 s). That retry is the health probe: the first success
 *   makes `healthy()` true again, without needing new traffic (readiness may have taken
 *   the gateway out of service).
 * - In `blocking-strict`, a rejected `stream.opened` (the stream was refused) is followed
 *   by a `stream.failed` record (reason `audit-unavailable`, status 503) that the log
 *   writes itself once the sinks are back. When the sink was already failing, only the
 *   `stream.failed` record is queued. The caller must not write its own failure record
 *   for that stream.
 * - Other records appended while a sink fails (closes of streams that were open, denials)
 *   are queued for that sink and written when it is back, even though `append` rejected
 *   (strict) or resolved (blocking). A failing sink's queue is bounded by
 *   `maxQueueRecords`; beyond it, new records other than closes (`stream.closed`,
 *   `session.closed`, `gateway.stopped`) are dropped for that sink and counted in
 *   `recordsDropped`. Closes are always kept: their number is bounded by the streams that
 *   were open.
 *
 * @module
 */
import type { AuditRecord, AuditType } from '../../protocol/audit-record.js'
import { AUDIT_SCHEMA } from '../../protocol/audit-record.js'
import { Backoff } from '../../shared/backoff.js'
import { appError, describeError, errorCode } from '../../shared/errors.js'
import type { AppError } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import type { AuditMode, AuditSink } from './types.js'
import { sanitizeRecord } from './sanitize.js'
import { auditTime, encodeRecordLine, newAuditId, pickIdentity } from './record.js'

/** Records per sink write, at most. */
export const DEFAULT_AUDIT_MAX_BATCH = 1024
/** How long records that hold nothing up may wait to share a write (blocking modes). */
export const DEFAULT_AUDIT_LINGER_MS = 10
/** Bound of a sink's queue (batch mode: append waits; failing sink: see the module comment). */
export const DEFAULT_AUDIT_MAX_QUEUE = 10_000

/** Options for {@link AuditLog}. */
export interface AuditLogOptions {
  /** Every sink gets every record it accepts ({@link AuditSink.accepts}). At least one. */
  sinks: readonly AuditSink[]
  /** Default `blocking-strict`. */
  mode?: AuditMode
  /** Records per sink write; default 1024. */
  maxBatchRecords?: number
  /** Per-sink queue bound; default 10 000. */
  maxQueueRecords?: number
  /** Backoff of a failing sink's retries; default 50 ms … 5 s. */
  retry?: { initialMs: number; maxMs: number }
  /**
   * Blocking modes: how long records other than `stream.opened` may wait to share a
   * write with one (see the module comment); default 10 ms, 0 writes them at once.
   */
  lingerMs?: number
  logger?: Logger
  /** Called when {@link AuditLog.healthy} changes (e.g. to flip readiness). */
  onHealthChange?: (healthy: boolean) => void
}

/** Per-sink numbers, for Prometheus gauges and counters. */
export interface AuditSinkMetrics {
  name: string
  healthy: boolean
  /** Records waiting to be written to this sink. */
  queueDepth: number
  /** Records written (counter). */
  recordsWritten: number
  /** Batches written (counter). */
  batchesWritten: number
  /** Failed write attempts (counter). */
  failures: number
  /** Records dropped for this sink because its queue was full while it failed (counter). */
  recordsDropped: number
  /** The last failure, if the sink is failing now. */
  lastError?: string
}

/** A snapshot of the audit log's numbers (all plain numbers: cheap to read in collect()). */
export interface AuditLogMetrics {
  mode: AuditMode
  healthy: boolean
  /** The deepest sink queue (gauge). */
  queueDepth: number
  /** Records accepted by `append` (counter). */
  recordsAppended: number
  /** Records in which a credential was redacted (counter). */
  recordsRedacted: number
  /** `append` calls that rejected (counter). */
  appendsRejected: number
  /** Records dropped, summed over sinks (counter). */
  recordsDropped: number
  /** `stream.failed` records written on behalf of refused streams (counter). */
  recordsCompensated: number
  sinks: AuditSinkMetrics[]
}

/** Record types that are kept even when a failing sink's queue is full. */
const NEVER_DROPPED: ReadonlySet<AuditType> = new Set([
  'stream.closed',
  'session.closed',
  'gateway.stopped',
])

/**
 * A `stream.failed` with a stream id closes that stream's `stream.opened` (its agent dial
 * failed after the open record was written): kept like a `stream.closed`.
 */
function closesAStream(record: AuditRecord): boolean {
  return record.type === 'stream.failed' && record.streamId !== undefined
}

/** One append waiting for the sinks (blocking modes). */
class Ticket {
  #pending: number
  #settled = false
  readonly promise: Promise<void>
  #resolve!: () => void
  #reject!: (err: Error) => void

  constructor(lanes: number) {
    this.#pending = lanes
    this.promise = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
    if (lanes === 0) this.ok()
  }

  get settled(): boolean {
    return this.#settled
  }

  /** One sink is done with it. */
  ok(): void {
    if (this.#settled) return
    if (--this.#pending <= 0) {
      this.#settled = true
      this.#resolve()
    }
  }

  fail(err: Error): void {
    if (this.#settled) return
    this.#settled = true
    this.#reject(err)
  }
}

interface Entry {
  record: AuditRecord
  /** The record, sanitized and encoded once for every sink. */
  line: string
  ticket?: Ticket
}

/** Something waits for a `stream.opened` to be written (the relay): it never lingers. */
function isUrgent(entry: Entry): boolean {
  return entry.record.type === 'stream.opened'
}

interface Lane {
  sink: AuditSink
  /** Does this sink take the record? (A sink without `accepts` takes every record.) */
  accepts: (record: AuditRecord) => boolean
  queue: Entry[]
  /** Urgent entries in `queue`. */
  urgent: number
  writing: Promise<void> | undefined
  scheduled: boolean
  /** Writes the lingering queue when no urgent record came in time. */
  lingerTimer: NodeJS.Timeout | undefined
  failing: boolean
  retryTimer: NodeJS.Timeout | undefined
  backoff: Backoff
  recordsWritten: number
  batchesWritten: number
  failures: number
  recordsDropped: number
  lastError: string | undefined
}

/** The audit log facade (see the module comment). */
export class AuditLog {
  readonly mode: AuditMode
  readonly #lanes: Lane[]
  readonly #maxBatch: number
  readonly #maxQueue: number
  readonly #lingerMs: number
  readonly #logger: Logger | undefined
  readonly #onHealthChange: ((healthy: boolean) => void) | undefined
  #healthy = true
  /** No more appends (close() called). */
  #closed = false
  /** No more writes (close() is closing the sinks). */
  #stopped = false
  #recordsAppended = 0
  #recordsRedacted = 0
  #appendsRejected = 0
  #recordsCompensated = 0
  /** flush() calls waiting (no linger meanwhile). */
  #flushing = 0
  /** Woken whenever a lane finishes a write attempt (capacity, flush). */
  #progress: (() => void)[] = []

  constructor(options: AuditLogOptions) {
    if (options.sinks.length === 0) throw new TypeError('AuditLog needs at least one sink')
    this.mode = options.mode ?? 'blocking-strict'
    if (!['blocking-strict', 'blocking', 'batch'].includes(this.mode))
      throw new TypeError(`unknown audit mode ${JSON.stringify(this.mode)}`)
    this.#maxBatch = options.maxBatchRecords ?? DEFAULT_AUDIT_MAX_BATCH
    this.#maxQueue = options.maxQueueRecords ?? DEFAULT_AUDIT_MAX_QUEUE
    if (!(this.#maxBatch >= 1) || !(this.#maxQueue >= 1))
      throw new RangeError('maxBatchRecords and maxQueueRecords must be >= 1')
    this.#lingerMs = this.mode === 'batch' ? 0 : (options.lingerMs ?? DEFAULT_AUDIT_LINGER_MS)
    if (!(this.#lingerMs >= 0)) throw new RangeError('lingerMs must be >= 0')
    this.#logger = options.logger
    this.#onHealthChange = options.onHealthChange
    const retry = options.retry ?? { initialMs: 50, maxMs: 5000 }
    this.#lanes = options.sinks.map((sink) => ({
      sink,
      accepts: sink.accepts?.bind(sink) ?? (() => true),
      queue: [],
      urgent: 0,
      writing: undefined,
      scheduled: false,
      lingerTimer: undefined,
      failing: false,
      retryTimer: undefined,
      backoff: new Backoff(retry),
      recordsWritten: 0,
      batchesWritten: 0,
      failures: 0,
      recordsDropped: 0,
      lastError: undefined,
    }))
  }

  /**
   * Records one event; resolves per the mode (see the module comment). Rejects with
   * `PFG_ERR_AUDIT_UNAVAILABLE` in `blocking-strict` when any sink cannot make it durable,
   * and in every mode after {@link AuditLog.close}.
   */
  append(record: AuditRecord): Promise<void> {
    if (this.#closed) {
      this.#appendsRejected++
      return Promise.reject(appError('PFG_ERR_AUDIT_UNAVAILABLE', 'the audit log is closed'))
    }
    let clean: AuditRecord
    let line: string
    try {
      const result = sanitizeRecord(record)
      clean = result.record
      line = `${JSON.stringify(clean)}\n`
      if (result.redacted.length > 0) {
        this.#recordsRedacted++
        this.#logger?.warn(
          { auditId: clean.id, fields: result.redacted },
          'credential-like text removed from an audit record',
        )
      }
    } catch (err) {
      // Not JSON (a cycle, a BigInt): a programming error, reported like any other.
      return Promise.reject(err instanceof Error ? err : new TypeError(String(err)))
    }
    this.#recordsAppended++
    switch (this.mode) {
      case 'batch':
        return this.#appendBatch(clean, line)
      case 'blocking':
        return this.#appendBlocking(clean, line)
      case 'blocking-strict':
        return this.#appendStrict(clean, line)
    }
  }

  /** True when every sink is working (the last write to each succeeded). */
  healthy(): boolean {
    return this.#healthy
  }

  /** A snapshot of the counters and gauges. */
  metrics(): AuditLogMetrics {
    const sinks = this.#lanes.map((l): AuditSinkMetrics => ({
      name: l.sink.name,
      healthy: !l.failing,
      queueDepth: l.queue.length,
      recordsWritten: l.recordsWritten,
      batchesWritten: l.batchesWritten,
      failures: l.failures,
      recordsDropped: l.recordsDropped,
      ...(l.failing && l.lastError !== undefined ? { lastError: l.lastError } : {}),
    }))
    return {
      mode: this.mode,
      healthy: this.#healthy,
      queueDepth: Math.max(0, ...sinks.map((s) => s.queueDepth)),
      recordsAppended: this.#recordsAppended,
      recordsRedacted: this.#recordsRedacted,
      appendsRejected: this.#appendsRejected,
      recordsDropped: sinks.reduce((n, s) => n + s.recordsDropped, 0),
      recordsCompensated: this.#recordsCompensated,
      sinks,
    }
  }

  /**
   * Waits until every queued record is written to every sink, or `timeoutMs` passes.
   * Resolves true when everything was written.
   */
  async flush(timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    // While a flush waits, nothing lingers: what is queued is written at once.
    this.#flushing++
    try {
      for (const lane of this.#lanes) this.#schedule(lane)
      while (this.#lanes.some((l) => l.queue.length > 0 || l.writing !== undefined)) {
        const left = deadline - Date.now()
        if (left <= 0) return false
        await new Promise<void>((resolve) => {
          const timer = setTimeout(wake, left)
          function wake(): void {
            clearTimeout(timer)
            resolve()
          }
          this.#progress.push(wake)
        })
      }
      return true
    } finally {
      this.#flushing--
    }
  }

  /**
   * Stops accepting records, writes what is queued (up to `timeoutMs`; a failing sink
   * keeps retrying until then), and closes the sinks. Records still queued for a failing
   * sink at the deadline are lost for that sink and logged.
   */
  async close(timeoutMs = 10_000): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const drained = await this.flush(timeoutMs)
    this.#stopped = true
    for (const lane of this.#lanes) {
      if (lane.retryTimer !== undefined) clearTimeout(lane.retryTimer)
      lane.retryTimer = undefined
      clearTimeout(lane.lingerTimer)
      lane.lingerTimer = undefined
    }
    await Promise.all(this.#lanes.flatMap((l) => (l.writing !== undefined ? [l.writing] : [])))
    if (!drained) {
      for (const lane of this.#lanes) {
        if (lane.queue.length > 0)
          this.#logger?.error(
            { sink: lane.sink.name, records: lane.queue.length },
            'audit records not written at shutdown',
          )
      }
    }
    this.#wakeAll()
    const results = await Promise.allSettled(this.#lanes.map((l) => l.sink.close()))
    for (const [i, r] of results.entries()) {
      if (r.status === 'rejected')
        this.#logger?.warn(
          { sink: this.#lanes[i]!.sink.name, err: describeError(r.reason) },
          'audit sink close failed',
        )
    }
  }

  // --- modes -----------------------------------------------------------------------

  #appendStrict(record: AuditRecord, line: string): Promise<void> {
    if (!this.#healthy) {
      // Fail fast; keep the facts for when the sinks are back.
      const err = this.#unavailable()
      if (record.type === 'stream.opened') this.#compensate(record, err)
      else
        for (const lane of this.#lanes) if (lane.accepts(record)) this.#push(lane, { record, line })
      this.#appendsRejected++
      return Promise.reject(err)
    }
    const lanes = this.#lanes.filter((l) => l.accepts(record))
    const ticket = new Ticket(lanes.length)
    for (const lane of lanes) this.#push(lane, { record, line, ticket })
    return ticket.promise
  }

  #appendBlocking(record: AuditRecord, line: string): Promise<void> {
    const lanes = this.#lanes.filter((l) => l.accepts(record))
    const ticket = new Ticket(lanes.filter((l) => !l.failing).length)
    for (const lane of lanes) {
      this.#push(lane, lane.failing ? { record, line } : { record, line, ticket })
    }
    return ticket.promise
  }

  async #appendBatch(record: AuditRecord, line: string): Promise<void> {
    while (this.#lanes.some((l) => l.queue.length >= this.#maxQueue)) {
      await new Promise<void>((resolve) => this.#progress.push(resolve))
      if (this.#closed) {
        this.#appendsRejected++
        throw appError('PFG_ERR_AUDIT_UNAVAILABLE', 'the audit log is closed')
      }
    }
    for (const lane of this.#lanes) if (lane.accepts(record)) this.#push(lane, { record, line })
  }

  // --- lanes -----------------------------------------------------------------------

  #push(lane: Lane, entry: Entry): void {
    if (
      lane.failing &&
      entry.ticket === undefined &&
      lane.queue.length >= this.#maxQueue &&
      !NEVER_DROPPED.has(entry.record.type) &&
      !closesAStream(entry.record)
    ) {
      lane.recordsDropped++
      return
    }
    lane.queue.push(entry)
    if (isUrgent(entry)) lane.urgent++
    this.#schedule(lane)
  }

  /**
   * Starts a write on the next microtask, so that appends made in one tick share it; when
   * nothing queued is urgent, after the linger instead (see the module comment).
   */
  #schedule(lane: Lane): void {
    if (lane.writing !== undefined || lane.scheduled || lane.failing || this.#stopped) return
    if (lane.queue.length === 0) return
    if (lane.urgent === 0 && this.#lingerMs > 0 && this.#flushing === 0) {
      lane.lingerTimer ??= setTimeout(() => {
        lane.lingerTimer = undefined
        this.#startWrite(lane)
      }, this.#lingerMs)
      return
    }
    clearTimeout(lane.lingerTimer)
    lane.lingerTimer = undefined
    lane.scheduled = true
    queueMicrotask(() => {
      lane.scheduled = false
      this.#startWrite(lane)
    })
  }

  #startWrite(lane: Lane): void {
    if (lane.writing !== undefined || lane.queue.length === 0 || this.#stopped) return
    lane.writing = this.#write(lane).finally(() => {
      lane.writing = undefined
      this.#wakeAll()
      if (!lane.failing) this.#schedule(lane)
    })
  }

  async #write(lane: Lane): Promise<void> {
    const batch = lane.queue.slice(0, this.#maxBatch)
    const sink = lane.sink
    try {
      if (sink.writeLines !== undefined) await sink.writeLines(batch.map((e) => e.line))
      else await sink.write(batch.map((e) => e.record))
    } catch (err) {
      this.#failed(lane, err)
      return
    }
    lane.queue.splice(0, batch.length)
    for (const e of batch) if (isUrgent(e)) lane.urgent--
    lane.recordsWritten += batch.length
    lane.batchesWritten++
    for (const e of batch) e.ticket?.ok()
    if (lane.failing) {
      lane.failing = false
      lane.lastError = undefined
      lane.backoff.reset()
      this.#logger?.info({ sink: lane.sink.name }, 'audit sink recovered')
      this.#updateHealth()
    }
  }

  #failed(lane: Lane, cause: unknown): void {
    lane.failures++
    lane.lastError = describeError(cause)
    const first = !lane.failing
    lane.failing = true
    const delay = lane.backoff.next()
    if (first)
      this.#logger?.error(
        { sink: lane.sink.name, err: lane.lastError, code: errorCode(cause), retryInMs: delay },
        'audit sink failed',
      )
    this.#updateHealth()
    // Settle every waiting append behind the failed write: strict rejects, blocking
    // counts the attempt. The records stay queued for the retry.
    const err = this.#unavailable(lane.sink.name, cause)
    const compensate: AuditRecord[] = []
    for (const e of lane.queue) {
      const ticket = e.ticket
      if (ticket === undefined) continue
      e.ticket = undefined
      if (this.mode === 'blocking-strict') {
        if (!ticket.settled) {
          this.#appendsRejected++
          if (e.record.type === 'stream.opened') compensate.push(e.record)
        }
        ticket.fail(err)
      } else {
        ticket.ok()
      }
    }
    for (const r of compensate) this.#compensate(r, err)
    if (!this.#stopped) {
      lane.retryTimer = setTimeout(() => {
        lane.retryTimer = undefined
        this.#startWrite(lane)
      }, delay)
    }
  }

  /** Queues the `stream.failed` record for a `stream.opened` that was refused. */
  #compensate(opened: AuditRecord, err: AppError): void {
    this.#recordsCompensated++
    const failed: AuditRecord = {
      schema: AUDIT_SCHEMA,
      id: newAuditId(),
      time: auditTime(),
      type: 'stream.failed',
      ...pickIdentity(opened),
      reason: 'audit-unavailable',
      status: 503,
      error: { code: err.code, message: err.message },
      ...(opened.ref !== undefined ? { ref: opened.ref } : {}),
    }
    const line = encodeRecordLine(failed)
    for (const lane of this.#lanes)
      if (lane.accepts(failed)) this.#push(lane, { record: failed, line })
  }

  #unavailable(sink?: string, cause?: unknown): AppError {
    const failing = sink ?? this.#lanes.find((l) => l.failing)?.sink.name ?? 'a sink'
    const why =
      cause !== undefined ? describeError(cause) : this.#lanes.find((l) => l.failing)?.lastError
    return appError(
      'PFG_ERR_AUDIT_UNAVAILABLE',
      `the audit sink ${failing} cannot record${why !== undefined ? `: ${why}` : ''}`,
      cause !== undefined ? { cause } : {},
    )
  }

  #updateHealth(): void {
    const healthy = this.#lanes.every((l) => !l.failing)
    if (healthy === this.#healthy) return
    this.#healthy = healthy
    try {
      this.#onHealthChange?.(healthy)
    } catch (err) {
      this.#logger?.warn({ err: describeError(err) }, 'onHealthChange threw')
    }
  }

  #wakeAll(): void {
    const waiters = this.#progress
    this.#progress = []
    for (const w of waiters) w()
  }
}
