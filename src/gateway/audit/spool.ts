/**
 * The webhook sink's disk spool: records that could not be delivered wait here, in
 * order, until the collector is back. Bounded: memory holds one batch at most, the disk
 * holds at most `maxBytes` of undelivered records (plus the delivered head of one
 * segment); an append beyond that fails, and the audit log fails closed.
 *
 * Layout of the spool directory (0700):
 * - `seg-<16-digit sequence>.jsonl` (0600): JSON lines, appended and fdatasynced by
 *   {@link DiskSpool.append}. A process appends only to segments it created, so a line
 *   cut by a crash stays at the end of an old segment, where the reader drops it.
 * - `cursor.json`: `{ "seq": n, "offset": bytes }`, how far the oldest segment has been
 *   delivered. Written after every delivered batch, without fsync: if it is lost, the
 *   batches since the last surviving cursor are delivered again (at-least-once).
 *
 * Fully delivered segments are deleted.
 *
 * @module
 */
import { open, readdir, rename, stat, unlink, writeFile, readFile } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { appError } from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { ensureDir, ignoreMissing, syncDir } from './fs-util.js'

/** Default bound on undelivered bytes: 256 MiB. */
export const DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024
/** Default segment size: 4 MiB. */
export const DEFAULT_SPOOL_SEGMENT_BYTES = 4 * 1024 * 1024

const SEGMENT_RE = /^seg-(\d{16})\.jsonl$/
const CURSOR = 'cursor.json'

/** Options for {@link DiskSpool.open}. */
export interface DiskSpoolOptions {
  dir: string
  /** Undelivered bytes allowed; default 256 MiB. */
  maxBytes?: number
  /** A new segment starts when the current one would grow past this; default 4 MiB. */
  segmentBytes?: number
  logger?: Logger
}

/** A batch read from the spool: its lines (without `\n`) and how to mark it delivered. */
export interface SpoolBatch {
  lines: string[]
  /** Marks the batch delivered: advances the cursor, deletes finished segments. */
  ack(): Promise<void>
}

interface Segment {
  seq: number
  path: string
  /** Bytes of whole batches in it (for old segments: the file size). */
  size: number
}

/** An append-only, fsynced, bounded FIFO of JSON lines on disk. */
export class DiskSpool {
  readonly dir: string
  readonly #maxBytes: number
  readonly #segmentBytes: number
  readonly #logger: Logger | undefined
  #segments: Segment[] = []
  /** Delivered bytes of the oldest segment. */
  #headOffset = 0
  /** The segment this process appends to (always the last one), and its handle. */
  #active: Segment | undefined
  #activeFh: FileHandle | undefined
  #readFh: { seq: number; fh: FileHandle } | undefined
  #nextSeq = 1
  #appending = false
  #closed = false

  private constructor(options: DiskSpoolOptions) {
    this.dir = options.dir
    this.#maxBytes = options.maxBytes ?? DEFAULT_SPOOL_MAX_BYTES
    this.#segmentBytes = options.segmentBytes ?? DEFAULT_SPOOL_SEGMENT_BYTES
    this.#logger = options.logger
  }

  /** Opens (creating it if needed) the spool directory and finds what is left in it. */
  static async open(options: DiskSpoolOptions): Promise<DiskSpool> {
    const spool = new DiskSpool(options)
    await spool.#load()
    return spool
  }

