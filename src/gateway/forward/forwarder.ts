/**
 * The forwarder: the one place every client protocol meets. An edge adapter (native
 * HTTP/2, SPDY, WebSocket; src/gateway/edge) turns its wire format into a *forwarded
 * connection* — identity + target + a duplex byte stream — and calls {@link Forwarder.open}
 * then {@link OpenedForward.start}. Authentication, authorization, resolution, limits, the
 * agent hop, the relay and the audit trail all live in this directory and never know which
 * protocol the client spoke (they record it):
 *
 * - admission.ts: the ordered checks, up to the pod and its node (resolve-pod.ts: the part
 *   the API facade shares);
 * - stream-table.ts: sessions and live streams, admin views and kills, the sweeper;
 * - audit-events.ts: the records;
 * - this file: limits → agent dial (bounded by the stream-open timeout, 504) and, at the
 *   same time, the audit open record (durable in blocking-strict; 503 if it cannot be
 *   written) → 200 once both are in, then the relay (a UDP flow's: src/gateway/udp-relay.ts;
 *   docs/udp.md). A dial that fails is refused with its own status; when its open record
 *   went into the trail, the refusal's `stream.failed` carries the stream id and closes it.
 *
 * No byte is relayed before both the agent's 200 and the open record are in.
 *
 * Identity in the audit trail comes only from a request's own successful authentication:
 * a refused request on a connection where someone else authenticated is not theirs. A
 * connection may carry several users; its `session.closed` names them all.
 *
 * Refusals (`stream.denied`, `request.denied`) go through {@link AuditPort.appendDenial}:
 * within a per-source budget they are recorded and logged one by one, beyond it only
 * counted (docs/audit.md, "Denial floods"). Errors whose messages hold internals reach the
 * client as a generic message with a ref (the log line has the details and the same ref).
 *
 * @module
 */
import { randomBytes } from 'node:crypto'
import type { ClientHttp2Stream, ServerHttp2Stream } from 'node:http2'
import type { AuditRecord } from '../../protocol/audit-record.js'
import {
  GATEWAY_STREAM_ID_HEADER,
  POD_UID_HEADER,
  PORT_HEADER,
  agentPortForwardPath,
} from '../../protocol/constants.js'
import { RST } from '../../protocol/reset-codes.js'
import { PROTOCOL_HEADER, UDP_PROTOCOL } from '../../protocol/udp-frames.js'
import type { StreamEnd } from '../../protocol/stream-end.js'
import { describeTarget } from '../../protocol/targets.js'
import { DuplexRelay } from '../../shared/duplex-relay.js'
import type { RelayEndpoint, RelayOutcome } from '../../shared/duplex-relay.js'
import {
  AppError,
  appError,
  describeError,
  internalError,
  isAppError,
  newRef,
  publicError,
} from '../../shared/errors.js'
import type { Logger } from '../../shared/log.js'
import { h2Endpoint, resetStream } from '../../shared/relay-endpoints.js'
import type { Authenticator, Identity } from '../auth/authenticator.js'
import type { Authorizer } from '../authz/authorizer.js'
import type { GatewayConfig } from '../config.js'
import type { GatewayMetrics } from '../metrics.js'
import type { AgentPool } from '../relay/agent-pool.js'
import type { NodeInfo, PodInfo, PodRegistry } from '../registry/types.js'
import { UdpFlowRelay } from '../udp-relay.js'
import type { UdpRelayOutcome } from '../udp-relay.js'
import { admission } from './admission.js'
import type { AdmissionDeps } from './admission.js'
import { AuditEvents, reasonFor } from './audit-events.js'
import type { DeniedRequest, Refusal, StreamFacts } from './audit-events.js'
import type {
  AdmitRequest,
  ForwardRequest,
  ForwardService,
  ForwardTarget,
  OpenedForward,
} from './service.js'
import { StreamTable } from './stream-table.js'
import type { ClientSession, ClientSessionInfo, StreamSide, Ticker } from './stream-table.js'
import { LiveStream } from './stream-table.js'

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
  /** The sweeper's timer (default: setInterval). */
  ticker?: Ticker
}

