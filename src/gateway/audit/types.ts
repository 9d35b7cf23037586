/**
 * Audit sinks and the audit log facade the relay calls. The relay never knows
 * which sinks exist; it awaits `AuditLog.append` where the mode requires it.
 *
 * @module
 */
import type { AuditRecord } from '../../protocol/audit-record.js'

/**
 * A destination for audit records. `write` resolves once the records are
 * durable by the sink's own definition (file: written and fsynced per its policy;
 * webhook: delivered, or fsynced in the disk spool; stdout: written).
 * Records are written in the order given; `write` calls are not concurrent.
 */
export interface AuditSink {
  readonly name: string
  write(records: readonly AuditRecord[]): Promise<void>
  /**
   * Optional fast path, used by the AuditLog when present: the same as `write`, given the
   * records already sanitized and encoded as JSON lines (each ending with `\n`), so that
   * the log encodes each record once for all its sinks.
   */
  writeLines?(lines: readonly string[]): Promise<void>
  /**
   * Optional: whether this sink takes `record` (the audit log hands it only those it
   * accepts; a sink without this method takes every record). The file trail uses it to
   * keep denials in files of their own (docs/audit.md, "Denial floods").
   */
  accepts?(record: AuditRecord): boolean
  /** Flushes and releases everything. */
  close(): Promise<void>
}

/** kube-apiserver-like backend modes. */
export type AuditMode = 'blocking-strict' | 'blocking' | 'batch'
