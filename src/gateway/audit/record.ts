/**
 * Building and encoding audit records. Every sink turns records into bytes through
 * {@link encodeRecordLine}, which sanitizes first: no sink can write a credential.
 *
 * @module
 */
import { randomUUID } from 'node:crypto'
import { AUDIT_SCHEMA } from '../../protocol/audit-record.js'
import type { AuditRecord, AuditType } from '../../protocol/audit-record.js'
import { STREAM_IDENTITY_KEYS, sanitizeRecord } from './sanitize.js'

/** The fields a caller provides; `schema`, `id`, `time` and `type` are filled in. */
export type AuditFields = Omit<AuditRecord, 'schema' | 'id' | 'time' | 'type'>

/** A new unique record id (a random UUID: collectors de-duplicate on it). */
export function newAuditId(): string {
  return randomUUID()
}

let lastMs = -1
let lastIso = ''

/** RFC 3339 UTC time with milliseconds, as records carry it. */
export function auditTime(date?: Date): string {
  if (date !== undefined) return date.toISOString()
  // Many records share a millisecond under load: format each millisecond once.
  const ms = Date.now()
  if (ms !== lastMs) {
    lastMs = ms
    lastIso = new Date(ms).toISOString()
  }
  return lastIso
}

/**
 * Builds a record of `type` with a new id and the current time (or `now`).
 *
 * @example
 * ```ts
 * await auditLog.append(createAuditRecord('stream.opened', { user, namespace, pod, port }))
 * ```
 */
export function createAuditRecord(type: AuditType, fields: AuditFields, now?: Date): AuditRecord {
  return { schema: AUDIT_SCHEMA, id: newAuditId(), time: auditTime(now), type, ...fields }
}

/** One JSON line (with its `\n`), credentials removed (see sanitize.ts). */
export function encodeRecordLine(record: AuditRecord): string {
  return `${JSON.stringify(sanitizeRecord(record).record)}\n`
}

/** The JSON lines of `records`, concatenated, as one buffer. */
export function encodeRecordLines(records: readonly AuditRecord[]): Buffer {
  let text = ''
  for (const r of records) text += encodeRecordLine(r)
  return Buffer.from(text, 'utf8')
}

/** The fields of an open record that identify the stream (copied into its close). */
export function pickIdentity(r: AuditRecord): Partial<AuditRecord> {
  const out: Partial<AuditRecord> = {}
  for (const k of STREAM_IDENTITY_KEYS)
    if (r[k] !== undefined) (out as Record<string, unknown>)[k] = r[k]
  return out
}
