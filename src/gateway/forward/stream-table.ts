/**
 * The forward core's table of client sessions and live streams: what the admin API shows
 * and kills, what the limits count, and the sweeper that ends streams idle or alive too
 * long (a UDP flow: idle, DNS-idle or alive too long, ended cleanly). The sweeper runs on an injected clock and timer, so it is tested without waiting.
 *
 * @module
 */
import type { ClientHttp2Stream } from 'node:http2'
import type { PeerCertificate } from 'node:tls'
import { MAX_SESSION_USERS } from '../../protocol/audit-record.js'
import type { ClientProtocol } from '../../protocol/audit-record.js'
import { abortReasonOf } from '../../protocol/stream-end.js'
import type { EndReason, Stop } from '../../protocol/stream-end.js'
import type { DuplexRelay } from '../../shared/duplex-relay.js'
import type { Identity, IdentitySourceName } from '../auth/authenticator.js'
import type { NodeInfo, PodInfo } from '../registry/types.js'
import { UdpFlowRelay } from '../udp-relay.js'

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
  readonly authSources = new Map<string, IdentitySourceName>()
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
  endReason: EndReason | undefined
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
  /** `udp` for a UDP flow. */
  transport?: 'udp'
  /** What the stream asked for when it named a service or workload (`svc/echo:5000`). */
  target?: string
  openedAt: string
  bytesClientToPod: number
  bytesPodToClient: number
  /** UDP flows: datagrams relayed each way so far. */
  datagramsClientToPod?: number
  datagramsPodToClient?: number
}

/** The relay's names for its sides: the client's stream is A, the agent's (the pod's) B. */
export type StreamSide = 'client' | 'pod'

/** A stream between 200 and its end. */
export class LiveStream {
  /** What the stream asked for when it named a service or workload (`svc/echo:5000`). */
  asked: string | undefined
  readonly id: string
  readonly session: ClientSession
  readonly identity: Identity
  readonly pod: PodInfo
  readonly node: NodeInfo
  readonly port: number
  readonly openedAt: number
  readonly userAgent: string | undefined
  relay: DuplexRelay<StreamSide> | UdpFlowRelay | undefined
  /** `udp` for a UDP flow (its relay is a {@link UdpFlowRelay}). */
  transport: 'udp' | undefined
  /** The agent stream. */
  upstream: ClientHttp2Stream | undefined
  /** Set when the gateway ended it (admin, limit, shutdown, a client found gone): who and why. */
  stopped: Stop | undefined

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
    this.transport = undefined
  }

  /** Ends the stream abnormally (`endedBy: client`: the gateway found the client gone). */
  kill(stop: Stop): void {
    if (this.relay === undefined || this.relay.done) return
    this.stopped = stop
    this.relay.abort(abortReasonOf(stop))
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
      ...(this.asked !== undefined ? { target: this.asked } : {}),
      openedAt: new Date(this.openedAt).toISOString(),
      bytesClientToPod: this.relay?.bytesAtoB ?? 0,
      bytesPodToClient: this.relay?.bytesBtoA ?? 0,
      ...(this.relay instanceof UdpFlowRelay
        ? {
            transport: 'udp' as const,
            datagramsClientToPod: this.relay.datagramsAtoB,
            datagramsPodToClient: this.relay.datagramsBtoA,
          }
        : {}),
    }
  }
}

/** A repeating timer (setInterval by default; tests drive the sweeper themselves). */
export type Ticker = (every: number, tick: () => void) => { stop(): void }

/** The default {@link Ticker}: an unref'd setInterval. */
export const intervalTicker: Ticker = (every, tick) => {
  const t = setInterval(tick, every)
  t.unref()
  return { stop: () => clearInterval(t) }
}

/** What the table needs. */
export interface StreamTableOptions {
  /** Ids are `c-<prefix>-<n>` and `s-<prefix>-<n>`. */
  prefix: string
  now: () => number
  idleTimeoutMs: number
  maxLifetimeMs: number
  /** UDP flows (`limits.udp`): the idle timeout, and the one of flows to port 53 (0: never). */
  udpIdleTimeoutMs?: number
  dnsIdleTimeoutMs?: number
  /** A stream hit a limit (metrics). */
  onLimit: (limit: 'max-lifetime' | 'idle-timeout') => void
  ticker?: Ticker
}

/** Sessions, live streams and streams per user, with the sweeper. */
export class StreamTable {
  readonly #o: StreamTableOptions
  readonly #sessions = new Map<string, ClientSession>()
  readonly #streams = new Map<string, LiveStream>()
  readonly #perUser = new Map<string, number>()
  readonly #udpPerUser = new Map<string, number>()
  #seq = 0
  #sessionSeq = 0
  #sweeper: { stop(): void } | undefined

  constructor(options: StreamTableOptions) {
    this.#o = options
    const { idleTimeoutMs, maxLifetimeMs } = options
    const periods = [
      idleTimeoutMs,
      maxLifetimeMs,
      options.udpIdleTimeoutMs ?? 0,
      options.dnsIdleTimeoutMs ?? 0,
    ]
    if (periods.some((x) => x > 0)) {
      const every = Math.max(100, Math.min(1000, Math.min(...periods.filter((x) => x > 0)) / 4))
      this.#sweeper = (options.ticker ?? intervalTicker)(every, () => this.sweep())
    }
  }

  get sessionCount(): number {
    return this.#sessions.size
  }

