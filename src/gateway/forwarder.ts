/**
 * The forwarder: the one place every client protocol meets. An edge adapter
 * (native HTTP/2, SPDY, WebSocket) turns its wire format into a *forwarded
 * connection* — identity + target + a duplex byte stream — and calls
 * {@link Forwarder.open} then {@link OpenedForward.start}. Authentication,
 * authorization, resolution, limits, the agent hop, the relay and the audit trail
 * all live here and never know which protocol the client spoke (they record it).
 *
 * Order of checks for one stream: header size (431) → draining (503) →
 * authenticate (401) → impersonation (403) → names/port/method (400, 405) → authorize
 * (403) → registry ready (503)
 * → pod (404) → node check (404) → phase (400) → node's agent known (503) →
 * limits (429) → agent dial (502/504; the whole open is bounded by the
 * stream-open timeout, 504) → audit open record (durable in blocking-strict; 503
 * if it cannot be written) → 200. No byte is relayed before both the agent's 200
 * and the open record are in. After 200, the sweeper ends streams that were idle
 * or lived too long (RST_STREAM ENHANCE_YOUR_CALM, `endedBy: limit`).
 *
 * Identity in the audit trail comes only from a request's own successful authentication:
 * a refused request on a connection where someone else authenticated is not theirs. A
 * connection may carry several users; its `session.closed` names them all.
 *
 * Refusals (`stream.denied`, `request.denied`) go through {@link AuditPort.appendDenial}:
 * within a per-source budget they are recorded and logged one by one, beyond it only
 * counted (docs/audit.md, "Denial floods"). Names from a refused request are recorded
 * escaped and cut short; errors whose messages hold internals reach the client as a
 * generic message with a ref (the log line has the details and the same ref).
 *
 * @module
 */
import { randomBytes, randomUUID } from 'node:crypto'
import type { ClientHttp2Stream } from 'node:http2'
import { AUDIT_SCHEMA, MAX_SESSION_USERS } from '../protocol/audit-record.js'
import type { AuditRecord, ClientProtocol } from '../protocol/audit-record.js'
import {
  GATEWAY_STREAM_ID_HEADER,
  POD_UID_HEADER,
  PORT_HEADER,
  agentPortForwardPath,
} from '../protocol/constants.js'
import {
  assertNamespace,
  assertObjectName,
  isDns1123Label,
  isDns1123Subdomain,
} from '../protocol/names.js'
import { RST } from '../protocol/reset-codes.js'
import type { EndedBy } from '../protocol/reset-codes.js'
import { DuplexRelay } from '../shared/duplex-relay.js'
import type { AbortReason, RelayEndpoint, RelayOutcome } from '../shared/duplex-relay.js'
import {
  AppError,
  appError,
  describeError,
  hidesDetail,
  isAppError,
  newRef,
  publicError,
} from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import { h2Endpoint, resetStream } from '../shared/relay-endpoints.js'
import { verifiedClientCertificate } from './auth/authenticator.js'
import type { Authenticator, Identity } from './auth/authenticator.js'
import type { Authorizer } from './authz/authorizer.js'
import type { PeerCertificate } from 'node:tls'
import { MAX_RECORDED_USER_AGENT, logText, untrustedText } from './audit/sanitize.js'
import { impersonationRefused } from './impersonation.js'
import type { Impersonation } from './impersonation.js'
import type { GatewayConfig } from './config.js'
import type { GatewayMetrics } from './metrics.js'
import type { AgentPool } from './relay/agent-pool.js'
import type { NodeInfo, PodInfo, PodRegistry } from './registry/types.js'

/** What the forwarder needs from the audit log (src/gateway/audit). */
export interface AuditPort {
  /** Resolves when the record is as durable as the mode requires; rejects (AppError) if not. */
  append(record: AuditRecord): Promise<void>
  /**
   * Records a refusal (`stream.denied`, `request.denied`) within its source's budget.
   * Returns true when the record was appended on its own (the caller logs its line),
   * false when it was only counted for a `denials.suppressed` summary (the caller stays
   * silent: a flood must not flood the log either). Never throws; write failures are
   * logged and counted.
   */
  appendDenial(record: AuditRecord): boolean
  /** False while the sink cannot write (fail closed in blocking-strict). */
  healthy(): boolean
  readonly mode: 'blocking-strict' | 'blocking' | 'batch'
}

/** An audit port that records nothing (tests of other parts only). */
export const NO_AUDIT: AuditPort = {
  append: () => Promise.resolve(),
  appendDenial: () => true,
  healthy: () => true,
  mode: 'batch',
}

/** What the forwarder needs. */
export interface ForwarderDeps {
  registry: PodRegistry
  authenticator: Authenticator
  authorizer: Authorizer
  agents: AgentPool
  audit: AuditPort
  limits: GatewayConfig['limits']
  metrics: GatewayMetrics
  logger: Logger
  /** This gateway instance's id (in every audit record). */
  gatewayId: string
  /** Told of each relayed stream that starts and ends (the buffer budget). */
  budget?: { started(live: LiveStream): void; ended(live: LiveStream): void }
  now?: () => number
}

/** Facts about a client connection that an adapter supplies. */
export interface ClientSessionInfo {
  protocol: ClientProtocol
  /** `ip:port`, IPv6 in brackets. */
  sourceAddress: string
  userAgent?: string
  /** The client certificate TLS verified against the client CA, if any (x509 identity source). */
  clientCertificate?: PeerCertificate
  /** Ends the client connection (admin kill of a session); the adapter resets its streams. */
  terminate: () => void
}

