/**
 * Crash recovery for the file trail. In `blocking-strict` mode every stream that relayed a
 * byte has a durable `stream.opened` record, but a gateway killed mid-transfer never
 * wrote its `stream.closed`. At start-up, before anything else is appended, the gateway
 * calls {@link recoverDanglingRecords} and appends what it returns:
 *
 * - a `stream.closed` for every `stream.opened` with no later `stream.closed` or
 *   `stream.failed` of the same `streamId`,
 * - a `session.closed` for every `session.opened` with no later `session.closed` of the
 *   same `sessionId`, naming in `users` every user its stream records name,
 *
 * with `endedBy: "gateway-restart"`, `reason: "gateway-restart"`, the identity fields of
 * the open record (`gateway` included: the instance whose stream it was), and no byte
 * counts or duration (they died with the process: omitted means unknown). Streams and
 * sessions are matched by `gateway` and id, because ids are unique within one gateway
 * instance only. Once appended, those closes are in the trail, so the next start finds
 * nothing to close: no marker record is needed. If the gateway dies again before they
 * are durable, the next start computes them again.
 *
 * Scope: the live file and the rotated files still kept; an open record already deleted
 * by retention cannot be closed (its close would have no open either). One trail per
 * gateway instance: never point two running gateways at the same file.
 *
 * @module
 */
import type { AuditRecord } from '../../protocol/audit-record.js'
import { AUDIT_SCHEMA, MAX_SESSION_USERS } from '../../protocol/audit-record.js'
import { auditTime, newAuditId, pickIdentity } from './record.js'
import { readTrail } from './trail-reader.js'
import type { TrailReadSummary } from './trail-reader.js'

/** Options for {@link recoverDanglingRecords}. */
export interface RecoveryOptions {
  /** The time put on the close records (default: now). */
  now?: Date
  /** Receives the read summary (files, malformed lines, partial tails), e.g. to log it. */
  onSummary?: (summary: TrailReadSummary) => void
}

/**
 * Reads the trail at `trailPath` (and its rotated files) and returns the close records
 * to append for the streams and sessions left open by a previous run (see the module
 * comment). Returns `[]` when there are none or when there is no trail yet.
 */
export async function recoverDanglingRecords(
  trailPath: string,
  options: RecoveryOptions = {},
): Promise<AuditRecord[]> {
  const streams = new Map<string, AuditRecord>()
  const sessions = new Map<string, { open: AuditRecord; users: Set<string> }>()
  const key = (r: AuditRecord, id: string): string => `${r.gateway ?? ''}\u0000${id}`
  // Denials open nothing: the main trail is enough.
  const summary = await readTrail(
    trailPath,
    (r) => {
      switch (r.type) {
        case 'stream.opened':
          if (r.streamId !== undefined) streams.set(key(r, r.streamId), r)
          break
        case 'stream.closed':
        case 'stream.failed':
          if (r.streamId !== undefined) streams.delete(key(r, r.streamId))
          break
        case 'session.opened':
          if (r.sessionId !== undefined) {
            const users = new Set<string>(r.user !== undefined ? [r.user] : [])
            sessions.set(key(r, r.sessionId), { open: r, users })
          }
          break
        case 'session.closed':
          if (r.sessionId !== undefined) sessions.delete(key(r, r.sessionId))
          break
        default:
          break
      }
      // Who used a session: every user its streams name (a session may carry several).
      if (r.type.startsWith('stream.') && r.sessionId !== undefined && r.user !== undefined) {
        const s = sessions.get(key(r, r.sessionId))
        if (s !== undefined && s.users.size < MAX_SESSION_USERS) s.users.add(r.user)
      }
    },
    { denials: false },
  )
  options.onSummary?.(summary)
  const time = auditTime(options.now)
  const close = (open: AuditRecord, type: 'stream.closed' | 'session.closed'): AuditRecord => ({
    schema: AUDIT_SCHEMA,
    id: newAuditId(),
    time,
    type,
    ...pickIdentity(open),
    endedBy: 'gateway-restart',
    reason: 'gateway-restart',
  })
  return [
    ...[...streams.values()].map((r) => close(r, 'stream.closed')),
    ...[...sessions.values()].map(({ open, users }) =>
      sessionClose(close(open, 'session.closed'), users),
    ),
  ]
}

/** A `session.closed` names every user of the session; `user` only when there was one. */
function sessionClose(rec: AuditRecord, users: ReadonlySet<string>): AuditRecord {
  if (users.size === 0) return rec
  rec.users = [...users]
  if (users.size > 1) {
    delete rec.user
    delete rec.groups
  }
  return rec
}
