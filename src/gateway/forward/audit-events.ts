/**
 * The forward core's audit records, built here and nowhere else: sessions opened and
 * closed, streams opened and closed, refused streams and requests (docs/audit.md). The
 * builders take the core's own facts (a session, an identity, a target, a
 * {@link StreamEnd}); they know nothing of relays or wire protocols. The `stream.failed`
 * record of a stream whose open record could not be written is the audit log's own
 * (src/gateway/audit/audit-log.ts), not built here.
 *
 * @module
 */
import { randomUUID } from 'node:crypto'
import { AUDIT_SCHEMA } from '../../protocol/audit-record.js'
import type { AuditRecord, AuditType } from '../../protocol/audit-record.js'
import { isDns1123Label, isDns1123Subdomain } from '../../protocol/names.js'
import type { StreamEnd } from '../../protocol/stream-end.js'
import { hidesDetail, newRef, publicError } from '../../shared/errors.js'
import type { AppError, AppErrorCode } from '../../shared/errors.js'
import type { Identity } from '../auth/authenticator.js'
import { MAX_RECORDED_USER_AGENT, logText, untrustedText } from '../audit/sanitize.js'
import type { NodeInfo, PodInfo } from '../registry/types.js'
import type { ClientSession } from './stream-table.js'

/** The `reason` word of a refused stream (`stream.denied`, `stream.failed`) or request. */
export type RefusalReason =
  | 'unauthenticated'
  | 'forbidden'
  | 'impersonation'
  | 'auth-unavailable'
  | 'bad-request'
  | 'draining'
  | 'limit:streams-per-connection'
  | 'limit:streams-per-user'
  | 'limit:header-size'
  | 'limit:open-timeout'
  | 'not-ready'
  | 'node-unknown'
  | 'pod-not-found'
  | 'wrong-node'
  | 'pod-not-running'
  | 'runtime-unavailable'
  | 'agent-unavailable'
  | 'connect-refused'
  | 'connect-failed'
  | 'connect-timeout'
  | 'netns'
  | 'audit-unavailable'
  | 'client-gone'
  | 'internal'
  | 'error'

/** The reason word of each code a refusal may carry; any other code is `error`. */
const REASONS: Partial<Record<AppErrorCode, RefusalReason>> = {
  PFG_ERR_AUTH_MISSING: 'unauthenticated',
  PFG_ERR_AUTH_INVALID: 'unauthenticated',
  PFG_ERR_AUTH_FORBIDDEN: 'forbidden',
  PFG_ERR_AUTH_IMPERSONATION: 'impersonation',
  PFG_ERR_AUTH_UNAVAILABLE: 'auth-unavailable',
  PFG_ERR_ROUTE_METHOD_NOT_ALLOWED: 'bad-request',
  PFG_ERR_ROUTE_BAD_NAME: 'bad-request',
  PFG_ERR_ROUTE_BAD_PORT: 'bad-request',
  PFG_ERR_PROTO_BAD_HEADER: 'bad-request',
  PFG_ERR_ROUTE_POD_NOT_FOUND: 'pod-not-found',
  PFG_ERR_AGENT_POD_NOT_FOUND: 'pod-not-found',
  PFG_ERR_ROUTE_WRONG_NODE: 'wrong-node',
  PFG_ERR_ROUTE_POD_NOT_RUNNING: 'pod-not-running',
  PFG_ERR_ROUTE_NOT_READY: 'not-ready',
  PFG_ERR_ROUTE_NODE_UNKNOWN: 'node-unknown',
  PFG_ERR_LIMIT_STREAMS_PER_CONNECTION: 'limit:streams-per-connection',
  PFG_ERR_LIMIT_STREAMS_PER_USER: 'limit:streams-per-user',
  PFG_ERR_LIMIT_OPEN_TIMEOUT: 'limit:open-timeout',
  PFG_ERR_LIMIT_HEADER_TOO_LARGE: 'limit:header-size',
  PFG_ERR_AUDIT_UNAVAILABLE: 'audit-unavailable',
  PFG_ERR_RELAY_DRAINING: 'draining',
  PFG_ERR_AGENT_CONNECT_REFUSED: 'connect-refused',
  PFG_ERR_RELAY_CONNECT_REFUSED: 'connect-refused',
  PFG_ERR_AGENT_CONNECT_TIMEOUT: 'connect-timeout',
  PFG_ERR_RELAY_CONNECT_TIMEOUT: 'connect-timeout',
  PFG_ERR_AGENT_CONNECT_FAILED: 'connect-failed',
  PFG_ERR_AGENT_NETNS: 'netns',
  PFG_ERR_AGENT_RUNTIME_UNAVAILABLE: 'runtime-unavailable',
  PFG_ERR_RELAY_AGENT_UNAVAILABLE: 'agent-unavailable',
  PFG_ERR_RELAY_STREAM_RESET: 'client-gone',
  PFG_ERR_GATEWAY_INTERNAL: 'internal',
}