/** One client connection (an HTTP/2 session, an upgraded SPDY or WebSocket connection). */
export class ClientSession {
  readonly id: string
  readonly protocol: ClientProtocol
  readonly sourceAddress: string
  readonly userAgent: string | undefined
  readonly clientCertificate: PeerCertificate | undefined
  readonly openedAt: number
  /**
   * Every user that authenticated a request on this connection, with the groups of their
   * first authentication, in order (at most MAX_SESSION_USERS).
   */
  readonly identities = new Map<string, string[]>()
  /** Which source authenticated each of {@link identities}. */
  readonly authSources = new Map<string, NonNullable<Identity['source']>>()
  readonly streams = new Set<LiveStream>()
  /** Streams being opened (count toward the per-connection limit). */
  pending = 0
  bytesClientToPod = 0
  bytesPodToClient = 0
  streamCount = 0
  ended = false
  /** The session.opened record has been appended. */
  audited: Promise<void> | undefined
  endedByUser: string | undefined
  /** Why the gateway ended the connection, when it did (the session.closed `reason`). */
  endReason: string | undefined
  readonly #terminate: () => void

  constructor(id: string, info: ClientSessionInfo, now: number) {
    this.id = id
    this.protocol = info.protocol
    this.sourceAddress = info.sourceAddress
    this.userAgent = info.userAgent
    this.clientCertificate = info.clientCertificate
    this.openedAt = now
    this.#terminate = info.terminate
  }

  /** The users that authenticated on this connection, first one first. */
  get users(): string[] {
    return [...this.identities.keys()]
  }

  /** Notes that `identity` authenticated a request here. */
  addIdentity(identity: Identity): void {
    if (this.identities.size < MAX_SESSION_USERS && !this.identities.has(identity.user)) {
      this.identities.set(identity.user, identity.groups)
      if (identity.source !== undefined) this.authSources.set(identity.user, identity.source)
    }
  }

  /** Ends the connection (admin). */
  terminate(): void {
    this.#terminate()
  }
}

/** A target as the client asked for it. */
export interface ForwardRequest {
  session: ClientSession
  /** The Authorization header value as received. */
  authorization: string | string[] | undefined
  namespace: string
  pod: string
  /** The node the client named, if any (checked, never trusted). */
  node?: string
  /**
   * Remote port, or the adapter's parse error for it: the error is thrown only after
   * authentication, so an unauthenticated client learns nothing (401 before 400).
   */
  port: number | AppError
  /** User agent of this request, if it differs from the session's. */
  userAgent?: string
  /** Called once the request's token has verified (before the other checks). */
  onAuthenticated?: () => void
  /** The impersonation headers the request carried, if any (refused after authentication). */
  impersonation?: Impersonation
  /** Aborted when the client goes away during the open. */
  signal?: AbortSignal
  /**
   * Size of the request's header list (RFC 9113 §6.5.2: name + value + 32 per field), when
   * the adapter can measure it: above `limits.maxHeaderBytes` the stream is refused with 431
   * before anything else is looked at (the token included).
   */
  headerBytes?: number
}

/** An upgrade to check before it is accepted ({@link Forwarder.admit}). */
export interface AdmitRequest {
  session: ClientSession
  /** The Authorization header value as received. */
  authorization: string | string[] | undefined
  namespace: string
  pod: string
  /** The node the client named, if any (checked, never trusted). */
  node?: string
  /**
   * The ports named up front (WebSocket channels: `?ports=`), the adapter's parse error
   * for them (thrown only after authentication), or undefined when each stream names
   * its own (SPDY).
   */
  ports?: readonly number[] | AppError
  /** User agent of this request, if it differs from the session's. */
  userAgent?: string
  /** Called once the request's token has verified (before the other checks). */
  onAuthenticated?: () => void
  /** The impersonation headers the request carried, if any (refused after authentication). */
  impersonation?: Impersonation
}

/** A refused API request, for its `request.denied` record ({@link Forwarder.requestDenied}). */
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

/** What the checks learnt before one of them refused (for the audit record). */
interface Found {
  identity?: Identity
  pod?: PodInfo
}

/** Admin view of a live stream. */
export interface LiveStreamView {
  id: string
  sessionId: string
  user: string
  groups: string[]
  sourceAddress: string
  protocol: ClientProtocol
  namespace: string
  pod: string
  podUid: string
  node: string
  port: number
  openedAt: string
  bytesClientToPod: number
  bytesPodToClient: number
}

/** A stream between 200 and its end. */
export class LiveStream {
  readonly id: string
  readonly session: ClientSession
  readonly identity: Identity
  readonly pod: PodInfo
  readonly node: NodeInfo
  readonly port: number
  readonly openedAt: number
  readonly userAgent: string | undefined
  relay: DuplexRelay | undefined
  /** The agent stream. */
  upstream: ClientHttp2Stream | undefined
  /** Set when an admin/limit/shutdown ended it: who and why (and the limit's error). */
  endedBy:
    | { by: EndedBy; user?: string; reason: string; error?: { code: string; message: string } }
    | undefined

  constructor(
    id: string,
    session: ClientSession,
    identity: Identity,
    pod: PodInfo,
    node: NodeInfo,
    port: number,
    openedAt: number,
    userAgent: string | undefined,
  ) {
    this.id = id
    this.session = session
    this.identity = identity
    this.pod = pod
    this.node = node
    this.port = port
    this.openedAt = openedAt
    this.userAgent = userAgent
  }

