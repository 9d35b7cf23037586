/**
 * The webhook sink: batches of records POSTed to a collector, with a disk spool while
 * the collector is down.
 *
 * Wire format (docs/audit.md, "Webhook"): `POST <url>` with
 * `content-type: application/json`, `x-pfgate-audit-schema: pfgate.audit/v1`, the
 * optional `authorization: Bearer <token>`, and a body that is a JSON array of records,
 * oldest first. Any 2xx means "stored"; anything else (or no answer within the timeout)
 * means "retry later". Every status is retried, 4xx included: dropping audit records is
 * worse than stalling, and a stalled spool shows in the metrics.
 *
 * Delivery:
 * - While the spool is empty, `write()` POSTs the batch itself and resolves when the
 *   collector answered 2xx.
 * - If that fails, the batch, and every later one, is appended to the spool (fdatasynced)
 *   and `write()` resolves then. A background deliverer POSTs spooled batches oldest
 *   first, one at a time, with exponential backoff between failures, and deletes them as
 *   they are acknowledged. Only when the spool is empty do writes go direct again, so
 *   records are delivered in order and, in the normal case, exactly once.
 * - After a crash, or when a POST timed out after the collector had stored it, a batch
 *   can be delivered twice (at-least-once). Every record has a unique `id` for the
 *   collector to de-duplicate on.
 * - Memory is bounded (one batch); the spool is bounded by `maxSpoolBytes`. When it is
 *   full, `write()` rejects, which makes a `blocking-strict` audit log fail closed.
 *
 * @module
 */
import { Client } from 'undici'
import type { AuditRecord } from '../../protocol/audit-record.js'
import { AUDIT_SCHEMA } from '../../protocol/audit-record.js'
import { Backoff } from '../../shared/backoff.js'
import { describeError } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import type { AuditSink } from './types.js'
import { encodeRecordLine } from './record.js'
import { DiskSpool } from './spool.js'

/** Default timeout of one POST (connect, headers, body): 5 s. */
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 5000
/** Default records per POST. */
export const DEFAULT_WEBHOOK_BATCH_RECORDS = 500
/** Default bytes per POST (about). */
export const DEFAULT_WEBHOOK_BATCH_BYTES = 1024 * 1024

/** Options for {@link WebhookSink.open}. */
export interface WebhookSinkOptions {
  /** The collector, `http://` or `https://`. */
  url: string
  /** Sent as `authorization: Bearer <token>`; never logged. */
  bearerToken?: string
  /** CA bundle (PEM) for an https collector, when not in the system store. */
  ca?: string | Buffer
  /** Per POST; default 5 s. */
  timeoutMs?: number
  /** The spool directory (created 0700). */
  spoolDir: string
  /** Bound on undelivered spooled bytes; default 256 MiB. */
  maxSpoolBytes?: number
  /** Spool segment size; default 4 MiB. */
  spoolSegmentBytes?: number
  /** Records per POST when delivering from the spool; default 500. */
  maxBatchRecords?: number
  /** About this many bytes per POST when delivering from the spool; default 1 MiB. */
  maxBatchBytes?: number
  /** Backoff between delivery attempts; default 200 ms … 30 s. */
  retry?: { initialMs: number; maxMs: number }
  /** Default `webhook`. */
  name?: string
  logger?: Logger
}

/** Counters, for metrics and tests. */
export interface WebhookSinkStats {
  /** Records the collector acknowledged. */
  delivered: number
  /** POSTs the collector acknowledged. */
  posts: number
  /** POSTs that failed (status, timeout, connection). */
  postFailures: number
  /** Records written to the spool. */
  spooled: number
}

/** Batched POSTs to a collector with a disk spool (see the module comment). */
export class WebhookSink implements AuditSink {
  readonly name: string
  readonly #client: Client
  readonly #path: string
  readonly #headers: Record<string, string>
  readonly #timeoutMs: number
  readonly #spool: DiskSpool
  readonly #batchRecords: number
  readonly #batchBytes: number
  readonly #backoff: Backoff
  readonly #logger: Logger | undefined
  readonly #stats: WebhookSinkStats = { delivered: 0, posts: 0, postFailures: 0, spooled: 0 }
  /** `direct` only while the spool is empty and the deliverer is idle. */
  #mode: 'direct' | 'spooling' = 'direct'
  #deliverer: Promise<void> | undefined
  #wake: (() => void) | undefined
  #chain: Promise<void> = Promise.resolve()
  #closed = false
  readonly #stop = new AbortController()

