/**
 * The audit record format (schema `pfgate.audit/v2`), documented in docs/audit.md.
 * Written by the gateway (JSON lines), read by `pfgate audit`. A file format is a
 * protocol: both sides import it from here.
 *
 * A trail is two sequences of files: the main trail (`audit.log`, its rotated files) and
 * the denials trail beside it (`audit.denied.log`, …; {@link deniedTrailPath}), which holds
 * the records anyone can cause without credentials ({@link isDenialType}), so that they
 * rotate only each other away. Readers merge the two by time ({@link mergeByTime}).
 *
 * @module
 */
import type { EndedBy } from './stream-end.js'

/** Schema identifier carried by every record written. Bump on incompatible change. */
export const AUDIT_SCHEMA = 'pfgate.audit/v2'

/**
 * Every schema a reader accepts: v1 trails (written before v2) stay readable. What changed
 * in v2 is listed in docs/audit.md ("Schema versions").
 */
export const AUDIT_SCHEMAS = ['pfgate.audit/v1', AUDIT_SCHEMA] as const

/** A schema a record may carry. */
export type AuditSchema = (typeof AUDIT_SCHEMAS)[number]

/** Record types. */
export type AuditType =
  | 'session.opened'
  | 'session.closed'
  | 'stream.opened'
  | 'stream.closed'
  | 'stream.denied'
  | 'stream.failed'
  | 'request.denied'
  | 'denials.suppressed'
  | 'gateway.started'
  | 'gateway.stopped'

/**
 * The record types a client can cause without credentials (refusals, and the summaries of
 * refusals that were only counted). They go to the denials trail.
 */
export function isDenialType(type: string): boolean {
  return type === 'stream.denied' || type === 'request.denied' || type === 'denials.suppressed'
}

/** The client protocol a stream arrived on. */
export type ClientProtocol = 'native-h2' | 'spdy' | 'ws-spdy' | 'ws-v4' | 'ws-v4-base64'

/** One audit record. Optional fields are omitted (not null) when unknown. */
export interface AuditRecord {
  schema: AuditSchema
  /** Unique event id. */
  id: string
  /** RFC 3339 time with milliseconds, UTC. */
  time: string
  type: AuditType
  /**
   * The gateway instance the event belongs to (changes on every start). For the closes
   * written after a crash (`endedBy: gateway-restart`), the instance whose stream it was.
   */
  gateway?: string
  /** The identity of the request's own successful authentication (never a session's). */
  user?: string
  groups?: string[]
  /**
   * Which identity source authenticated `user`: `jwt` (the configured JWKS), `oidc` (an
   * issuer found by discovery), `x509` (a client certificate) or `tokenreview` (the
   * cluster's API server). Present wherever `user` is.
   */
  authSource?: 'jwt' | 'oidc' | 'x509' | 'tokenreview'
  /**
   * `session.closed`: every user that authenticated on the connection, in order of first
   * authentication (at most {@link MAX_SESSION_USERS}). `denials.suppressed`: the users
   * of the counted refusals that had authenticated (at most 8).
   */
  users?: string[]
  /** Client address `ip:port` (IPv6 in brackets). */
  sourceAddress?: string
  protocol?: ClientProtocol
  userAgent?: string
  /** Client connection id. */
  sessionId?: string
  /** Forwarded-connection id (unique across the gateway's life). */
  streamId?: string
  node?: string
  namespace?: string
  pod?: string
  podUid?: string
  port?: number
  /** `udp` for a UDP flow (`port` is then a UDP port); absent for TCP streams. */
  transport?: 'udp'
  /** UDP flows (stream.closed): datagrams the gateway relayed client→pod. */
  datagramsClientToPod?: number
  /** UDP flows: datagrams the gateway relayed pod→client. */
  datagramsPodToClient?: number
  /**
   * UDP flows: datagrams dropped under pressure, by where (the gateway's own, and the
   * agent's as its end trailer reported them; absent when the flow was reset).
   */
  datagramsDropped?: { gateway: number; agent?: number }
  /** UDP flows: datagrams from another source than the pod port, not delivered (agent). */
  datagramsWrongSource?: number
  /**
   * What the stream asked for when it named a service or workload (`svc/echo:5000`);
   * `pod`, `node` and `port` are then what the gateway picked for this stream.
   */
  target?: string
  /** Bytes the gateway relayed client→pod (stream.closed, session.closed). */
  bytesClientToPod?: number
  /** Bytes the gateway relayed pod→client. */
  bytesPodToClient?: number
  /** Milliseconds from open to close. */
  durationMs?: number
  /** Who ended it (stream.closed, session.closed). */
  endedBy?: EndedBy
  /** The admin who ended it, when endedBy is `admin`. */
  endedByUser?: string
  /** Why a stream was denied or failed, or what ended it: a stable reason word. */
  reason?: string
  /** The error, when there was one. */
  error?: { code: string; message: string }
  /** HTTP status given to the client (denied / failed). */
  status?: number
  /** A short reference that also appears in the gateway log line for this event. */
  ref?: string
  /**
   * Paths of the fields (e.g. `error.message`, `userAgent`) in which something that looked
   * like a credential was replaced by `[REDACTED]` before the record was written.
   */
  redacted?: string[]
  /** `request.denied`: the request's method. */
  method?: string
  /** `request.denied`: the request's path (no query), truncated and escaped when not plain. */
  path?: string
  /** `denials.suppressed`: how many refusals were counted instead of recorded one by one. */
  count?: number
  /** `denials.suppressed`: the time of the first and of the last of them. */
  firstTime?: string
  lastTime?: string
  /** `denials.suppressed`: how many of them had each reason word. */
  reasons?: Record<string, number>
}