/** A refusal's audit reason word. */
export function reasonFor(err: AppError): RefusalReason {
  return REASONS[err.code] ?? 'error'
}

/**
 * Reasons recorded as `stream.denied` (refused by policy: authentication, authorization,
 * limits, a bad request, shutdown); every other refusal is `stream.failed` (docs/audit.md),
 * `audit-unavailable` included, like the record the audit log writes for a refused open.
 */
const DENIED_REASONS: ReadonlySet<RefusalReason> = new Set<RefusalReason>([
  'unauthenticated',
  'forbidden',
  'impersonation',
  'bad-request',
  'draining',
  'limit:streams-per-connection',
  'limit:streams-per-user',
  'limit:header-size',
])

/** True when a refusal with this error is a `stream.denied` (else `stream.failed`). */
export function isDenial(err: AppError): boolean {
  return DENIED_REASONS.has(reasonFor(err))
}

/** The longest invalid name recorded (characters, after escaping). */
export const MAX_RECORDED_NAME = 128
/** The longest error message recorded for a refusal. */
const MAX_RECORDED_MESSAGE = 1024

/** A user agent as the admin API shows it: as records do (sanitize.ts), escaped and cut short. */
export function shownUserAgent(ua: string): string {
  return untrustedText(ua, MAX_RECORDED_USER_AGENT).text
}

/**
 * A name from a request as a refusal's record and log line show it: a valid Kubernetes
 * name as it is, anything else escaped and cut to {@link MAX_RECORDED_NAME} characters
 * (a 16 KB "pod name" must not fill the trail, nor a newline forge a row of it).
 */
function shownName(kind: 'namespace' | 'name', name: string): { text: string; redacted: boolean } {
  const valid = kind === 'namespace' ? isDns1123Label(name) : isDns1123Subdomain(name)
  return valid ? { text: name, redacted: false } : untrustedText(name, MAX_RECORDED_NAME)
}

/** A field's shown text; notes the field in `redacted` when a credential was replaced. */
function shown(redacted: string[], field: string, r: { text: string; redacted: boolean }): string {
  if (r.redacted) redacted.push(field)
  return r.text
}

/** Builds the forward core's records for one gateway instance. */
export class AuditEvents {
  readonly #gatewayId: string
  readonly #now: () => number

  constructor(gatewayId: string, now: () => number) {
    this.#gatewayId = gatewayId
    this.#now = now
  }

  #base(type: AuditType): AuditRecord {
    return {
      schema: AUDIT_SCHEMA,
      id: randomUUID(),
      time: new Date(this.#now()).toISOString(),
      type,
      gateway: this.#gatewayId,
    }
  }