  /** Ends the stream abnormally (`client`: the gateway found the client gone). */
  kill(
    by: 'admin' | 'limit' | 'gateway' | 'client',
    reason: string,
    user?: string,
    error?: { code: string; message: string },
  ): void {
    if (this.relay === undefined || this.relay.done) return
    this.endedBy = { by, reason }
    if (user !== undefined) this.endedBy.user = user
    if (error !== undefined) this.endedBy.error = error
    const abort: AbortReason =
      by === 'admin'
        ? 'admin'
        : by === 'limit'
          ? 'limit'
          : by === 'client'
            ? 'peer-reset'
            : 'shutdown'
    this.relay.abort(abort)
  }

  view(): LiveStreamView {
    return {
      id: this.id,
      sessionId: this.session.id,
      user: this.identity.user,
      groups: this.identity.groups,
      sourceAddress: this.session.sourceAddress,
      protocol: this.session.protocol,
      namespace: this.pod.namespace,
      pod: this.pod.name,
      podUid: this.pod.uid,
      node: this.node.name,
      port: this.port,
      openedAt: new Date(this.openedAt).toISOString(),
      bytesClientToPod: this.relay?.bytesAtoB ?? 0,
      bytesPodToClient: this.relay?.bytesBtoA ?? 0,
    }
  }
}

/** A stream the agent accepted (200) whose open record is in; the adapter answers its client, then starts. */
export interface OpenedForward {
  readonly streamId: string
  readonly pod: PodInfo
  readonly node: NodeInfo
  readonly identity: Identity
  /** The agent stream (pod side). */
  readonly upstream: ClientHttp2Stream
  /** Starts relaying between the client endpoint and the pod. */
  start(client: RelayEndpoint): LiveStream
  /** The client vanished before start: close the agent stream and record it. */
  cancel(reason: string): void
}

/** The session's verified client certificate, as a spread for {@link ClientSessionInfo}. */
export function certificateOf(socket: unknown): { clientCertificate?: PeerCertificate } {
  const clientCertificate = verifiedClientCertificate(socket)
  return clientCertificate !== undefined ? { clientCertificate } : {}
}

/** A stream-level failure with its audit reason word. */
function reasonFor(err: AppError): string {
  switch (err.code) {
    case 'PFG_ERR_AUTH_MISSING':
    case 'PFG_ERR_AUTH_INVALID':
      return 'unauthenticated'
    case 'PFG_ERR_AUTH_FORBIDDEN':
      return 'forbidden'
    case 'PFG_ERR_AUTH_IMPERSONATION':
      return 'impersonation'
    case 'PFG_ERR_AUTH_UNAVAILABLE':
      return 'auth-unavailable'
    case 'PFG_ERR_ROUTE_METHOD_NOT_ALLOWED':
    case 'PFG_ERR_ROUTE_BAD_NAME':
    case 'PFG_ERR_ROUTE_BAD_PORT':
    case 'PFG_ERR_PROTO_BAD_HEADER':
      return 'bad-request'
    case 'PFG_ERR_ROUTE_POD_NOT_FOUND':
    case 'PFG_ERR_AGENT_POD_NOT_FOUND':
      return 'pod-not-found'
    case 'PFG_ERR_ROUTE_WRONG_NODE':
      return 'wrong-node'
    case 'PFG_ERR_ROUTE_POD_NOT_RUNNING':
      return 'pod-not-running'
    case 'PFG_ERR_ROUTE_NOT_READY':
      return 'not-ready'
    case 'PFG_ERR_ROUTE_NODE_UNKNOWN':
      return 'node-unknown'
    case 'PFG_ERR_LIMIT_STREAMS_PER_CONNECTION':
      return 'limit:streams-per-connection'
    case 'PFG_ERR_LIMIT_STREAMS_PER_USER':
      return 'limit:streams-per-user'
    case 'PFG_ERR_LIMIT_OPEN_TIMEOUT':
      return 'limit:open-timeout'
    case 'PFG_ERR_LIMIT_HEADER_TOO_LARGE':
      return 'limit:header-size'
    case 'PFG_ERR_AUDIT_UNAVAILABLE':
      return 'audit-unavailable'
    case 'PFG_ERR_RELAY_DRAINING':
      return 'draining'
    case 'PFG_ERR_AGENT_CONNECT_REFUSED':
    case 'PFG_ERR_RELAY_CONNECT_REFUSED':
      return 'connect-refused'
    case 'PFG_ERR_AGENT_CONNECT_TIMEOUT':
    case 'PFG_ERR_RELAY_CONNECT_TIMEOUT':
      return 'connect-timeout'
    case 'PFG_ERR_AGENT_CONNECT_FAILED':
      return 'connect-failed'
    case 'PFG_ERR_AGENT_NETNS':
      return 'netns'
    case 'PFG_ERR_AGENT_RUNTIME_UNAVAILABLE':
      return 'runtime-unavailable'
    case 'PFG_ERR_RELAY_AGENT_UNAVAILABLE':
      return 'agent-unavailable'
    case 'PFG_ERR_RELAY_STREAM_RESET':
      return 'client-gone'
    default:
      return 'error'
  }
}

/**
 * Reasons recorded as `stream.denied` (refused by policy: authentication, authorization,
 * limits, a bad request, shutdown); every other refusal is `stream.failed` (docs/audit.md),
 * `audit-unavailable` included, like the record the audit log writes for a refused open.
 */
const DENIED_REASONS = new Set([
  'unauthenticated',
  'forbidden',
  'impersonation',
  'bad-request',
  'draining',
  'limit:streams-per-connection',
  'limit:streams-per-user',
  'limit:header-size',
])

/** An 'error' listener that only keeps an error from being unhandled (errors are reported elsewhere). */
function ignoreError(): void {}

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