/** The most users a `session.closed` record names. */
export const MAX_SESSION_USERS = 64

/** Type guard for a parsed JSON value. */
export function isAuditRecord(value: unknown): value is AuditRecord {
  return (
    typeof value === 'object' &&
    value !== null &&
    (AUDIT_SCHEMAS as readonly unknown[]).includes((value as { schema?: unknown }).schema) &&
    typeof (value as { id?: unknown }).id === 'string' &&
    typeof (value as { type?: unknown }).type === 'string' &&
    typeof (value as { time?: unknown }).time === 'string'
  )
}

/**
 * The name of the `n`th rotated file of a trail (`audit.log` → `audit.log.1`, the newest
 * rotated one). `n = 0` is the live file itself.
 */
export function rotatedTrailPath(path: string, n: number): string {
  return n === 0 ? path : `${path}.${n}`
}

/**
 * The denials trail that goes with the trail at `path`: `.denied` before the file name's
 * extension (`/var/log/pfgate/audit.log` → `/var/log/pfgate/audit.denied.log`; `trail` →
 * `trail.denied`). Its rotated files are numbered like the main trail's.
 */
export function deniedTrailPath(path: string): string {
  const slash = Math.max(path.lastIndexOf('/'), path.lastIndexOf('\\'))
  const dot = path.lastIndexOf('.')
  return dot > slash + 1 ? `${path.slice(0, dot)}.denied${path.slice(dot)}` : `${path}.denied`
}

/**
 * Merges two record sequences, each in the order it was written, into one ordered by
 * time (on a tie, `a` first). The order within each sequence is kept: records are written
 * in nearly, not strictly, increasing time. `timeOf` reads an item's RFC 3339 time
 * (records: their `time`; the same format throughout, so strings compare as times).
 */
export async function* mergeByTime<T = AuditRecord>(
  a: AsyncIterable<T>,
  b: AsyncIterable<T>,
  timeOf: (item: T) => string = (item) => (item as AuditRecord).time,
): AsyncGenerator<T> {
  const ia = a[Symbol.asyncIterator]()
  const ib = b[Symbol.asyncIterator]()
  try {
    let ra = await ia.next()
    let rb = await ib.next()
    for (;;) {
      if (ra.done === true && rb.done === true) return
      if (rb.done === true || (ra.done !== true && !(timeOf(ra.value) > timeOf(rb.value)))) {
        yield ra.value as T
        ra = await ia.next()
      } else {
        yield rb.value
        rb = await ib.next()
      }
    }
  } finally {
    await ia.return?.()
    await ib.return?.()
  }
}

/**
 * Orders the files of a trail oldest first, given the names found in its directory:
 * `audit.log.N` … `audit.log.1`, then `audit.log`. Names that are not part of the trail
 * are ignored. Returns base names (no directory).
 */
export function orderTrailFiles(baseName: string, names: readonly string[]): string[] {
  const rotated: [number, string][] = []
  let live = false
  for (const name of names) {
    if (name === baseName) live = true
    else if (name.startsWith(`${baseName}.`)) {
      const suffix = name.slice(baseName.length + 1)
      if (/^[1-9]\d{0,8}$/.test(suffix)) rotated.push([Number(suffix), name])
    }
  }
  rotated.sort((a, b) => b[0] - a[0])
  const out = rotated.map(([, name]) => name)
  if (live) out.push(baseName)
  return out
}

const NEWLINE = 0x0a

/**
 * Splits a JSON-lines audit trail read in arbitrary chunks into records.
 *
 * Writers append whole lines, but a crash (SIGKILL, power loss) can leave the last line
 * of a file unterminated, and a reader racing a writer can see half a line. So only
 * newline-terminated lines are records; what follows the last newline stays buffered
 * until more bytes arrive, and {@link AuditLineDecoder.end} reports it as a partial line
 * instead of parsing it. Lines that are not valid records (a partial line that a restarted
 * writer terminated, NUL bytes left by a crash) are counted in `malformed` and skipped.
 */
export class AuditLineDecoder {
  #rest: Buffer | undefined
  /** Complete lines that were not valid records (skipped). */
  malformed = 0

  /** Feeds bytes; returns the records completed by them, in order. */
  push(chunk: Buffer): AuditRecord[] {
    const out: AuditRecord[] = []
    let buf = chunk
    if (this.#rest !== undefined) {
      buf = Buffer.concat([this.#rest, chunk])
      this.#rest = undefined
    }
    let start = 0
    for (;;) {
      const nl = buf.indexOf(NEWLINE, start)
      if (nl === -1) break
      if (nl > start) this.#line(buf.toString('utf8', start, nl), out)
      start = nl + 1
    }
    if (start < buf.length) this.#rest = buf.subarray(start)
    return out
  }

  /** Bytes buffered after the last newline (an unterminated line so far). */
  get pendingBytes(): number {
    return this.#rest?.length ?? 0
  }

  /** Drops the buffered unterminated line (e.g. when a file ends); returns its length. */
  end(): number {
    const n = this.pendingBytes
    this.#rest = undefined
    return n
  }

  #line(text: string, out: AuditRecord[]): void {
    const trimmed = text.trim()
    if (trimmed === '') return
    let value: unknown
    try {
      value = JSON.parse(trimmed)
    } catch {
      this.malformed++
      return
    }
    if (isAuditRecord(value)) out.push(value)
    else this.malformed++
  }
}