  get streamCount(): number {
    return this.#streams.size
  }

  sessions(): ClientSession[] {
    return [...this.#sessions.values()]
  }

  streams(): LiveStream[] {
    return [...this.#streams.values()]
  }

  session(id: string): ClientSession | undefined {
    return this.#sessions.get(id)
  }

  stream(id: string): LiveStream | undefined {
    return this.#streams.get(id)
  }

  newSession(info: ClientSessionInfo): ClientSession {
    const id = `c-${this.#o.prefix}-${(++this.#sessionSeq).toString(36)}`
    const s = new ClientSession(id, info, this.#o.now())
    this.#sessions.set(id, s)
    return s
  }

  /** Forgets a session (its streams end through their own relays). */
  removeSession(session: ClientSession): void {
    this.#sessions.delete(session.id)
  }

  newStreamId(): string {
    return `s-${this.#o.prefix}-${(++this.#seq).toString(36)}`
  }

  /** Streams of `user` being opened or live. */
  userStreams(user: string): number {
    return this.#perUser.get(user) ?? 0
  }

  /** UDP flows of `user` being opened or live (they count as streams too). */
  userUdpFlows(user: string): number {
    return this.#udpPerUser.get(user) ?? 0
  }

  /** A stream (`udp`: a UDP flow) of `user` began to open. */
  reserve(session: ClientSession, user: string, transport?: 'udp'): void {
    session.pending++
    this.#perUser.set(user, (this.#perUser.get(user) ?? 0) + 1)
    if (transport === 'udp') this.#udpPerUser.set(user, (this.#udpPerUser.get(user) ?? 0) + 1)
  }

  /** A stream that began to open did not (refused, cancelled). */
  release(session: ClientSession, user: string, transport?: 'udp'): void {
    session.pending--
    this.#releaseUser(user, transport)
  }

  /** A reserved stream is live: it leaves `pending` and joins the table. */
  add(live: LiveStream): void {
    live.session.pending--
    this.#streams.set(live.id, live)
    live.session.streams.add(live)
    live.session.streamCount++
  }

  /** A live stream ended. */
  remove(live: LiveStream): void {
    this.#streams.delete(live.id)
    live.session.streams.delete(live)
    this.#releaseUser(live.identity.user, live.transport)
  }

  #releaseUser(user: string, transport?: 'udp'): void {
    decrement(this.#perUser, user)
    if (transport === 'udp') decrement(this.#udpPerUser, user)
  }

  /** Ends the streams idle or alive too long (RST ENHANCE_YOUR_CALM, `endedBy: limit`). */
  sweep(): void {
    const { idleTimeoutMs, maxLifetimeMs } = this.#o
    const now = this.#o.now()
    for (const s of this.#streams.values()) {
      const relay = s.relay
      if (relay === undefined || relay.done) continue
      if (relay instanceof UdpFlowRelay) {
        this.#sweepFlow(s, relay, now)
        continue
      }
      if (maxLifetimeMs > 0 && now - s.openedAt >= maxLifetimeMs) {
        this.#o.onLimit('max-lifetime')
        s.kill({
          endedBy: 'limit',
          reason: 'limit:max-lifetime',
          error: {
            code: 'PFG_ERR_LIMIT_LIFETIME',
            message: `the stream reached its maximum lifetime (${maxLifetimeMs} ms)`,
          },
        })
      } else if (idleTimeoutMs > 0 && now - relay.lastActivity >= idleTimeoutMs) {
        this.#o.onLimit('idle-timeout')
        s.kill({
          endedBy: 'limit',
          reason: 'limit:idle-timeout',
          error: {
            code: 'PFG_ERR_LIMIT_IDLE',
            message: `no bytes either way for ${idleTimeoutMs} ms`,
          },
        })
      }
    }
  }

  /** A UDP flow ends cleanly (trailers, the agent's counts in the record), never reset. */
  #sweepFlow(s: LiveStream, relay: UdpFlowRelay, now: number): void {
    const { maxLifetimeMs } = this.#o
    const idle = (s.port === 53 ? this.#o.dnsIdleTimeoutMs : this.#o.udpIdleTimeoutMs) ?? 0
    if (maxLifetimeMs > 0 && now - s.openedAt >= maxLifetimeMs) {
      this.#o.onLimit('max-lifetime')
      s.stopped ??= {
        endedBy: 'limit',
        reason: 'limit:max-lifetime',
        error: {
          code: 'PFG_ERR_LIMIT_LIFETIME',
          message: `the flow reached its maximum lifetime (${maxLifetimeMs} ms)`,
        },
      }
      relay.end('lifetime')
    } else if (idle > 0 && now - relay.lastActivity >= idle) {
      this.#o.onLimit('idle-timeout')
      s.stopped ??= {
        endedBy: 'limit',
        reason: 'limit:idle-timeout',
        error: { code: 'PFG_ERR_LIMIT_IDLE', message: `no datagram either way for ${idle} ms` },
      }
      relay.end('idle')
    }
  }

  /** Stops the sweeper (shutdown). */
  stop(): void {
    this.#sweeper?.stop()
  }
}

/** Counts one down, forgetting the key at zero. */
function decrement(counts: Map<string, number>, key: string): void {
  const n = (counts.get(key) ?? 1) - 1
  if (n <= 0) counts.delete(key)
  else counts.set(key, n)
}
