/**
 * The JSON-lines file sink: one record per line, appended to `audit.log` (mode 0600,
 * its directory 0700 when created here), rotated by size, fsynced per policy.
 *
 * Durability (docs/audit.md, "File sink"):
 * - `always`: `write()` resolves once the batch is durable: the file is opened with
 *   `O_DSYNC`, so each write(2) returns when its data is on disk, as write(2) followed by
 *   fdatasync(2) would (the same guarantee in one system call and one thread-pool trip;
 *   where the platform has no `O_DSYNC`, write(2) then fdatasync(2)). Group commit: while
 *   one durable write is in flight, every record handed in queues, and all of them go into
 *   the next single write, so N concurrent writers cost about two syncs, not N.
 * - `interval`: `write()` resolves after write(2); a timer fdatasyncs every N ms when
 *   something was written. A crash can lose the last interval.
 * - `never`: the kernel decides. A crash of the machine can lose recent records.
 *
 * No partial lines: a batch is one buffer written with as many write(2) calls as it
 * takes. If a write or sync fails, the file is truncated back to the last good size, so
 * the next batch does not start in the middle of a line. If the process dies mid-write
 * (SIGKILL), the file can end with an unterminated line; on open the sink terminates it
 * with `\n` so the next record starts on a line of its own, and readers skip the broken
 * line (AuditLineDecoder). pfgate rotates the file itself: do not use an external
 * rotation (logrotate `copytruncate` would break both rules).
 *
 * @module
 */
import { constants as fsConstants } from 'node:fs'
import { open, readdir, rename, unlink } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { AuditRecord } from '../../protocol/audit-record.js'
import { rotatedTrailPath } from '../../protocol/audit-record.js'
import type { Logger } from '../../shared/log.js'
import { describeError, errorCode } from '../../shared/errors.js'
import type { AuditSink } from './types.js'
import { encodeRecordLines } from './record.js'
import { ensureDir, ignoreMissing, syncDir } from './fs-util.js'

/** `a+` as flags: O_APPEND for writing, readable for the last-byte check. */
const A_PLUS = fsConstants.O_RDWR | fsConstants.O_APPEND | fsConstants.O_CREAT
/** Undefined where the platform lacks it (Windows). */
const O_DSYNC = fsConstants.O_DSYNC as number | undefined

/** When the file sink calls fdatasync. */
export type FsyncPolicy = 'always' | 'interval' | 'never'

/** Rotate when the file would grow past this (100 MiB). */
export const DEFAULT_AUDIT_MAX_BYTES = 100 * 1024 * 1024
/** Rotated files kept (`audit.log.1` … `audit.log.10`). */
export const DEFAULT_AUDIT_RETENTION = 10
/** fdatasync period for the `interval` policy. */
export const DEFAULT_FSYNC_INTERVAL_MS = 1000

/** Options for {@link FileSink.open}. */
export interface FileSinkOptions {
  /** The trail file, e.g. `/var/log/pfgate/audit.log`. */
  path: string
  /** Default `always`. */
  fsync?: FsyncPolicy
  /** For `interval`; default 1000 ms. */
  fsyncIntervalMs?: number
  /** Rotate before a write would take the file past this size; 0 = never. Default 100 MiB. */
  maxBytes?: number
  /** Rotated files kept; older ones are deleted. 0 deletes the file on rotation. Default 10. */
  retention?: number
  /** Sink name in metrics and logs; default `file`. */
  name?: string
  /**
   * Which records this file takes (default: all). The gateway opens two file sinks per
   * configured trail: the main one, and the denials trail for denial records (`isDenialType`).
   */
  accepts?: (record: AuditRecord) => boolean
  logger?: Logger
}

/** Counters, for metrics and tests. */
export interface FileSinkStats {
  /** Batches written (one per group commit). */
  writes: number
  /** Durable writes of the trail file (`O_DSYNC` writes, or fdatasync calls). */
  syncs: number
  /** fsync calls on the directory. */
  dirSyncs: number
  rotations: number
  records: number
  bytes: number
  /** Batches that failed. */
  failures: number
}

interface Pending {
  buf: Buffer
  count: number
  resolve: () => void
  reject: (err: unknown) => void
}

