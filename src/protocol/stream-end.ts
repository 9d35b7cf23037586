/**
 * How a forwarded stream ended: one vocabulary from the relay to the audit record. The relay
 * is aborted with an {@link AbortReason} (its endpoints turn it into their wire signal: an
 * RST code, a TCP reset, a line of text), the forward core keeps a {@link StreamEnd} for the
 * `stream.closed` record, and both use the words of the record's `endedBy`
 * (docs/audit.md).
 *
 * @module
 */

/** Who or what ended a stream, as the audit trail records it (`endedBy`). */
export type EndedBy = 'client' | 'pod' | 'gateway' | 'admin' | 'limit' | 'error' | 'gateway-restart'

/**
 * Why a relay is aborted: pfgate ends it (`admin`, `limit`, or `gateway`: the process running
 * the relay is shutting down), the other side failed (`peer-reset`: propagate), or an
 * internal error.
 */
export type AbortReason =
  Extract<EndedBy, 'admin' | 'limit' | 'gateway'> | 'peer-reset' | 'internal'

/** The `reason` word of a `stream.closed` record (docs/audit.md). */
export type EndReason =
  | 'admin:stream'
  | 'admin:session'
  | 'limit:idle-timeout'
  | 'limit:max-lifetime'
  | 'limit:buffer-budget'
  | 'shutdown'
  | 'client-unresponsive'
  | 'client-reset'
  | 'client-gone'
  | 'pod-reset'
  | 'agent-failed'

/** How one stream ended, for its `stream.closed` record. */
export interface StreamEnd {
  endedBy: EndedBy
  reason?: EndReason
  /** The admin who ended it. */
  endedByUser?: string
  error?: { code: string; message: string }
}

/** An end the gateway decides (admin, limit, shutdown, a client found gone): what the relay is told. */
export type Stop = StreamEnd & {
  endedBy: 'admin' | 'limit' | 'gateway' | 'client'
  reason: EndReason
}

/** The relay abort for a {@link Stop}: a client found gone is a reset toward the pod. */
export function abortReasonOf(stop: Stop): AbortReason {
  return stop.endedBy === 'client' ? 'peer-reset' : stop.endedBy
}
