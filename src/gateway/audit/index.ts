/**
 * The audit subsystem's public surface: the facade, the sinks, record helpers and crash
 * recovery. The relay only needs `AuditLog.append`, `createAuditRecord` and, at start-up,
 * `recoverDanglingRecords`. docs/audit.md describes the trail.
 *
 * @module
 */
export type { AuditMode, AuditSink } from './types.js'
export { AuditLog, DEFAULT_AUDIT_MAX_BATCH, DEFAULT_AUDIT_MAX_QUEUE } from './audit-log.js'
export type { AuditLogMetrics, AuditLogOptions, AuditSinkMetrics } from './audit-log.js'
export {
  FileSink,
  openFileSink,
  DEFAULT_AUDIT_MAX_BYTES,
  DEFAULT_AUDIT_RETENTION,
  DEFAULT_FSYNC_INTERVAL_MS,
} from './file-sink.js'
export type { FileSinkOptions, FileSinkStats, FsyncPolicy } from './file-sink.js'
export { StreamSink } from './stream-sink.js'
export type { StreamSinkOptions } from './stream-sink.js'
export { WebhookSink, openWebhookSink, DEFAULT_WEBHOOK_TIMEOUT_MS } from './webhook-sink.js'
export type { WebhookSinkOptions, WebhookSinkStats } from './webhook-sink.js'
export { DiskSpool, DEFAULT_SPOOL_MAX_BYTES, DEFAULT_SPOOL_SEGMENT_BYTES } from './spool.js'
export { createAuditRecord, encodeRecordLine, newAuditId, pickIdentity } from './record.js'
export type { AuditFields } from './record.js'
export { sanitizeRecord, looksLikeSecret, redactText, REDACTED } from './sanitize.js'
export { recoverDanglingRecords } from './recovery.js'
export type { RecoveryOptions } from './recovery.js'
export { readTrail, listTrailFiles } from './trail-reader.js'
export type { TrailReadSummary } from './trail-reader.js'