/** Formats an address pair as `ip:port` with IPv6 in brackets. */
export function formatAddress(address: string | undefined, port: number | undefined): string {
  if (address === undefined) return 'unknown'
  const host = address.includes(':') ? `[${address}]` : address
  return port === undefined ? host : `${host}:${port}`
}

/** The forwarder. One per gateway. */
export class Forwarder {
  readonly #d: ForwarderDeps
  readonly #now: () => number
  readonly #sessions = new Map<string, ClientSession>()
  readonly #streams = new Map<string, LiveStream>()
  readonly #perUser = new Map<string, number>()
  #draining = false
  /** Audit appends in progress (shutdown waits for them: {@link settle}). */
  readonly #inflight = new Set<Promise<unknown>>()
  #seq = 0
  #sessionSeq = 0
  readonly #prefix: string
  #sweeper: NodeJS.Timeout | undefined

  constructor(deps: ForwarderDeps) {
    this.#d = deps
    this.#now = deps.now ?? Date.now
    this.#prefix = deps.gatewayId.slice(0, 8)
    deps.metrics.setSources({
      sessions: () => this.#sessions.size,
      streams: () => this.#streams.size,
      agentSessions: () => deps.agents.sessionCount(),
    })
    const { idleTimeoutMs, maxLifetimeMs } = deps.limits
    if (idleTimeoutMs > 0 || maxLifetimeMs > 0) {
      const every = Math.max(
        100,
        Math.min(1000, Math.min(...[idleTimeoutMs, maxLifetimeMs].filter((x) => x > 0)) / 4),
      )
      this.#sweeper = setInterval(() => this.#sweep(), every)
      this.#sweeper.unref()
    }
  }

  /** Live client sessions (admin). */
  sessions(): ClientSession[] {
    return [...this.#sessions.values()]
  }

  /** Live streams (admin). */
  streams(): LiveStream[] {
    return [...this.#streams.values()]
  }

  /** Is the gateway draining (shutdown)? */
  get draining(): boolean {
    return this.#draining
  }

  /** Registers a new client connection. Call {@link endSession} when it closes. */
  newSession(info: ClientSessionInfo): ClientSession {
    const id = `c-${this.#prefix}-${(++this.#sessionSeq).toString(36)}`
    const s = new ClientSession(id, info, this.#now())
    this.#sessions.set(id, s)
    return s
  }

  /** The client connection closed. Its streams end through their own relays. */
  endSession(session: ClientSession): void {
    if (session.ended) return
    session.ended = true
    this.#sessions.delete(session.id)
    const audited = session.audited
    if (audited === undefined) return
    // session.closed is appended after session.opened settled, so the trail stays ordered.
    const close = (): void => {
      const rec = this.#record('session.closed', session)
      // Every user of the connection; `user` and `groups` only when there was one.
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
      this.#appendLogged(rec)
    }
    this.#track(audited.then(close, close))
  }

  /**
   * Shutdown, once the client connections are gone: ends the sessions still registered
   * and resolves when every audit record the forwarder has begun to append is in (so
   * that each `session.closed` precedes `gateway.stopped`).
   */
  async settle(): Promise<void> {
    for (const s of [...this.#sessions.values()]) this.endSession(s)
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight])
  }

  #track(p: Promise<unknown>): void {
    this.#inflight.add(p)
    void p.finally(() => this.#inflight.delete(p))
  }

  /** Ends one stream (admin). Returns false when no such stream is live. */
  killStream(id: string, admin: string): boolean {
    const s = this.#streams.get(id)
    if (s === undefined) return false
    s.kill('admin', 'admin:stream', admin)
    return true
  }

  /**
   * The client of `session` stopped answering PINGs (its link went down): its streams end
   * now, audited as ended by the client with reason `client-unresponsive` (the adapter
   * then closes the connection; its session.closed record gives the same reason).
   */
  clientUnresponsive(session: ClientSession, why: string): void {
    session.endReason = 'client-unresponsive'
    this.#d.metrics.limitHits.inc({ limit: 'client-keepalive' })
    this.#d.logger.info(
      { session: session.id, source: session.sourceAddress, streams: session.streams.size, why },
      'client unresponsive: ending its connection',
    )
    for (const s of session.streams) {
      s.kill('client', 'client-unresponsive', undefined, {
        code: 'PFG_ERR_RELAY_CLIENT_LOST',
        message: why,
      })
    }
  }

  /** Ends a whole client session (admin). */
  killSession(id: string, admin: string): boolean {
    const session = this.#sessions.get(id)
    if (session === undefined) return false
    session.endedByUser = admin
    for (const s of session.streams) s.kill('admin', 'admin:session', admin)
    session.terminate()
    return true
  }

  /**
   * Opens a forwarded connection up to the agent's 200. Throws an AppError (already
   * audited and counted) when the stream is refused or fails.
   */
  async open(req: ForwardRequest): Promise<OpenedForward> {
    const started = this.#now()
    const t0 = performance.now()
    const { session } = req
    const target = {
      namespace: req.namespace,
      pod: req.pod,
      node: req.node,
      port: typeof req.port === 'number' ? req.port : 0,
    }
    const found: Found = {}
    let counted = false
    try {
      const maxHeader = this.#d.limits.maxHeaderBytes
      if (req.headerBytes !== undefined && req.headerBytes > maxHeader) {
        this.#d.metrics.limitHits.inc({ limit: 'header-size' })
        throw appError(
          'PFG_ERR_LIMIT_HEADER_TOO_LARGE',
          `request headers too large (${req.headerBytes} bytes; limit ${maxHeader})`,
        )
      }
      const node = await this.#check(
        req,
        typeof req.port === 'number' ? [req.port] : req.port,
        found,
      )
      const identity = found.identity as Identity
      const pod = found.pod as PodInfo
      const port = req.port as number
      this.#checkLimits(session, identity)
      counted = true
      session.pending++
      this.#perUser.set(identity.user, (this.#perUser.get(identity.user) ?? 0) + 1)
      if (this.#d.audit.mode === 'blocking-strict' && !this.#d.audit.healthy()) {
        throw appError('PFG_ERR_AUDIT_UNAVAILABLE', 'audit trail unavailable; refusing new streams')
      }
      const opened = await this.#openToAgent(req, port, identity, pod, node, started)
      this.#d.metrics.openLatency.observe(
        { protocol: session.protocol },
        (performance.now() - t0) / 1000,
      )
      return opened
    } catch (err) {
      const { identity, pod } = found
      if (counted && identity !== undefined) {
        session.pending--
        this.#decUser(identity.user)
      }
      const e = isAppError(err)
        ? err
        : appError('PFG_ERR_RELAY_AGENT_UNAVAILABLE', describeError(err), { cause: err })
      if ((e as AppError & { audited?: boolean }).audited) throw e
      throw this.#rejected(req, identity, pod, target, e)
    }
  }