  /** A record about `session`; `identity` only from the request's own authentication. */
  #session(type: AuditType, session: ClientSession, identity?: Identity): AuditRecord {
    const rec = this.#base(type)
    rec.sessionId = session.id
    rec.sourceAddress = session.sourceAddress
    rec.protocol = session.protocol
    // Only the request's own successful authentication names a user: never the session's.
    if (identity !== undefined) {
      rec.user = identity.user
      rec.groups = identity.groups
      if (identity.source !== undefined) rec.authSource = identity.source
    }
    if (session.userAgent !== undefined) rec.userAgent = session.userAgent
    return rec
  }

  /** `session.opened`, by the first identity that authenticated on the connection. */
  sessionOpened(session: ClientSession, identity: Identity): AuditRecord {
    return this.#session('session.opened', session, identity)
  }

  /** `session.closed`: every user of the connection; `user` and `groups` only when there was one. */
  sessionClosed(session: ClientSession): AuditRecord {
    const rec = this.#session('session.closed', session)
    rec.users = session.users
    const only = session.identities.size === 1 ? [...session.identities][0] : undefined
    if (only !== undefined) {
      const source = session.authSources.get(only[0])
      if (source !== undefined) rec.authSource = source
      rec.user = only[0]
      rec.groups = only[1]
    }
    rec.durationMs = this.#now() - session.openedAt
    rec.bytesClientToPod = session.bytesClientToPod
    rec.bytesPodToClient = session.bytesPodToClient
    rec.endedBy = session.endedByUser !== undefined ? 'admin' : 'client'
    if (session.endedByUser !== undefined) {
      rec.endedByUser = session.endedByUser
      rec.reason = 'admin:session'
    } else if (session.endReason !== undefined) {
      rec.reason = session.endReason
    }
    return rec
  }

  /** `stream.opened`: the stream `streamId` to `port` of `pod` on `node`. */
  streamOpened(s: StreamFacts): AuditRecord {
    const rec = this.#stream('stream.opened', s)
    if (s.requestUserAgent !== undefined) rec.userAgent = s.requestUserAgent
    return rec
  }

  /** `stream.closed`: how it ended, bytes both ways and how long it lived. */
  streamClosed(s: StreamFacts, end: StreamEnd, bytes: StreamBytes, openedAt: number): AuditRecord {
    const rec = this.#stream('stream.closed', s)
    if (s.userAgent !== undefined) rec.userAgent = s.userAgent
    rec.bytesClientToPod = bytes.clientToPod
    rec.bytesPodToClient = bytes.podToClient
    rec.durationMs = this.#now() - openedAt
    rec.endedBy = end.endedBy
    if (end.reason !== undefined) rec.reason = end.reason
    if (end.endedByUser !== undefined) rec.endedByUser = end.endedByUser
    if (end.error !== undefined) rec.error = end.error
    return rec
  }

  /**
   * `stream.closed` of a UDP flow (docs/udp.md, "Audit"): a stream's, with the datagrams
   * each way and those dropped (the gateway's, and the agent's from its trailers).
   */
  flowClosed(s: StreamFacts, end: StreamEnd, counts: FlowCounts, openedAt: number): AuditRecord {
    const rec = this.streamClosed(s, end, counts, openedAt)
    rec.datagramsClientToPod = counts.datagramsClientToPod
    rec.datagramsPodToClient = counts.datagramsPodToClient
    rec.datagramsDropped = {
      gateway: counts.droppedGateway,
      ...(counts.droppedAgent !== undefined ? { agent: counts.droppedAgent } : {}),
    }
    if (counts.wrongSource !== undefined) rec.datagramsWrongSource = counts.wrongSource
    return rec
  }

  #stream(type: AuditType, s: StreamFacts): AuditRecord {
    const rec = this.#session(type, s.session, s.identity)
    if (s.target !== undefined) rec.target = s.target
    rec.node = s.node.name
    rec.namespace = s.pod.namespace
    rec.pod = s.pod.name
    rec.podUid = s.pod.uid
    rec.port = s.port
    if (s.transport === 'udp') rec.transport = 'udp'
    rec.streamId = s.streamId
    return rec
  }

  /**
   * A refused stream or upgrade (`stream.denied` or `stream.failed`), with what the checks
   * had learnt; and what the client is told (the error itself, or a generic one with a ref
   * when its message holds internals). With `streamId`, the stream's `stream.opened` is
   * in the trail already (its agent dial failed while the record was written): the refusal
   * is then always a `stream.failed` (main trail) with that stream id, which closes it.
   */
  refusedStream(r: RefusedStream, err: AppError, streamId?: string): Refusal {
    const rec = this.#session(
      streamId === undefined && isDenial(err) ? 'stream.denied' : 'stream.failed',
      r.session,
      r.identity,
    )
    const redacted: string[] = []
    rec.namespace = shown(redacted, 'namespace', shownName('namespace', r.namespace))
    if (r.target !== undefined) {
      // A service or workload: what was asked, and the pod only once one was picked.
      rec.target = shown(redacted, 'target', shownName('name', r.target))
      if (r.found !== undefined) rec.pod = r.found.name
    } else {
      rec.pod = shown(redacted, 'pod', shownName('name', r.pod))
    }
    if (r.port > 0) rec.port = r.port
    if (r.transport === 'udp') rec.transport = 'udp'
    if (r.found !== undefined) {
      rec.podUid = r.found.uid
      rec.node = r.found.nodeName
    } else if (r.node !== undefined) {
      rec.node = shown(redacted, 'node', shownName('name', r.node))
    }
    if (streamId !== undefined) rec.streamId = streamId
    if (r.userAgent !== undefined) rec.userAgent = r.userAgent
    return completeRefusal(rec, err, redacted)
  }

  /** A refused API request (`request.denied`). */
  requestDenied(info: DeniedRequest, err: AppError): Refusal {
    const rec = this.#base('request.denied')
    rec.sourceAddress = info.sourceAddress
    if (info.identity !== undefined) {
      rec.user = info.identity.user
      rec.groups = info.identity.groups
      if (info.identity.source !== undefined) rec.authSource = info.identity.source
    }
    if (info.userAgent !== undefined) rec.userAgent = info.userAgent
    const redacted: string[] = []
    rec.method = shown(redacted, 'method', untrustedText(info.method, 16))
    rec.path = shown(redacted, 'path', untrustedText(info.path, MAX_RECORDED_NAME * 2))
    if (info.namespace !== undefined)
      rec.namespace = shown(redacted, 'namespace', shownName('namespace', info.namespace))
    if (info.pod !== undefined) rec.pod = shown(redacted, 'pod', shownName('name', info.pod))
    return completeRefusal(rec, err, redacted)
  }
}