/** The JSON-lines file sink (see the module comment). */
export class FileSink implements AuditSink {
  readonly name: string
  readonly path: string
  readonly #fsync: FsyncPolicy
  /** The open file was opened with O_DSYNC: every write is durable when it returns. */
  #dsync = false
  readonly #maxBytes: number
  readonly #retention: number
  readonly #logger: Logger | undefined
  readonly #accepts: ((record: AuditRecord) => boolean) | undefined
  readonly #stats: FileSinkStats = {
    writes: 0,
    syncs: 0,
    dirSyncs: 0,
    rotations: 0,
    records: 0,
    bytes: 0,
    failures: 0,
  }
  #fh: FileHandle | undefined
  /** Size of the file up to the last complete, successful batch. */
  #size = 0
  #queue: Pending[] = []
  #pump: Promise<void> | undefined
  /** Cleared synchronously when the drain loop exits (an await or finally() would be late). */
  #draining = false
  #closed = false
  #dirty = false
  #timer: NodeJS.Timeout | undefined
  #timerSync: Promise<void> | undefined

  private constructor(options: FileSinkOptions) {
    this.name = options.name ?? 'file'
    this.path = options.path
    this.#fsync = options.fsync ?? 'always'
    this.#maxBytes = options.maxBytes ?? DEFAULT_AUDIT_MAX_BYTES
    this.#retention = options.retention ?? DEFAULT_AUDIT_RETENTION
    this.#logger = options.logger
    this.#accepts = options.accepts
    if (!Number.isInteger(this.#retention) || this.#retention < 0)
      throw new RangeError(`retention must be an integer >= 0, got ${this.#retention}`)
    if (this.#fsync === 'interval') {
      const every = options.fsyncIntervalMs ?? DEFAULT_FSYNC_INTERVAL_MS
      if (!(every > 0)) throw new RangeError(`fsyncIntervalMs must be > 0, got ${every}`)
      this.#timer = setInterval(() => this.#intervalSync(), every)
      this.#timer.unref()
    }
  }

  /** Opens (creating it 0600, and its directory 0700, if needed) the trail file. */
  static async open(options: FileSinkOptions): Promise<FileSink> {
    const sink = new FileSink(options)
    try {
      await sink.#ensureOpen()
    } catch (err) {
      await sink.close().catch(() => {})
      throw err
    }
    return sink
  }

  /** Does this file take `record`? (See {@link FileSinkOptions.accepts}.) */
  accepts(record: AuditRecord): boolean {
    return this.#accepts?.(record) ?? true
  }

  /** Counters (live object: read, do not modify). */
  get stats(): Readonly<FileSinkStats> {
    return this.#stats
  }

  /** Current size of the live file. */
  get size(): number {
    return this.#size
  }

  /** Appends `records` as one batch; resolves per the fsync policy (see the module comment). */
  write(records: readonly AuditRecord[]): Promise<void> {
    if (records.length === 0) return this.#closedCheck()
    return this.#enqueue(encodeRecordLines(records), records.length)
  }

  /** {@link FileSink.write} for lines the AuditLog already sanitized and encoded. */
  writeLines(lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return this.#closedCheck()
    return this.#enqueue(Buffer.from(lines.join(''), 'utf8'), lines.length)
  }

  #closedCheck(): Promise<void> {
    return this.#closed
      ? Promise.reject(new Error(`audit sink ${this.name} is closed`))
      : Promise.resolve()
  }

  #enqueue(buf: Buffer, count: number): Promise<void> {
    if (this.#closed) return this.#closedCheck()
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ buf, count, resolve, reject })
      if (!this.#draining) {
        this.#draining = true
        this.#pump = this.#drain()
      }
    })
  }

  /** Waits for queued writes, syncs (unless `never`) and closes the file. */
  async close(): Promise<void> {
    this.#closed = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#timer = undefined
    await this.#pump
    await this.#timerSync
    const fh = this.#fh
    this.#fh = undefined
    if (fh === undefined) return
    try {
      if (this.#fsync !== 'never' && this.#dirty) await fh.datasync()
    } finally {
      await fh.close()
    }
  }

  /** Group commit: everything queued while a batch was in flight becomes the next batch. */
  async #drain(): Promise<void> {
    for (;;) {
      if (this.#queue.length === 0) {
        // Synchronously with the last check: a write() from a resolved caller starts anew.
        this.#draining = false
        return
      }
      const batch = this.#queue
      this.#queue = []
      const buf = batch.length === 1 ? batch[0]!.buf : Buffer.concat(batch.map((p) => p.buf))
      try {
        await this.#writeBatch(buf)
        let n = 0
        for (const p of batch) n += p.count
        this.#stats.records += n
        for (const p of batch) p.resolve()
      } catch (err) {
        for (const p of batch) p.reject(err)
      }
    }
  }

  async #writeBatch(buf: Buffer): Promise<void> {
    try {
      await this.#ensureOpen()
      if (this.#maxBytes > 0 && this.#size > 0 && this.#size + buf.length > this.#maxBytes)
        await this.#rotate()
      const fh = this.#fh!
      let off = 0
      while (off < buf.length) {
        const { bytesWritten } = await fh.write(buf, off, buf.length - off)
        off += bytesWritten
      }
      this.#stats.writes++
      if (this.#fsync === 'always') {
        if (!this.#dsync) await fh.datasync()
        this.#stats.syncs++
      } else {
        this.#dirty = true
      }
      this.#size += buf.length
      this.#stats.bytes += buf.length
    } catch (err) {
      this.#stats.failures++
      await this.#abandon(err)
      throw err
    }
  }

  /** After a failure: cut back to the last good size and reopen on the next write. */
  async #abandon(cause: unknown): Promise<void> {
    const fh = this.#fh
    this.#fh = undefined
    if (fh === undefined) return
    this.#logger?.warn(
      { sink: this.name, path: this.path, err: describeError(cause) },
      'audit file write failed; truncating to the last complete record',
    )
    try {
      await fh.truncate(this.#size)
    } catch {
      // The reopen terminates any partial line instead.
    }
    await fh.close().catch(() => {})
  }

  async #ensureOpen(): Promise<void> {
    if (this.#fh !== undefined) return
    const dir = dirname(this.path)
    if (await ensureDir(dir)) this.#stats.dirSyncs++
    // a+: O_APPEND for writing, readable for the last-byte check; ax+ first, to know
    // whether the file is new (its directory entry must then be fsynced).
    let created = true
    let fh: FileHandle
    const dsync = this.#fsync === 'always' && O_DSYNC !== undefined
    const flags = A_PLUS | (dsync ? O_DSYNC : 0)
    try {
      fh = await open(this.path, flags | fsConstants.O_EXCL, 0o600)
    } catch (err) {
      if (errorCode(err) !== 'EEXIST') throw err
      created = false
      fh = await open(this.path, flags, 0o600)
    }
    this.#dsync = dsync
    try {
      const st = await fh.stat()
      if ((st.mode & 0o777) !== 0o600) await fh.chmod(0o600)
      let size = st.size
      if (size > 0) {
        const last = Buffer.alloc(1)
        await fh.read(last, 0, 1, size - 1)
        if (last[0] !== 0x0a) {
          // A line cut by a crash: end it so that it stays one (skipped) bad line.
          await fh.write('\n')
          await fh.datasync()
          size++
          this.#logger?.warn({ path: this.path }, 'audit file ended with a partial line')
        }
      }
      if (created) {
        await syncDir(dir)
        this.#stats.dirSyncs++
      }
      this.#fh = fh
      this.#size = size
    } catch (err) {
      await fh.close().catch(() => {})
      throw err
    }
  }

  /** `audit.log` → `audit.log.1`, shifting the others and deleting beyond retention. */
  async #rotate(): Promise<void> {
    const fh = this.#fh!
    this.#fh = undefined
    try {
      if (this.#fsync !== 'never') await fh.datasync()
    } finally {
      await fh.close()
    }
    const dir = dirname(this.path)
    const base = basename(this.path)
    const keep = this.#retention
    // Delete every rotated file that would fall off the end (also those left by a larger
    // retention setting in the past).
    for (const name of await readdir(dir)) {
      if (!name.startsWith(`${base}.`)) continue
      const suffix = name.slice(base.length + 1)
      if (/^[1-9]\d*$/.test(suffix) && Number(suffix) >= Math.max(keep, 1))
        await ignoreMissing(() => unlink(join(dir, name)))
    }
    if (keep === 0) {
      await ignoreMissing(() => unlink(this.path))
    } else {
      for (let i = keep - 1; i >= 1; i--) {
        const from = rotatedTrailPath(this.path, i)
        await ignoreMissing(() => rename(from, rotatedTrailPath(this.path, i + 1)))
      }
      await rename(this.path, rotatedTrailPath(this.path, 1))
    }
    this.#stats.rotations++
    this.#size = 0
    // Creates the new file and fsyncs the directory, which also makes the renames durable.
    await this.#ensureOpen()
  }

  #intervalSync(): void {
    const fh = this.#fh
    if (!this.#dirty || fh === undefined || this.#timerSync !== undefined) return
    this.#dirty = false
    this.#timerSync = fh
      .datasync()
      .then(() => {
        this.#stats.syncs++
      })
      .catch((err: unknown) => {
        this.#dirty = true
        this.#logger?.warn({ sink: this.name, err: describeError(err) }, 'audit fsync failed')
      })
      .finally(() => {
        this.#timerSync = undefined
      })
  }
}

/** Shorthand for {@link FileSink.open}. */
export function openFileSink(options: FileSinkOptions): Promise<FileSink> {
  return FileSink.open(options)
}