  /**
   * Checks an upgrade (SPDY, WebSocket) before it is answered 101, so that a bad token
   * gets 401 and a forbidden target 403 as an HTTP status the client shows: draining,
   * authentication, names, authorization (every port named up front, or, when the ports
   * come later with each stream, some port of the pod), registry, pod, node, phase.
   * Throws the AppError (audited as `open` audits it; the one the client may see). Every
   * stream is checked again by
   * {@link open} (a token that expires mid-session opens no new stream).
   */
  async admit(req: AdmitRequest): Promise<Identity> {
    const first = req.ports instanceof AppError ? undefined : req.ports?.[0]
    const target = {
      namespace: req.namespace,
      pod: req.pod,
      node: req.node,
      port: first ?? 0,
    }
    const found: Found = {}
    try {
      await this.#check(req, req.ports, found)
      return found.identity as Identity
    } catch (err) {
      const e = isAppError(err)
        ? err
        : appError('PFG_ERR_RELAY_AGENT_UNAVAILABLE', describeError(err), { cause: err })
      throw this.#rejected(req, found.identity, found.pod, target, e)
    }
  }

  /**
   * The checks a stream and an upgrade share, in order; `found` learns the identity and
   * the pod as they are established (for the audit record of a refusal). `ports`
   * undefined: any port of the pod will do (SPDY upgrades name ports per stream).
   */
  async #check(
    req: AdmitRequest,
    ports: readonly number[] | AppError | undefined,
    found: Found,
  ): Promise<NodeInfo> {
    const { session } = req
    if (this.#draining) {
      throw appError('PFG_ERR_RELAY_DRAINING', 'the gateway is shutting down; retry shortly')
    }
    const identity = await this.#d.authenticator.authenticate({
      authorization: req.authorization,
      ...(session.clientCertificate !== undefined
        ? { clientCertificate: session.clientCertificate }
        : {}),
    })
    found.identity = identity
    req.onAuthenticated?.()
    session.addIdentity(identity)
    this.#auditSession(session, identity)
    if (req.impersonation !== undefined) throw impersonationRefused(identity, req.impersonation)
    if (ports instanceof AppError) throw ports
    assertNamespace(req.namespace)
    assertObjectName('pod', req.pod)
    if (req.node !== undefined) assertObjectName('node', req.node)
    const refused = await this.#d.authorizer.mayForward(
      identity,
      req.namespace,
      req.pod,
      ports ?? [],
    )
    if (refused === true) {
      throw appError(
        'PFG_ERR_AUTH_FORBIDDEN',
        `user "${identity.user}" cannot forward to pod ${req.namespace}/${req.pod}`,
      )
    }
    if (refused !== undefined) {
      throw appError(
        'PFG_ERR_AUTH_FORBIDDEN',
        `user "${identity.user}" cannot forward to port ${refused} of pod ${req.namespace}/${req.pod}`,
      )
    }
    if (!this.#d.registry.isReady()) {
      throw appError(
        'PFG_ERR_ROUTE_NOT_READY',
        'the pod registry has not synced yet; retry shortly',
      )
    }
    const pod = this.#d.registry.getPod(req.namespace, req.pod)
    if (pod === undefined) {
      throw appError(
        'PFG_ERR_ROUTE_POD_NOT_FOUND',
        `pods "${req.pod}" not found in namespace "${req.namespace}"`,
      )
    }
    found.pod = pod
    if (req.node !== undefined && req.node !== pod.nodeName) {
      throw appError(
        'PFG_ERR_ROUTE_WRONG_NODE',
        `pod ${req.namespace}/${req.pod} is not on node "${req.node}"`,
      )
    }
    if (pod.phase !== 'Running') {
      throw appError(
        'PFG_ERR_ROUTE_POD_NOT_RUNNING',
        `unable to forward port because pod is not running. Current status=${pod.phase}`,
      )
    }
    const node = pod.nodeName === '' ? undefined : this.#d.registry.getNode(pod.nodeName)
    if (node === undefined) {
      throw appError(
        'PFG_ERR_ROUTE_NODE_UNKNOWN',
        `no agent address is known for node "${pod.nodeName}" of pod ${req.namespace}/${req.pod}`,
      )
    }
    return node
  }

  #checkLimits(session: ClientSession, identity: Identity): void {
    const l = this.#d.limits
    if (session.streams.size + session.pending >= l.streamsPerConnection) {
      this.#d.metrics.limitHits.inc({ limit: 'streams-per-connection' })
      throw appError(
        'PFG_ERR_LIMIT_STREAMS_PER_CONNECTION',
        `too many concurrent streams on this connection (limit ${l.streamsPerConnection})`,
      )
    }
    if ((this.#perUser.get(identity.user) ?? 0) >= l.streamsPerUser) {
      this.#d.metrics.limitHits.inc({ limit: 'streams-per-user' })
      throw appError(
        'PFG_ERR_LIMIT_STREAMS_PER_USER',
        `too many concurrent streams for user "${identity.user}" (limit ${l.streamsPerUser})`,
      )
    }
  }

  async #openToAgent(
    req: ForwardRequest,
    port: number,
    identity: Identity,
    pod: PodInfo,
    node: NodeInfo,
    started: number,
  ): Promise<OpenedForward> {
    const { session } = req
    const streamId = `s-${this.#prefix}-${(++this.#seq).toString(36)}`
    const ac = new AbortController()
    const onClientAbort = (): void => ac.abort()
    req.signal?.addEventListener('abort', onClientAbort, { once: true })
    const openTimer = setTimeout(() => ac.abort(), this.#d.limits.streamOpenTimeoutMs)
    const headers: Record<string, string> = {
      [PORT_HEADER]: String(port),
      [POD_UID_HEADER]: pod.uid,
      [GATEWAY_STREAM_ID_HEADER]: streamId,
    }

    // 1. The agent connects to the pod's port and answers 200.
    let upstream: ClientHttp2Stream
    try {
      upstream = await this.#d.agents
        .get(node)
        .open(agentPortForwardPath(pod.namespace, pod.name), headers, {
          signal: ac.signal,
          timeoutMs: this.#d.limits.streamOpenTimeoutMs,
        })
    } catch (err) {
      if (
        isAppError(err) &&
        err.code === 'PFG_ERR_RELAY_STREAM_RESET' &&
        ac.signal.aborted &&
        req.signal?.aborted !== true
      ) {
        this.#d.metrics.limitHits.inc({ limit: 'open-timeout' })
        throw appError(
          'PFG_ERR_LIMIT_OPEN_TIMEOUT',
          `the stream did not open within ${this.#d.limits.streamOpenTimeoutMs} ms`,
        )
      }
      throw err
    } finally {
      clearTimeout(openTimer)
      req.signal?.removeEventListener('abort', onClientAbort)
    }
    // Handled by the relay; keep unhandled errors from crashing the process. A module-level
    // listener: a closure here would keep this whole function's scope (the request, the
    // abort controller, the timer, the open record) alive as long as the stream lives.
    upstream.on('error', ignoreError)

    // 2. The open record. In blocking-strict it is durable before the client hears 200,
    //    so no byte is relayed without it (the pod may have sent a banner: it waits).
    const openRec = this.#record('stream.opened', session, identity)
    this.#target(openRec, pod, node, port)
    openRec.streamId = streamId
    if (req.userAgent !== undefined) openRec.userAgent = req.userAgent
    try {
      await this.#d.audit.append(openRec)
    } catch (err) {
      const ref = newRef()
      this.#d.logger.error({ err: describeError(err), streamId, ref }, 'audit open record failed')
      this.#d.metrics.auditFailures.inc({ sink: 'all' })
      if (this.#d.audit.mode === 'blocking-strict') {
        // Fail closed. The client learns no file path or errno: the log line has them.
        resetStream(upstream, RST.REFUSED_STREAM)
        const refused = publicError(
          appError('PFG_ERR_AUDIT_UNAVAILABLE', 'audit trail unavailable'),
          ref,
        )
        // The audit log itself records this refused stream (stream.failed) once it can write.
        ;(refused as AppError & { audited?: boolean }).audited = true
        this.#countRejected(refused)
        throw refused
      }
      // blocking / batch: the failure is logged and counted; the stream goes on.
    }
    let settled = false
    const done = (): void => {
      session.pending--
      settled = true
    }
    return {
      streamId,
      pod,
      node,
      identity,
      upstream,
      start: (client) => {
        if (settled) throw new TypeError('start() called twice')
        done()
        return this.#start(streamId, session, identity, pod, node, port, req, upstream, client)
      },
      cancel: (reason) => {
        if (settled) return
        done()
        this.#decUser(identity.user)
        resetStream(upstream, RST.CANCEL)
        const close = this.#record('stream.closed', session, identity)
        this.#target(close, pod, node, port)
        close.streamId = streamId
        close.endedBy = 'client'
        close.reason = 'client-gone'
        close.error = { code: 'PFG_ERR_RELAY_STREAM_RESET', message: reason }
        close.bytesClientToPod = 0
        close.bytesPodToClient = 0
        close.durationMs = this.#now() - started
        this.#appendLogged(close)
      },
    }
  }

  #start(
    streamId: string,
    session: ClientSession,
    identity: Identity,
    pod: PodInfo,
    node: NodeInfo,
    port: number,
    req: ForwardRequest,
    upstream: ClientHttp2Stream,
    client: RelayEndpoint,
  ): LiveStream {
    const live = new LiveStream(
      streamId,
      session,
      identity,
      pod,
      node,
      port,
      this.#now(),
      req.userAgent ?? session.userAgent,
    )
    live.upstream = upstream
    this.#streams.set(streamId, live)
    session.streams.add(live)
    session.streamCount++
    this.#d.metrics.streamsOpened.inc({ protocol: session.protocol })
    // Toward the agent: a failed client is a CANCEL.
    live.relay = new DuplexRelay(client, h2Endpoint(upstream, RST.CANCEL), {
      now: this.#now,
      onDone: (outcome) => this.#closed(live, outcome),
    })
    this.#d.budget?.started(live)
    return live
  }

  #closed(live: LiveStream, outcome: RelayOutcome): void {
    this.#streams.delete(live.id)
    this.#d.budget?.ended(live)
    const { session } = live
    session.streams.delete(live)
    session.bytesClientToPod += outcome.bytesAtoB
    session.bytesPodToClient += outcome.bytesBtoA
    this.#decUser(live.identity.user)
    const m = this.#d.metrics
    m.bytes.inc({ direction: 'client_to_pod' }, outcome.bytesAtoB)
    m.bytes.inc({ direction: 'pod_to_client' }, outcome.bytesBtoA)

    const rec = this.#record('stream.closed', session, live.identity)
    this.#target(rec, live.pod, live.node, live.port)
    rec.streamId = live.id
    if (live.userAgent !== undefined) rec.userAgent = live.userAgent
    rec.bytesClientToPod = outcome.bytesAtoB
    rec.bytesPodToClient = outcome.bytesBtoA
    rec.durationMs = this.#now() - live.openedAt
    const f = outcome.failure
    if (f === undefined) {
      rec.endedBy = outcome.firstEof === 'b' ? 'pod' : 'client'
    } else if (f.side === 'local') {
      const e = live.endedBy
      rec.endedBy = e?.by ?? 'gateway'
      rec.reason = e?.reason ?? f.reason
      if (e?.user !== undefined) rec.endedByUser = e.user
      if (e?.error !== undefined) rec.error = e.error
    } else if (f.side === 'a') {
      rec.endedBy = 'client'
      rec.reason = 'client-reset'
      if (f.error !== undefined)
        rec.error = { code: 'PFG_ERR_RELAY_STREAM_RESET', message: describeError(f.error) }
    } else {
      // The agent resets with CONNECT_ERROR when the pod's connection failed (agent/app.ts).
      const podReset = live.upstream?.rstCode === RST.CONNECT_ERROR
      rec.endedBy = podReset ? 'pod' : 'error'
      rec.reason = podReset ? 'pod-reset' : 'agent-failed'
      rec.error = {
        code: podReset ? 'PFG_ERR_RELAY_STREAM_RESET' : 'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
        message:
          f.error !== undefined
            ? describeError(f.error)
            : `agent stream ${f.reason} (RST ${live.upstream?.rstCode ?? 'none'})`,
      }
    }
    m.streamsClosed.inc({ ended_by: rec.endedBy })
    this.#appendLogged(rec)
  }

  #decUser(user: string): void {
    const n = (this.#perUser.get(user) ?? 1) - 1
    if (n <= 0) this.#perUser.delete(user)
    else this.#perUser.set(user, n)
  }

  #sweep(): void {
    const { idleTimeoutMs, maxLifetimeMs } = this.#d.limits
    const now = this.#now()
    for (const s of this.#streams.values()) {
      const relay = s.relay
      if (relay === undefined || relay.done) continue
      if (maxLifetimeMs > 0 && now - s.openedAt >= maxLifetimeMs) {
        this.#d.metrics.limitHits.inc({ limit: 'max-lifetime' })
        s.kill('limit', 'limit:max-lifetime', undefined, {
          code: 'PFG_ERR_LIMIT_LIFETIME',
          message: `the stream reached its maximum lifetime (${maxLifetimeMs} ms)`,
        })
      } else if (idleTimeoutMs > 0 && now - relay.lastActivity >= idleTimeoutMs) {
        this.#d.metrics.limitHits.inc({ limit: 'idle-timeout' })
        s.kill('limit', 'limit:idle-timeout', undefined, {
          code: 'PFG_ERR_LIMIT_IDLE',
          message: `no bytes either way for ${idleTimeoutMs} ms`,
        })
      }
    }
  }

  /**
   * Stops accepting streams, waits up to `graceMs` for live ones to end, then ends
   * the rest (audited as ended by `gateway`).
   */
  async drain(graceMs: number): Promise<void> {
    this.#draining = true
    const deadline = this.#now() + graceMs
    while (this.#streams.size > 0 && this.#now() < deadline) {
      await new Promise((r) => setTimeout(r, 25))
    }
    for (const s of this.#streams.values())
      s.kill('gateway', 'shutdown', undefined, {
        code: 'PFG_ERR_RELAY_DRAINING',
        message: 'gateway shutdown: the drain deadline passed',
      })
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper)
  }

  #auditSession(session: ClientSession, identity: Identity): void {
    if (session.audited !== undefined) return
    // Opened by the first identity that authenticated on the connection.
    const rec = this.#record('session.opened', session, identity)
    session.audited = this.#d.audit.append(rec).catch((err: unknown) => {
      this.#d.logger.error(
        { err: describeError(err), session: session.id },
        'audit session record failed',
      )
    })
  }

  /**
   * Records and logs a refused stream or upgrade; returns what the client is told (the
   * error itself, or a generic one with a ref when its message holds internals).
   */
  #rejected(
    req: AdmitRequest,
    identity: Identity | undefined,
    pod: PodInfo | undefined,
    target: { namespace: string; pod: string; node: string | undefined; port: number },
    err: AppError,
  ): AppError {
    const denied = DENIED_REASONS.has(reasonFor(err))
    const rec = this.#record(denied ? 'stream.denied' : 'stream.failed', req.session, identity)
    const redacted: string[] = []
    rec.namespace = shown(redacted, 'namespace', shownName('namespace', target.namespace))
    rec.pod = shown(redacted, 'pod', shownName('name', target.pod))
    if (target.port > 0) rec.port = target.port
    if (pod !== undefined) {
      rec.podUid = pod.uid
      rec.node = pod.nodeName
    } else if (target.node !== undefined) {
      rec.node = shown(redacted, 'node', shownName('name', target.node))
    }
    if (req.userAgent !== undefined) rec.userAgent = req.userAgent
    const { pub, ref } = refusal(rec, err, redacted)
    this.#countRejected(err)
    const log = {
      session: req.session.id,
      source: req.session.sourceAddress,
      user: identity?.user,
      target: `${rec.namespace}/${rec.pod}:${target.port}`,
      code: err.code,
      status: err.statusCode,
      ...(ref !== undefined ? { ref } : {}),
      ...refusalDetail(err),
    }
    if (denied) {
      if (this.#d.audit.appendDenial(rec))
        this.#d.logger.info(log, refusalLogMessage(err, 'stream'))
    } else {
      this.#d.logger.info(log, 'stream refused')
      this.#appendLogged(rec)
    }
    return pub
  }

  /**
   * Records and logs a refused API request (`request.denied`: 401, 403 on a gateway API
   * path; docs/audit.md), within the denial flood budget. Returns what the client is told.
   */
  requestDenied(info: DeniedRequest, err: AppError): AppError {
    const rec: AuditRecord = {
      schema: AUDIT_SCHEMA,
      id: randomUUID(),
      time: new Date(this.#now()).toISOString(),
      type: 'request.denied',
      gateway: this.#d.gatewayId,
      sourceAddress: info.sourceAddress,
    }
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
    const { pub, ref } = refusal(rec, err, redacted)
    if (this.#d.audit.appendDenial(rec)) {
      this.#d.logger.info(
        {
          source: info.sourceAddress,
          user: info.identity?.user,
          request: `${rec.method} ${rec.path}`,
          code: err.code,
          status: err.statusCode,
          ...(ref !== undefined ? { ref } : {}),
          ...refusalDetail(err),
        },
        refusalLogMessage(err, 'request'),
      )
    }
    return pub
  }

  #countRejected(err: AppError): void {
    this.#d.metrics.streamsRejected.inc({ reason: reasonFor(err), status: String(err.statusCode) })
  }

  #appendLogged(rec: AuditRecord): void {
    this.#track(
      this.#d.audit.append(rec).catch((err: unknown) => {
        this.#d.metrics.auditFailures.inc({ sink: 'all' })
        this.#d.logger.error(
          { err: describeError(err), type: rec.type, streamId: rec.streamId },
          'audit write failed',
        )
      }),
    )
  }

  #record(type: AuditRecord['type'], session: ClientSession, identity?: Identity): AuditRecord {
    const rec: AuditRecord = {
      schema: AUDIT_SCHEMA,
      id: randomUUID(),
      time: new Date(this.#now()).toISOString(),
      type,
      gateway: this.#d.gatewayId,
      sessionId: session.id,
      sourceAddress: session.sourceAddress,
      protocol: session.protocol,
    }
    // Only the request's own successful authentication names a user: never the session's.
    if (identity !== undefined) {
      rec.user = identity.user
      rec.groups = identity.groups
      if (identity.source !== undefined) rec.authSource = identity.source
    }
    if (session.userAgent !== undefined) rec.userAgent = session.userAgent
    return rec
  }

  #target(rec: AuditRecord, pod: PodInfo, node: NodeInfo, port: number): void {
    rec.node = node.name
    rec.namespace = pod.namespace
    rec.pod = pod.name
    rec.podUid = pod.uid
    rec.port = port
  }
}

