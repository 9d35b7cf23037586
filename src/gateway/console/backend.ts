/**
 * What the admin console needs from the gateway, and nothing more: who a token is, the
 * live sessions and streams (read once a second, never per byte), a kill, the gateway's
 * counters and the audit trail. The console plugin (plugin.ts) is built on this
 * interface alone; gateway-backend.ts implements it on the gateway's parts.
 *
 * @module
 */
import type { AuditRecord } from '../../protocol/audit-record.js'
import type { Identity } from '../auth/authenticator.js'

export type { ConsoleSessionView, ConsoleStreamView } from '../../protocol/console-view.js'
import type { ConsoleSessionView, ConsoleStreamView } from '../../protocol/console-view.js'

/** Monotonic gateway-wide counters (the console charts their rates). */
export interface ConsoleCounters {
  /** Streams that opened. */
  streamsOpened: number
  /** Requests and streams refused for authentication or authorization (401, 403). */
  denials: number
  /** Bytes relayed in both directions, live streams included. */
  bytes: number
}

/** The gateway, as the console sees it. */
export interface ConsoleBackend {
  /** Verifies a bearer token; throws the gateway's 401 AppError when it is not valid. */
  authenticate(token: string): Promise<Identity>
  /** Whether the identity has the admin role. */
  isAdmin(identity: Identity): boolean
  sessions(): ConsoleSessionView[]
  streams(): ConsoleStreamView[]
  /** Ends a live stream as `admin` (false: no such stream). */
  killStream(id: string, admin: string): boolean
  /** Ends a live session and its streams as `admin` (false: no such session). */
  killSession(id: string, admin: string): boolean
  counters(): Promise<ConsoleCounters>
  /** The audit trail, oldest first; undefined when the gateway keeps no file trail. */
  auditRecords: (() => AsyncIterable<AuditRecord>) | undefined
}
