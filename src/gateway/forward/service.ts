/**
 * The forward service as the edge adapters see it (src/gateway/edge): sessions, the checks
 * of an upgrade, and the open of one forwarded connection. The forwarder implements it;
 * adapter tests use a fake.
 *
 * @module
 */
import type { ClientHttp2Stream, ServerHttp2Stream } from 'node:http2'
import type { TargetKind } from '../../protocol/targets.js'
import type { RelayEndpoint } from '../../shared/duplex-relay.js'
import type { AppError } from '../../shared/errors.js'
import type { Identity } from '../auth/authenticator.js'
import type { Impersonation } from '../impersonation.js'
import type { NodeInfo, PodInfo } from '../registry/types.js'
import type { ClientSession, ClientSessionInfo, LiveStream } from './stream-table.js'

/**
 * A service or workload to resolve to a ready pod for one stream (docs/protocol.md,
 * "Services and workloads"); its port is a service port (services) or a container port
 * (workloads), by number or name, or the adapter's parse error for it.
 */
export interface ForwardTarget {
  kind: Exclude<TargetKind, 'pod'>
  name: string
  port: number | string | AppError
}

/** An upgrade to check before it is accepted ({@link ForwardService.admit}). */
export interface AdmitRequest {
  session: ClientSession
  /** The Authorization header value as received. */
  authorization: string | string[] | undefined
  namespace: string
  /** The pod; empty when `target` names a service or workload instead. */
  pod: string
  /** A service or workload instead of a pod (native streams only). */
  target?: ForwardTarget
  /** The node the client named, if any (checked, never trusted). */
  node?: string
  /**
   * The ports named up front (WebSocket channels: `?ports=`), the adapter's parse error
   * for them (thrown only after authentication), or undefined when each stream names
   * its own (SPDY).
   */
  ports?: readonly number[] | AppError
  /** `udp` for a UDP flow (docs/udp.md; native clients only): its ports are UDP ports. */
  transport?: 'udp'
  /** User agent of this request, if it differs from the session's. */
  userAgent?: string
  /** Called once the request's token has verified (before the other checks). */
  onAuthenticated?: () => void
  /** The impersonation headers the request carried, if any (refused after authentication). */
  impersonation?: Impersonation
}

/** A target as the client asked for it ({@link ForwardService.open}). */
export interface ForwardRequest extends Omit<AdmitRequest, 'ports'> {
  /**
   * Remote port, or the adapter's parse error for it: the error is thrown only after
   * authentication, so an unauthenticated client learns nothing (401 before 400).
   */
  port: number | AppError
  /** Aborted when the client goes away during the open. */
  signal?: AbortSignal
  /**
   * Size of the request's header list (RFC 9113 §6.5.2: name + value + 32 per field), when
   * the adapter can measure it: above `limits.maxHeaderBytes` the stream is refused with 431
   * before anything else is looked at (the token included).
   */
  headerBytes?: number
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
  /**
   * Starts a UDP flow (`transport: 'udp'`): the client's stream, answered 200 with
   * `waitForTrailers`, carries datagrams both ways (docs/protocol.md).
   */
  startUdp(client: ServerHttp2Stream): LiveStream
  /** The client vanished before start: close the agent stream and record it. */
  cancel(reason: string): void
}

/** What an edge adapter needs of the forward core. */
export interface ForwardService {
  /** Registers a new client connection; {@link endSession} when it closes. */
  newSession(info: ClientSessionInfo): ClientSession
  /** The client connection closed. */
  endSession(session: ClientSession): void
  /** The client stopped answering PINGs: its streams end, recorded so. */
  clientUnresponsive(session: ClientSession, why: string): void
  /** Checks an upgrade before it is answered; throws the AppError the client is told. */
  admit(req: AdmitRequest): Promise<Identity>
  /** Opens one forwarded connection up to the agent's 200; throws the AppError the client is told. */
  open(req: ForwardRequest): Promise<OpenedForward>
}