  private constructor(options: WebhookSinkOptions, spool: DiskSpool) {
    const url = new URL(options.url)
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new TypeError(`webhook url must be http(s), got ${url.protocol}`)
    this.name = options.name ?? 'webhook'
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_WEBHOOK_TIMEOUT_MS
    this.#client = new Client(url.origin, {
      connect: {
        timeout: this.#timeoutMs,
        ...(options.ca !== undefined ? { ca: options.ca } : {}),
      },
      headersTimeout: this.#timeoutMs,
      bodyTimeout: this.#timeoutMs,
    })
    this.#path = `${url.pathname}${url.search}`
    this.#headers = {
      'content-type': 'application/json',
      'x-pfgate-audit-schema': AUDIT_SCHEMA,
      ...(options.bearerToken !== undefined
        ? { authorization: `Bearer ${options.bearerToken}` }
        : {}),
    }
    this.#spool = spool
    this.#batchRecords = options.maxBatchRecords ?? DEFAULT_WEBHOOK_BATCH_RECORDS
    this.#batchBytes = options.maxBatchBytes ?? DEFAULT_WEBHOOK_BATCH_BYTES
    this.#backoff = new Backoff(options.retry ?? { initialMs: 200, maxMs: 30_000 })
    this.#logger = options.logger
  }

  /** Opens the spool; if it holds records from before, starts delivering them first. */
  static async open(options: WebhookSinkOptions): Promise<WebhookSink> {
    const spool = await DiskSpool.open({
      dir: options.spoolDir,
      ...(options.maxSpoolBytes !== undefined ? { maxBytes: options.maxSpoolBytes } : {}),
      ...(options.spoolSegmentBytes !== undefined
        ? { segmentBytes: options.spoolSegmentBytes }
        : {}),
      ...(options.logger !== undefined ? { logger: options.logger } : {}),
    })
    const sink = new WebhookSink(options, spool)
    if (!spool.isEmpty) sink.#startSpooling()
    return sink
  }

  /** Counters (live object). */
  get stats(): Readonly<WebhookSinkStats> {
    return this.#stats
  }

  /** Undelivered bytes in the spool (a gauge). */
  get spoolBytes(): number {
    return this.#spool.pendingBytes
  }

  /** `direct` (collector reachable, spool empty) or `spooling`. */
  get mode(): 'direct' | 'spooling' {
    return this.#mode
  }

  /** Resolves once the batch is delivered, or durable in the spool. */
  write(records: readonly AuditRecord[]): Promise<void> {
    return this.writeLines(records.map(encodeRecordLine))
  }

  /** {@link WebhookSink.write} for lines the AuditLog already sanitized and encoded. */
  writeLines(lines: readonly string[]): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`audit sink ${this.name} is closed`))
    if (lines.length === 0) return Promise.resolve()
    const p = this.#chain.then(() => this.#write(lines))
    this.#chain = p.catch(() => {})
    return p
  }

  async #write(lines: readonly string[]): Promise<void> {
    if (this.#mode === 'direct') {
      try {
        await this.#post(lines)
        this.#stats.delivered += lines.length
        return
      } catch (err) {
        this.#logger?.warn(
          { sink: this.name, err: describeError(err) },
          'audit collector unavailable; spooling to disk',
        )
        this.#startSpooling()
      }
    }
    await this.#spool.append(Buffer.from(lines.join(''), 'utf8'))
    this.#stats.spooled += lines.length
    this.#wake?.()
  }

  #startSpooling(): void {
    this.#mode = 'spooling'
    this.#deliverer ??= this.#deliver().finally(() => {
      this.#deliverer = undefined
    })
  }

  /** Delivers the spool oldest first; switches back to direct once it is empty. */
  async #deliver(): Promise<void> {
    while (!this.#closed) {
      let batch
      try {
        batch = await this.#spool.read(this.#batchRecords, this.#batchBytes)
      } catch (err) {
        this.#logger?.error({ sink: this.name, err: describeError(err) }, 'audit spool read failed')
        await this.#sleep(this.#backoff.next())
        continue
      }
      if (batch === undefined) {
        // Empty, but a write may be appending right now (it holds the chain): wait for it.
        const writing = this.#chain
        await writing
        if (this.#chain !== writing || !this.#spool.isEmpty) continue
        if (await this.#spool.compact().catch(() => false)) {
          if (this.#chain !== writing) continue
          this.#mode = 'direct'
          this.#backoff.reset()
          this.#logger?.info({ sink: this.name }, 'audit collector back; spool delivered')
          return
        }
        await this.#nap()
        continue
      }
      try {
        await this.#post(batch.lines)
        await batch.ack()
        this.#stats.delivered += batch.lines.length
        this.#backoff.reset()
      } catch (err) {
        const delay = this.#backoff.next()
        this.#logger?.warn(
          { sink: this.name, err: describeError(err), retryInMs: delay },
          'audit collector unavailable',
        )
        await this.#sleep(delay)
      }
    }
  }

  async #post(lines: readonly string[]): Promise<void> {
    let body = '['
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!
      if (i > 0) body += ','
      body += line.endsWith('\n') ? line.slice(0, -1) : line
    }
    body += ']'
    try {
      const res = await this.#client.request({
        path: this.#path,
        method: 'POST',
        headers: this.#headers,
        body,
        signal: AbortSignal.any([AbortSignal.timeout(this.#timeoutMs), this.#stop.signal]),
      })
      await res.body.dump()
      if (res.statusCode < 200 || res.statusCode > 299)
        throw new Error(`the collector answered ${res.statusCode}`)
      this.#stats.posts++
    } catch (err) {
      this.#stats.postFailures++
      throw err
    }
  }

  /** Waits until a write appends (or a short while, in case a wake was missed). */
  #nap(): Promise<void> {
    return this.#sleep(1000, true)
  }

  #sleep(ms: number, wakeable = false): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.#stop.signal.removeEventListener('abort', done)
        if (this.#wake === done) this.#wake = undefined
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#stop.signal.addEventListener('abort', done)
      if (wakeable) this.#wake = done
    })
  }

  /** Stops delivering (spooled records stay for the next start) and closes the spool. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#chain
    this.#stop.abort()
    await this.#deliverer
    await this.#spool.close()
    await this.#client.close().catch(() => {})
  }
}

/** Shorthand for {@link WebhookSink.open}. */
export function openWebhookSink(options: WebhookSinkOptions): Promise<WebhookSink> {
  return WebhookSink.open(options)
}