  /** Undelivered bytes (whole and partial lines). */
  get pendingBytes(): number {
    let n = -this.#headOffset
    for (const s of this.#segments) n += s.size
    return Math.max(0, n)
  }

  /** Number of segment files. */
  get segmentCount(): number {
    return this.#segments.length
  }

  /** True when nothing is waiting for delivery. */
  get isEmpty(): boolean {
    return this.pendingBytes === 0
  }

  /**
   * Appends whole JSON lines and fdatasyncs them. Rejects with
   * `PFG_ERR_AUDIT_UNAVAILABLE` when the spool is full. Not reentrant: callers serialize.
   */
  async append(buf: Buffer): Promise<void> {
    if (this.#closed) throw new Error('the audit spool is closed')
    if (this.#appending) throw new Error('DiskSpool.append is not reentrant')
    if (this.pendingBytes + buf.length > this.#maxBytes)
      throw appError(
        'PFG_ERR_AUDIT_UNAVAILABLE',
        `the webhook spool ${this.dir} is full (${this.pendingBytes} of ${this.#maxBytes} bytes)`,
      )
    this.#appending = true
    try {
      let seg = this.#active
      if (seg === undefined || (seg.size > 0 && seg.size + buf.length > this.#segmentBytes)) {
        await this.#closeActive()
        seg = await this.#newSegment()
      }
      const fh = this.#activeFh!
      try {
        let off = 0
        while (off < buf.length) {
          const { bytesWritten } = await fh.write(buf, off, buf.length - off)
          off += bytesWritten
        }
        await fh.datasync()
      } catch (err) {
        // Cut the partial batch, and start a new segment next time.
        await fh.truncate(seg.size).catch(() => {})
        await this.#closeActive()
        throw err
      }
      seg.size += buf.length
    } finally {
      this.#appending = false
    }
  }

  /**
   * Reads the oldest undelivered lines: up to `maxLines` and about `maxBytes` (at least
   * one line). Returns undefined when nothing is waiting. Call `ack()` before the next
   * `read()`, or the same lines are returned again (that is how a failed delivery retries).
   */
  async read(maxLines: number, maxBytes: number): Promise<SpoolBatch | undefined> {
    let window = Math.max(1024, maxBytes)
    for (;;) {
      const seg = this.#segments[0]
      if (seg === undefined || this.#closed) return undefined
      if (this.#headOffset >= seg.size) {
        if (seg === this.#active) return undefined
        await this.#dropHead()
        continue
      }
      const fh = await this.#reader(seg)
      const len = Math.min(seg.size - this.#headOffset, window)
      const buf = Buffer.alloc(len)
      let got = 0
      while (got < len) {
        const { bytesRead } = await fh.read(buf, got, len - got, this.#headOffset + got)
        if (bytesRead === 0) break
        got += bytesRead
      }
      const chunk = buf.subarray(0, got)
      const lines: string[] = []
      let start = 0
      while (lines.length < maxLines) {
        const nl = chunk.indexOf(0x0a, start)
        if (nl === -1) break
        if (nl > start) lines.push(chunk.toString('utf8', start, nl))
        start = nl + 1
      }
      if (start === 0) {
        if (this.#headOffset + got < seg.size && got === len) {
          window *= 2 // one line longer than the window
          continue
        }
        // An unterminated tail of an old segment (a crash mid-append): nothing to deliver.
        this.#logger?.warn({ segment: seg.path }, 'audit spool: dropping a partial last line')
        this.#headOffset = seg.size
        continue
      }
      const consumed = start
      const ackSeq = seg.seq
      if (lines.length === 0) {
        // Only empty lines: skip them.
        this.#headOffset += consumed
        continue
      }
      return {
        lines,
        ack: async () => {
          if (this.#segments[0]?.seq !== ackSeq) return
          this.#headOffset += consumed
          await this.#saveCursor()
        },
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true
    await this.#closeActive()
    if (this.#readFh !== undefined) await this.#readFh.fh.close().catch(() => {})
    this.#readFh = undefined
  }

  async #load(): Promise<void> {
    await ensureDir(this.dir)
    const found: Segment[] = []
    for (const name of await readdir(this.dir)) {
      const m = SEGMENT_RE.exec(name)
      if (m === null) continue
      const path = join(this.dir, name)
      found.push({ seq: Number(m[1]), path, size: (await stat(path)).size })
    }
    found.sort((a, b) => a.seq - b.seq)
    let cursor: { seq?: unknown; offset?: unknown } = {}
    try {
      cursor = JSON.parse(await readFile(join(this.dir, CURSOR), 'utf8')) as typeof cursor
    } catch {
      // No cursor (or a torn one): deliver everything from the start.
    }
    if (typeof cursor.seq === 'number' && typeof cursor.offset === 'number') {
      // Segments before the cursor were delivered; their deletion was lost in a crash.
      while (found.length > 0 && found[0]!.seq < cursor.seq) {
        await ignoreMissing(() => unlink(found.shift()!.path))
      }
      if (found[0]?.seq === cursor.seq)
        this.#headOffset = Math.min(Math.max(0, cursor.offset), found[0].size)
    }
    this.#segments = found
    this.#nextSeq = (found.at(-1)?.seq ?? 0) + 1
  }

  async #newSegment(): Promise<Segment> {
    const seq = this.#nextSeq++
    const path = join(this.dir, `seg-${String(seq).padStart(16, '0')}.jsonl`)
    this.#activeFh = await open(path, 'ax', 0o600)
    await syncDir(this.dir)
    const seg: Segment = { seq, path, size: 0 }
    this.#segments.push(seg)
    this.#active = seg
    return seg
  }

  async #closeActive(): Promise<void> {
    const fh = this.#activeFh
    this.#activeFh = undefined
    this.#active = undefined
    if (fh !== undefined) await fh.close().catch(() => {})
  }

  async #reader(seg: Segment): Promise<FileHandle> {
    if (this.#readFh?.seq === seg.seq) return this.#readFh.fh
    if (this.#readFh !== undefined) await this.#readFh.fh.close().catch(() => {})
    this.#readFh = undefined
    const fh = await open(seg.path, 'r')
    this.#readFh = { seq: seg.seq, fh }
    return fh
  }

  /** Deletes the fully delivered oldest segment. */
  async #dropHead(): Promise<void> {
    const seg = this.#segments.shift()!
    this.#headOffset = 0
    if (this.#readFh?.seq === seg.seq) {
      await this.#readFh.fh.close().catch(() => {})
      this.#readFh = undefined
    }
    await ignoreMissing(() => unlink(seg.path))
    await this.#saveCursor()
  }

  async #saveCursor(): Promise<void> {
    const head = this.#segments[0]
    const cursor = JSON.stringify({ seq: head?.seq ?? this.#nextSeq, offset: this.#headOffset })
    const tmp = join(this.dir, `${CURSOR}.tmp`)
    await writeFile(tmp, cursor, { mode: 0o600 })
    await rename(tmp, join(this.dir, CURSOR))
  }

  /**
   * When everything is delivered and no append is running, deletes the last segment too,
   * so an idle spool is an empty directory. Returns true when the spool is empty.
   */
  async compact(): Promise<boolean> {
    if (this.#appending) return false
    const seg = this.#segments[0]
    if (seg === undefined) return true
    if (this.#segments.length > 1 || this.#headOffset < seg.size) return false
    await this.#closeActive()
    await this.#dropHead()
    return true
  }
}