/** The relay's side names (the client's stream is A). */
const SIDES: readonly [StreamSide, StreamSide] = ['client', 'pod']

/** An 'error' listener that only keeps an error from being unhandled (errors are reported elsewhere). */
function ignoreError(): void {}

/** The open record could not be written: why. */
interface AuditFailure {
  err: unknown
}
/** The open record's write succeeded (no {@link AuditFailure}). */
function written(): undefined {
  return undefined
}
function auditFailure(err: unknown): AuditFailure {
  return { err }
}

/**
 * The agent dial failed. `streamId` when the stream's open record is in the trail: the
 * refusal's `stream.failed` record then carries it and closes that stream in the trail.
 */
class DialFailed extends Error {
  readonly error: unknown
  readonly streamId: string | undefined
  constructor(error: unknown, streamId: string | undefined) {
    super('agent dial failed')
    this.error = error
    this.streamId = streamId
  }
}

/**
 * How a relay's end reads in the audit trail. The relay names its sides `client` and `pod`;
 * the gateway's own stops (admin, limits, shutdown) come from {@link LiveStream.stopped}.
 */
function endOf(live: LiveStream, outcome: RelayOutcome<StreamSide>): StreamEnd {
  const f = outcome.failure
  if (f === undefined) return { endedBy: outcome.firstEof ?? 'client' }
  if (f.side === 'local') return live.stopped ?? { endedBy: 'gateway' }
  if (f.side === 'client') {
    const end: StreamEnd = { endedBy: 'client', reason: 'client-reset' }
    if (f.error !== undefined)
      end.error = { code: 'PFG_ERR_RELAY_STREAM_RESET', message: describeError(f.error) }
    return end
  }
  // The agent resets with CONNECT_ERROR when the pod's connection failed (agent/app.ts).
  const podReset = live.upstream?.rstCode === RST.CONNECT_ERROR
  return {
    endedBy: podReset ? 'pod' : 'error',
    reason: podReset ? 'pod-reset' : 'agent-failed',
    error: {
      code: podReset ? 'PFG_ERR_RELAY_STREAM_RESET' : 'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
      message:
        f.error !== undefined
          ? describeError(f.error)
          : `agent stream ${f.reason} (RST ${live.upstream?.rstCode ?? 'none'})`,
    },
  }
}

/** How a UDP flow's end reads in the audit trail (docs/udp.md, "Audit"). */
function flowEndOf(live: LiveStream, o: UdpRelayOutcome): StreamEnd {
  if (o.by === 'local') return live.stopped ?? { endedBy: 'gateway' }
  if (o.by === 'pod') {
    return { endedBy: 'pod', reason: o.reason === 'unreachable' ? 'pod-unreachable' : 'pod-error' }
  }
  if (o.by === 'client') {
    const end: StreamEnd = { endedBy: 'client' }
    if (o.reason === 'client-reset' || o.reason === 'protocol-error') end.reason = o.reason
    return end
  }
  return {
    endedBy: 'error',
    reason: o.reason === 'protocol-error' ? 'protocol-error' : 'agent-failed',
    error: {
      code: 'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
      message: `agent stream ended abnormally (RST ${o.upstreamRstCode ?? 'none'})`,
    },
  }
}

/** `svc/echo:5000` for a target as asked (a port that did not parse shows as `?`). */
function askedOf(t: ForwardTarget | undefined): string | undefined {
  if (t === undefined) return undefined
  return describeTarget(t.kind, t.name, t.port instanceof AppError ? '?' : t.port)
}

/** The forwarder. One per gateway. */
export class Forwarder implements ForwardService {
  readonly #d: ForwarderDeps
  readonly #now: () => number
  readonly #table: StreamTable
  readonly #events: AuditEvents
  readonly #admission: AdmissionDeps
  #draining = false
  /** Audit appends in progress (shutdown waits for them: {@link settle}). */
  readonly #inflight = new Set<Promise<unknown>>()