/** What a stream's records say about it. */
export interface StreamFacts {
  streamId: string
  session: ClientSession
  identity: Identity
  pod: PodInfo
  node: NodeInfo
  port: number
  /** `udp` for a UDP flow. */
  transport?: 'udp' | undefined
  /** What the stream asked for when it named a service or workload (`svc/echo:5000`). */
  target?: string | undefined
  /** The user agent its close records (the request's, else the session's). */
  userAgent?: string | undefined
  /** The request's own user agent, when it sent one (its open record has it). */
  requestUserAgent?: string | undefined
}

/** Bytes a stream relayed, in the record's terms. */
export interface StreamBytes {
  clientToPod: number
  podToClient: number
}

/** What a UDP flow relayed, in the record's terms. */
export interface FlowCounts extends StreamBytes {
  datagramsClientToPod: number
  datagramsPodToClient: number
  /** Datagrams the gateway dropped (either way). */
  droppedGateway: number
  /** The agent's drops and wrong-source datagrams (its trailers; absent after a reset). */
  droppedAgent?: number | undefined
  wrongSource?: number | undefined
}

/** A refused stream or upgrade as the client asked for it, and what the checks found. */
export interface RefusedStream {
  session: ClientSession
  identity: Identity | undefined
  namespace: string
  pod: string
  /** `svc/echo:5000`, when the stream named a service or workload (`pod` is then empty). */
  target?: string | undefined
  node: string | undefined
  /** 0 when unknown (a bad port, an upgrade naming none); with a target, the picked pod's once known. */
  port: number
  /** The pod, when it was found before the refusal. */
  found: PodInfo | undefined
  /** `udp` for a UDP flow. */
  transport?: 'udp' | undefined
  userAgent: string | undefined
}

/** A refused API request, for its `request.denied` record. */
export interface DeniedRequest {
  method: string
  /** The path as received (no query). */
  path: string
  sourceAddress: string
  userAgent?: string
  /** The target pod, when the path names one (as received). */
  namespace?: string
  pod?: string
  /** The identity, when authentication succeeded (a 403). */
  identity?: Identity
}

/** A refusal's record, what the client is told, and the log fields that go with it. */
export interface Refusal {
  record: AuditRecord
  /** What the client is told. */
  told: AppError
  /** The ref, when the client was told one. */
  ref: string | undefined
  /** The log fields that explain the refusal. */
  detail: Record<string, string>
  /** The log line's message. */
  logMessage: string
}

/**
 * Completes a refusal's record from its error (reason, status, ref, error, redactions);
 * the client is told a generic message with a new ref when the error's holds internals.
 */
function completeRefusal(rec: AuditRecord, err: AppError, redacted: string[]): Refusal {
  rec.reason = reasonFor(err)
  rec.status = err.statusCode
  let ref = err.ref
  const told = hidesDetail(err) ? publicError(err, (ref ??= newRef())) : err
  if (ref !== undefined) rec.ref = ref
  rec.error = { code: err.code, message: refusalMessage(err) }
  if (redacted.length > 0) rec.redacted = redacted
  return {
    record: rec,
    told,
    ref,
    detail: refusalDetail(err),
    logMessage:
      err.statusCode === 401
        ? 'authentication failed'
        : `${rec.type === 'request.denied' ? 'request' : 'stream'} refused`,
  }
}

/**
 * Why authentication failed, in more detail than the client is told (jose's reason: the
 * authenticator sets it on its error).
 */
function authFailure(err: AppError): string | undefined {
  return (err as AppError & { reason?: string }).reason
}

/** A refusal's `error.message` in its record: the details (the authentication failure's reason too), bounded. */
function refusalMessage(err: AppError): string {
  const why = authFailure(err)
  return untrustedText(
    why !== undefined ? `${err.message}: ${why}` : err.message,
    MAX_RECORDED_MESSAGE,
  ).text
}

/** The log fields that explain a refusal: why authentication failed, or the details a client was not told. */
function refusalDetail(err: AppError): Record<string, string> {
  const why = authFailure(err)
  if (why !== undefined) return { reason: logText(why, MAX_RECORDED_MESSAGE) }
  return hidesDetail(err) ? { detail: logText(err.message, MAX_RECORDED_MESSAGE) } : {}
}
