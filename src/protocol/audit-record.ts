/**
 * The audit record format (schema `pfgate.audit/v1`), documented in docs/audit.md.
 * Written by the gateway (JSON lines), read by `pfgate audit`. A file format is a
 * protocol: both sides import it from here.
 *
 * @module
 */
import type { EndedBy } from './reset-codes.js'

/** Schema identifier carried by every record. Bump on incompatible change. */
export const AUDIT_SCHEMA = 'pfgate.audit/v1'

/** Record types. */
export type AuditType =
  | 'session.opened'
  | 'session.closed'
  | 'stream.opened'
  | 'stream.closed'
  | 'stream.denied'
  | 'stream.failed'
  | 'gateway.started'
  | 'gateway.stopped'

/** The client protocol a stream arrived on. */
export type ClientProtocol = 'native-h2' | 'spdy' | 'ws-spdy' | 'ws-v4' | 'ws-v4-base64'

/** One audit record. Optional fields are omitted (not null) when unknown. */
export interface AuditRecord {
  schema: typeof AUDIT_SCHEMA
  /** Unique event id. */
  id: string
  /** RFC 3339 time with milliseconds, UTC. */
  time: string
  type: AuditType
  /** The gateway instance that wrote it (changes on every start). */
  gateway?: string
  user?: string
  groups?: string[]
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
}

/** Type guard for a parsed JSON value. */
export function isAuditRecord(value: unknown): value is AuditRecord {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { schema?: unknown }).schema === AUDIT_SCHEMA &&
    typeof (value as { id?: unknown }).id === 'string' &&
    typeof (value as { type?: unknown }).type === 'string' &&
    typeof (value as { time?: unknown }).time === 'string'
  )
}