  constructor(deps: ForwarderDeps) {
    this.#d = deps
    this.#now = deps.now ?? Date.now
    this.#events = new AuditEvents(deps.gatewayId, this.#now)
    this.#table = new StreamTable({
      prefix: deps.gatewayId.slice(0, 8),
      now: this.#now,
      idleTimeoutMs: deps.limits.idleTimeoutMs,
      maxLifetimeMs: deps.limits.maxLifetimeMs,
      udpIdleTimeoutMs: deps.limits.udp.idleTimeoutMs,
      dnsIdleTimeoutMs: deps.limits.udp.dnsIdleTimeoutMs,
      onLimit: (limit) => deps.metrics.limitHits.inc({ limit }),
      ...(deps.ticker !== undefined ? { ticker: deps.ticker } : {}),
    })
    this.#admission = {
      registry: deps.registry,
      authenticator: deps.authenticator,
      authorizer: deps.authorizer,
      maxHeaderBytes: deps.limits.maxHeaderBytes,
      draining: () => this.#draining,
      onHeaderLimit: () => deps.metrics.limitHits.inc({ limit: 'header-size' }),
    }
    deps.metrics.setSources({
      sessions: () => this.#table.sessionCount,
      streams: () => this.#table.streamCount,
      agentSessions: () => deps.agents.sessionCount(),
    })
  }

  /** Live client sessions (admin). */
  sessions(): ClientSession[] {
    return this.#table.sessions()
  }

  /** Live streams (admin). */
  streams(): LiveStream[] {
    return this.#table.streams()
  }

  /** Is the gateway draining (shutdown)? */
  get draining(): boolean {
    return this.#draining
  }

  /** Registers a new client connection. Call {@link endSession} when it closes. */
  newSession(info: ClientSessionInfo): ClientSession {
    return this.#table.newSession(info)
  }

  /** The client connection closed. Its streams end through their own relays. */
  endSession(session: ClientSession): void {
    if (session.ended) return
    session.ended = true
    this.#table.removeSession(session)
    const audited = session.audited
    if (audited === undefined) return
    // session.closed is appended after session.opened settled, so the trail stays ordered.
    const close = (): void => this.#appendLogged(this.#events.sessionClosed(session))
    this.#track(audited.then(close, close))
  }

  /**
   * Shutdown, once the client connections are gone: ends the sessions still registered
   * and resolves when every audit record the forwarder has begun to append is in (so
   * that each `session.closed` precedes `gateway.stopped`).
   */
  async settle(): Promise<void> {
    for (const s of this.#table.sessions()) this.endSession(s)
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight])
  }

  #track(p: Promise<unknown>): void {
    this.#inflight.add(p)
    void p.finally(() => this.#inflight.delete(p))
  }

  /** Ends one stream (admin). Returns false when no such stream is live. */
  killStream(id: string, admin: string): boolean {
    const s = this.#table.stream(id)
    if (s === undefined) return false
    s.kill({ endedBy: 'admin', reason: 'admin:stream', endedByUser: admin })
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
      s.kill({
        endedBy: 'client',
        reason: 'client-unresponsive',
        error: { code: 'PFG_ERR_RELAY_CLIENT_LOST', message: why },
      })
    }
  }

  /** Ends a whole client session (admin). */
  killSession(id: string, admin: string): boolean {
    const session = this.#table.session(id)
    if (session === undefined) return false
    session.endedByUser = admin
    for (const s of session.streams)
      s.kill({ endedBy: 'admin', reason: 'admin:session', endedByUser: admin })
    session.terminate()
    return true
  }

  /**
   * Opens a forwarded connection up to the agent's 200. Throws an AppError (recorded and
   * counted; the one the client may see) when the stream is refused or fails.
   */
  async open(req: ForwardRequest): Promise<OpenedForward> {
    const started = this.#now()
    const t0 = performance.now()
    const { session } = req
    const port = typeof req.port === 'number' ? req.port : 0
    const checked = await admission(
      this.#admission,
      {
        ...req,
        clientCertificate: session.clientCertificate,
        ports: typeof req.port === 'number' ? [req.port] : req.port,
      },
      (identity) => this.#authenticated(req, identity),
    )
    if (!checked.ok) throw this.#refused(req, checked, port)
    const { identity, pod, node } = checked
    // A service or workload: the port picked on the pod (a named port was sent as 0).
    const podPort = checked.port ?? port
    let reserved = false
    let opened: OpenedForward | AppError
    try {
      this.#checkLimits(session, identity, req.transport)
      this.#table.reserve(session, identity.user, req.transport)
      reserved = true
      if (this.#d.audit.mode === 'blocking-strict' && !this.#d.audit.healthy()) {
        throw appError('PFG_ERR_AUDIT_UNAVAILABLE', 'audit trail unavailable; refusing new streams')
      }
      opened = await this.#openToAgent(req, podPort, identity, pod, node, started)
    } catch (err) {
      if (reserved) this.#table.release(session, identity.user, req.transport)
      // A failed dial: its refusal closes the stream's open record when that is in the trail.
      const dial = err instanceof DialFailed ? err : undefined
      const error = internalError(dial !== undefined ? dial.error : err)
      throw this.#refused(req, { error, identity, pod, streamId: dial?.streamId }, podPort)
    }
    if (opened instanceof AppError) {
      // Refused because its open record could not be written: the audit log records it.
      this.#table.release(session, identity.user, req.transport)
      throw opened
    }
    this.#d.metrics.openLatency.observe(
      { protocol: session.protocol },
      (performance.now() - t0) / 1000,
    )
    return opened
  }

  /**
   * Checks an upgrade (SPDY, WebSocket) before it is answered 101, so that a bad token
   * gets 401 and a forbidden target 403 as an HTTP status the client shows: draining,
   * authentication, names, authorization (every port named up front, or, when the ports
   * come later with each stream, some port of the pod), registry, pod, node, phase.
   * Throws the AppError (recorded as `open` records it; the one the client may see). Every
   * stream is checked again by {@link open} (a token that expires mid-session opens no new stream).
   */
  async admit(req: AdmitRequest): Promise<Identity> {
    const checked = await admission(
      this.#admission,
      { ...req, clientCertificate: req.session.clientCertificate, ports: req.ports },
      (identity) => this.#authenticated(req, identity),
    )
    if (checked.ok) return checked.identity
    const first = req.ports instanceof AppError ? undefined : req.ports?.[0]
    throw this.#refused(req, checked, first ?? 0)
  }

  /** A request's token verified: note its user on the connection, which is audited once. */
  #authenticated(req: AdmitRequest, identity: Identity): void {
    req.onAuthenticated?.()
    const { session } = req
    session.addIdentity(identity)
    if (session.audited !== undefined) return
    // Opened by the first identity that authenticated on the connection.
    session.audited = this.#d.audit
      .append(this.#events.sessionOpened(session, identity))
      .catch((err: unknown) => {
        this.#d.logger.error(
          { err: describeError(err), session: session.id },
          'audit session record failed',
        )
      })
  }

  #checkLimits(session: ClientSession, identity: Identity, transport?: 'udp'): void {
    const l = this.#d.limits
    if (transport === 'udp' && this.#table.userUdpFlows(identity.user) >= l.udp.flowsPerUser) {
      this.#d.metrics.limitHits.inc({ limit: 'udp-flows-per-user' })
      throw appError(
        'PFG_ERR_LIMIT_STREAMS_PER_USER',
        `too many concurrent UDP flows for user "${identity.user}" (limit ${l.udp.flowsPerUser})`,
      )
    }
    if (session.streams.size + session.pending >= l.streamsPerConnection) {
      this.#d.metrics.limitHits.inc({ limit: 'streams-per-connection' })
      throw appError(
        'PFG_ERR_LIMIT_STREAMS_PER_CONNECTION',
        `too many concurrent streams on this connection (limit ${l.streamsPerConnection})`,
      )
    }
    if (this.#table.userStreams(identity.user) >= l.streamsPerUser) {
      this.#d.metrics.limitHits.inc({ limit: 'streams-per-user' })
      throw appError(
        'PFG_ERR_LIMIT_STREAMS_PER_USER',
        `too many concurrent streams for user "${identity.user}" (limit ${l.streamsPerUser})`,
      )
    }
  }

  /**
   * The agent's 200 and the open record, both in flight at once (the durable write of the
   * open record overlaps the agent dial; docs/performance.md, "Stream open"). Returns the
   * refusal the audit log records itself (blocking-strict could not write the open record)
   * rather than throwing it. A failed dial throws {@link DialFailed}: whether the open
   * record went into the trail decides how the refusal is recorded ({@link open}).
   */
  async #openToAgent(
    req: ForwardRequest,
    port: number,
    identity: Identity,
    pod: PodInfo,
    node: NodeInfo,
    started: number,
  ): Promise<OpenedForward | AppError> {
    const { session } = req
    const streamId = this.#table.newStreamId()
    const facts: StreamFacts = {
      streamId,
      session,
      identity,
      pod,
      node,
      port,
      transport: req.transport,
      ...(req.target !== undefined ? { target: askedOf(req.target) } : {}),
      userAgent: req.userAgent ?? session.userAgent,
      requestUserAgent: req.userAgent,
    }
    const record = this.#events.streamOpened(facts)
    // The dial first (its HEADERS go out as the write starts), then the open record. In
    // blocking-strict the record is durable before the client hears 200, so no byte is
    // relayed without it (the pod may have sent a banner: it waits). The write's outcome
    // is taken at once (an AuditFailure, not a rejection nobody handles while the dial runs).
    const dialing = this.#dial(req, streamId, port, pod, node)
    const writing = this.#d.audit.append(record).then(written, auditFailure)
    let upstream: ClientHttp2Stream
    try {
      upstream = await dialing
    } catch (err) {
      const failure = await writing
      if (failure !== undefined) this.#openRecordFailed(failure, streamId)
      // The open record is in the trail (or queued for it: blocking, batch), so the refusal's
      // record closes it and carries its stream id. An append that rejected put nothing in the
      // trail (blocking, batch: the log is closed or the record cannot be encoded), or was
      // closed by the log itself (blocking-strict writes its own `stream.failed` for that
      // stream id): the refusal is then recorded apart, without the id.
      const inTrail = failure === undefined
      throw new DialFailed(err, inTrail ? streamId : undefined)
    }
    // Handled by the relay; keep unhandled errors from crashing the process. A module-level
    // listener: a closure here would keep this whole function's scope (the request, the
    // abort controller, the timer, the open record) alive as long as the stream lives.
    upstream.on('error', ignoreError)
    const failure = await writing
    if (failure !== undefined) {
      const ref = this.#openRecordFailed(failure, streamId)
      if (this.#d.audit.mode === 'blocking-strict') {
        // Fail closed. The client learns no file path or errno: the log line has them.
        resetStream(upstream, RST.REFUSED_STREAM)
        const refused = publicError(
          appError('PFG_ERR_AUDIT_UNAVAILABLE', 'audit trail unavailable'),
          ref,
        )
        this.#countRejected(refused)
        return refused
      }
      // blocking / batch: the failure is logged and counted; the stream goes on.
    }
    let settled = false
    return {
      streamId,
      pod,
      node,
      identity,
      upstream,
      start: (client) => {
        if (settled) throw new TypeError('start() called twice')
        settled = true
        return this.#start(facts, upstream, client)
      },
      startUdp: (client) => {
        if (settled) throw new TypeError('start() called twice')
        settled = true
        return this.#startUdp(facts, upstream, client)
      },
      cancel: (reason) => {
        if (settled) return
        settled = true
        this.#table.release(session, identity.user, req.transport)
        resetStream(upstream, RST.CANCEL)
        const end: StreamEnd = {
          endedBy: 'client',
          reason: 'client-gone',
          error: { code: 'PFG_ERR_RELAY_STREAM_RESET', message: reason },
        }
        const bytes = { clientToPod: 0, podToClient: 0 }
        this.#appendLogged(
          this.#events.streamClosed({ ...facts, userAgent: undefined }, end, bytes, started),
        )
      },
    }
  }

  /** Logs and counts an open record that could not be written; returns the log line's ref. */
  #openRecordFailed(failure: AuditFailure, streamId: string): string {
    const ref = newRef()
    this.#d.logger.error(
      { err: describeError(failure.err), streamId, ref },
      'audit open record failed',
    )
    this.#d.metrics.auditFailures.inc({ sink: 'all' })
    return ref
  }

  /** The agent connects to the pod's port and answers 200, within the stream-open timeout. */
  async #dial(
    req: ForwardRequest,
    streamId: string,
    port: number,
    pod: PodInfo,
    node: NodeInfo,
  ): Promise<ClientHttp2Stream> {
    const timeoutMs = this.#d.limits.streamOpenTimeoutMs
    const ac = new AbortController()
    const onClientAbort = (): void => ac.abort()
    req.signal?.addEventListener('abort', onClientAbort, { once: true })
    const openTimer = setTimeout(() => ac.abort(), timeoutMs)
    const headers: Record<string, string> = {
      [PORT_HEADER]: String(port),
      [POD_UID_HEADER]: pod.uid,
      [GATEWAY_STREAM_ID_HEADER]: streamId,
    }
    if (req.transport === 'udp') headers[PROTOCOL_HEADER] = UDP_PROTOCOL
    try {
      return await this.#d.agents
        .get(node)
        .open(agentPortForwardPath(pod.namespace, pod.name), headers, {
          signal: ac.signal,
          timeoutMs,
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
          `the stream did not open within ${timeoutMs} ms`,
        )
      }
      throw err
    } finally {
      clearTimeout(openTimer)
      req.signal?.removeEventListener('abort', onClientAbort)
    }
  }

  /** The live stream of an opened forward (TCP or UDP), in the table. */
  #live(facts: StreamFacts, upstream: ClientHttp2Stream, transport?: 'udp'): LiveStream {
    const live = new LiveStream(
      facts.streamId,
      facts.session,
      facts.identity,
      facts.pod,
      facts.node,
      facts.port,
      this.#now(),
      facts.userAgent,
    )
    live.asked = facts.target
    live.upstream = upstream
    live.transport = transport
    this.#table.add(live)
    return live
  }

  #start(facts: StreamFacts, upstream: ClientHttp2Stream, client: RelayEndpoint): LiveStream {
    const { session } = facts
    const live = this.#live(facts, upstream)
    this.#d.metrics.streamsOpened.inc({ protocol: session.protocol })
    // Toward the agent: a failed client is a CANCEL.
    live.relay = new DuplexRelay(client, h2Endpoint(upstream, RST.CANCEL), {
      now: this.#now,
      sides: SIDES,
      onDone: (outcome) => this.#closed(live, facts, outcome),
    })
    this.#d.budget?.started(live)
    return live
  }

  #startUdp(
    facts: StreamFacts,
    upstream: ClientHttp2Stream,
    client: ServerHttp2Stream,
  ): LiveStream {
    const { session } = facts
    const live = this.#live(facts, upstream, 'udp')
    this.#d.metrics.streamsOpened.inc({ protocol: session.protocol })
    live.relay = new UdpFlowRelay(client, upstream, {
      onDone: (outcome) => this.#closedUdp(live, facts, outcome),
    })
    return live
  }

  /** The `stream.closed` record of a UDP flow (docs/udp.md, "Audit"). */
  #closedUdp(live: LiveStream, facts: StreamFacts, o: UdpRelayOutcome): void {
    this.#table.remove(live)
    const { session } = live
    session.bytesClientToPod += o.bytesClientToPod
    session.bytesPodToClient += o.bytesPodToClient
    const m = this.#d.metrics
    m.bytes.inc({ direction: 'client_to_pod' }, o.bytesClientToPod)
    m.bytes.inc({ direction: 'pod_to_client' }, o.bytesPodToClient)
    const end = flowEndOf(live, o)
    m.streamsClosed.inc({ ended_by: end.endedBy })
    const counts = { ...o, clientToPod: o.bytesClientToPod, podToClient: o.bytesPodToClient }
    this.#appendLogged(this.#events.flowClosed(facts, end, counts, live.openedAt))
  }

  #closed(live: LiveStream, facts: StreamFacts, outcome: RelayOutcome<StreamSide>): void {
    this.#table.remove(live)
    this.#d.budget?.ended(live)
    const { session } = live
    const bytes = { clientToPod: outcome.bytesAtoB, podToClient: outcome.bytesBtoA }
    session.bytesClientToPod += bytes.clientToPod
    session.bytesPodToClient += bytes.podToClient
    const m = this.#d.metrics
    m.bytes.inc({ direction: 'client_to_pod' }, bytes.clientToPod)
    m.bytes.inc({ direction: 'pod_to_client' }, bytes.podToClient)
    const end = endOf(live, outcome)
    m.streamsClosed.inc({ ended_by: end.endedBy })
    this.#appendLogged(this.#events.streamClosed(facts, end, bytes, live.openedAt))
  }

  /**
   * Stops accepting streams, waits up to `graceMs` for live ones to end, then ends
   * the rest (audited as ended by `gateway`).
   */
  async drain(graceMs: number): Promise<void> {
    this.#draining = true
    const deadline = this.#now() + graceMs
    while (this.#table.streamCount > 0 && this.#now() < deadline) {
      await new Promise((r) => setTimeout(r, 25))
    }
    for (const s of this.#table.streams())
      s.kill({
        endedBy: 'gateway',
        reason: 'shutdown',
        error: {
          code: 'PFG_ERR_RELAY_DRAINING',
          message: 'gateway shutdown: the drain deadline passed',
        },
      })
    this.#table.stop()
  }

  /**
   * Records and logs a refused stream or upgrade; returns what the client is told (the
   * error itself, or a generic one with a ref when its message holds internals).
   */
  #refused(
    req: AdmitRequest,
    checked: {
      error: AppError
      identity: Identity | undefined
      pod: PodInfo | undefined
      port?: number
      /** The stream whose open record is in the trail (the dial failed after it). */
      streamId?: string | undefined
    },
    askedPort: number,
  ): AppError {
    const { error: err, identity } = checked
    // With a target, the pod's port once one was picked; else the port as asked.
    const port = checked.port ?? askedPort
    const target = askedOf(req.target)
    const r = this.#events.refusedStream(
      {
        session: req.session,
        identity,
        namespace: req.namespace,
        pod: req.pod,
        ...(target !== undefined ? { target } : {}),
        node: req.node,
        port,
        found: checked.pod,
        userAgent: req.userAgent,
        transport: req.transport,
      },
      err,
      checked.streamId,
    )
    this.#countRejected(err)
    const log = {
      session: req.session.id,
      source: req.session.sourceAddress,
      user: identity?.user,
      target:
        r.record.pod !== undefined
          ? `${r.record.namespace}/${r.record.pod}:${port}`
          : `${r.record.namespace}/${r.record.target ?? ''}`,
      ...(r.record.pod !== undefined && target !== undefined ? { asked: target } : {}),
      ...(checked.streamId !== undefined ? { streamId: checked.streamId } : {}),
      code: err.code,
      status: err.statusCode,
      ...(r.ref !== undefined ? { ref: r.ref } : {}),
      ...r.detail,
    }
    if (r.record.type === 'stream.denied') {
      if (this.#d.audit.appendDenial(r.record)) this.#d.logger.info(log, r.logMessage)
    } else {
      this.#d.logger.info(log, 'stream refused')
      this.#appendLogged(r.record)
    }
    return r.told
  }

  /**
   * Records and logs a refused API request (`request.denied`: 401, 403 on a gateway API
   * path; docs/audit.md), within the denial flood budget. Returns what the client is told.
   */
  requestDenied(info: DeniedRequest, err: AppError): AppError {
    const r: Refusal = this.#events.requestDenied(info, err)
    if (this.#d.audit.appendDenial(r.record)) {
      this.#d.logger.info(
        {
          source: info.sourceAddress,
          user: info.identity?.user,
          request: `${r.record.method} ${r.record.path}`,
          code: err.code,
          status: err.statusCode,
          ...(r.ref !== undefined ? { ref: r.ref } : {}),
          ...r.detail,
        },
        r.logMessage,
      )
    }
    return r.told
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
}

/** A random id for this gateway instance. */
export function newGatewayId(): string {
  return randomBytes(8).toString('hex')
}

/** Formats an address pair as `ip:port` with IPv6 in brackets. */
export function formatAddress(address: string | undefined, port: number | undefined): string {
  if (address === undefined) return 'unknown'
  const host = address.includes(':') ? `[${address}]` : address
  return port === undefined ? host : `${host}:${port}`
}
