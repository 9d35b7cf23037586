/**
 * The stdout sink: JSON lines to a Writable (process.stdout in production, for a log
 * collector reading the container's output). `write()` resolves once the stream has
 * accepted the batch and, when its buffer is full, once it has drained: a slow reader
 * slows the audit log down (backpressure) instead of growing memory.
 *
 * Durability: whatever the reader of the stream does. It is not fsynced.
 *
 * @module
 */
import { once } from 'node:events'
import type { Writable } from 'node:stream'
import type { AuditRecord } from '../../protocol/audit-record.js'
import type { AuditSink } from './types.js'
import { encodeRecordLines } from './record.js'

/** Options for {@link StreamSink}. */
export interface StreamSinkOptions {
  /** Where to write, e.g. `process.stdout`. */
  stream: Writable
  /** Default `stdout`. */
  name?: string
  /** Whether `close()` ends the stream (default false: process.stdout must stay open). */
  end?: boolean
}

/** JSON lines to a Writable, respecting backpressure. */
export class StreamSink implements AuditSink {
  readonly name: string
  readonly #stream: Writable
  readonly #end: boolean
  #closed = false
  #chain: Promise<void> = Promise.resolve()
  /** Records accepted by the stream. */
  records = 0

  constructor(options: StreamSinkOptions) {
    this.name = options.name ?? 'stdout'
    this.#stream = options.stream
    this.#end = options.end ?? false
  }

  write(records: readonly AuditRecord[]): Promise<void> {
    return this.#enqueue(() => encodeRecordLines(records), records.length)
  }

  /** {@link StreamSink.write} for lines the AuditLog already sanitized and encoded. */
  writeLines(lines: readonly string[]): Promise<void> {
    return this.#enqueue(() => Buffer.from(lines.join(''), 'utf8'), lines.length)
  }

  #enqueue(encode: () => Buffer, count: number): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`audit sink ${this.name} is closed`))
    const buf = encode()
    // Serialize, in case a caller does not wait (the AuditSink contract says they do).
    const p = this.#chain.then(() => this.#writeOne(buf, count))
    this.#chain = p.catch(() => {})
    return p
  }

  async #writeOne(buf: Buffer, count: number): Promise<void> {
    const stream = this.#stream
    if (stream.destroyed || stream.writableEnded)
      throw new Error(`audit sink ${this.name}: the stream is closed`)
    // once() with a signal, so that no 'error' listener is left behind per write.
    const ac = new AbortController()
    const errored = once(stream, 'error', { signal: ac.signal }).then(([err]) => {
      throw err
    })
    errored.catch(() => {})
    try {
      await Promise.race([
        errored,
        new Promise<void>((resolve, reject) => {
          stream.write(buf, (err) => (err ? reject(err) : resolve()))
        }),
      ])
      if (stream.writableNeedDrain)
        await Promise.race([errored, once(stream, 'drain', { signal: ac.signal })])
      this.records += count
    } finally {
      ac.abort()
    }
  }

  async close(): Promise<void> {
    this.#closed = true
    await this.#chain
    if (this.#end && !this.#stream.writableEnded) {
      this.#stream.end()
      await once(this.#stream, 'finish')
    }
  }
}