/** A field's shown text; notes the field in `redacted` when a credential was replaced. */
function shown(redacted: string[], field: string, r: { text: string; redacted: boolean }): string {
  if (r.redacted) redacted.push(field)
  return r.text
}

/**
 * Completes a refusal's record from its error (reason, status, ref, error, redactions);
 * returns what the client is told (generic, with a new ref, when the message holds
 * internals) and the ref, if any.
 */
function refusal(
  rec: AuditRecord,
  err: AppError,
  redacted: string[],
): { pub: AppError; ref: string | undefined } {
  rec.reason = reasonFor(err)
  rec.status = err.statusCode
  let ref = (err as AppError & { ref?: string }).ref
  const pub = hidesDetail(err) ? publicError(err, (ref ??= newRef())) : err
  if (ref !== undefined) rec.ref = ref
  rec.error = { code: err.code, message: refusalMessage(err) }
  if (redacted.length > 0) rec.redacted = redacted
  return { pub, ref }
}

/** A refusal's `error.message` in its record: the details (the authentication failure's reason too), bounded. */
function refusalMessage(err: AppError): string {
  const why = (err as AppError & { reason?: string }).reason
  return untrustedText(
    why !== undefined ? `${err.message}: ${why}` : err.message,
    MAX_RECORDED_MESSAGE,
  ).text
}

/** The log fields that explain a refusal: why authentication failed, or the details a client was not told. */
function refusalDetail(err: AppError): Record<string, string> {
  const why = (err as AppError & { reason?: string }).reason
  if (why !== undefined) return { reason: logText(why, MAX_RECORDED_MESSAGE) }
  return hidesDetail(err) ? { detail: logText(err.message, MAX_RECORDED_MESSAGE) } : {}
}

/** `authentication failed` for a 401 (the line docs/errors.md names), else `<what> refused`. */
function refusalLogMessage(err: AppError, what: 'stream' | 'request'): string {
  return err.statusCode === 401 ? 'authentication failed' : `${what} refused`
}

/** A random id for this gateway instance. */
export function newGatewayId(): string {
  return randomBytes(8).toString('hex')
}

/** Re-exported for adapters. */
export { AppError }
