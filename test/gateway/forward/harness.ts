/**
 * An in-process forward core with fakes around it (registry, authenticator, authorizer,
 * agent pool, audit, clock): every fake notes what it was asked, in order, in `trace`,
 * and every record handed to the audit port is kept in `records`. The agent's stream and
 * the client's are in-memory duplexes that can end, fail or be reset like HTTP/2 streams.
 */
import { Duplex } from 'node:stream'
import type { ClientHttp2Stream } from 'node:http2'
import type { AuditRecord } from '../../../src/protocol/audit-record.js'
import { RST } from '../../../src/protocol/reset-codes.js'
import type { RelayEndpoint } from '../../../src/shared/duplex-relay.js'
import { AppError, appError } from '../../../src/shared/errors.js'
import { silentLogger } from '../../../src/shared/log.js'
import { unavailable } from '../../../src/gateway/auth/authenticator.js'
import type { Identity } from '../../../src/gateway/auth/authenticator.js'
import type { GatewayConfig } from '../../../src/gateway/config.js'
import { GatewayMetrics } from '../../../src/gateway/metrics.js'
import type { NodeInfo, PodInfo } from '../../../src/gateway/registry/types.js'
import { Forwarder } from '../../../src/gateway/forward/forwarder.js'
import type { AuditPort, ForwarderDeps } from '../../../src/gateway/forward/forwarder.js'

/** A stream in memory: what is written to it is kept; `feed`/`eof` play the peer. */
export class FakeStream extends Duplex {
  readonly written: Buffer[] = []
  rstCode: number | undefined
  aborted = false

  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.written.push(chunk)
    cb()
  }
  override _final(cb: (err?: Error | null) => void): void {
    cb()
  }
  /** HTTP/2's close(code): RST_STREAM with `code`. */
  close(code: number): void {
    if (this.destroyed) return
    this.rstCode = code
    this.destroy()
  }
  /** The peer resets its side with `code` (the stream closes, as Node closes it). */
  peerReset(code: number): void {
    this.rstCode = code
    this.destroy()
  }
  feed(bytes: string): void {
    this.push(Buffer.from(bytes))
  }
  eof(): void {
    this.push(null)
  }
}

/** A client endpoint as an adapter builds one: an abort resets with `reason`. */
export function clientEndpoint(stream: FakeStream, aborts: string[]): RelayEndpoint {
  return {
    stream,
    abort(reason) {
      aborts.push(reason)
      stream.close(RST.CANCEL)
    },
  }
}

/** What can be wrong with a request or the world around it, in the documented check order. */
export const FAULTS = [
  'header-size',
  'draining',
  'token',
  'impersonation',
  'port',
  'name',
  'forbidden',
  'not-ready',
  'no-pod',
  'wrong-node',
  'not-running',
  'no-node',
  'conn-limit',
  'user-limit',
  'audit-unhealthy',
  'agent-refused',
  'audit-open-fails',
] as const
/** A fault outside the documented order's list: the authorizer's server cannot answer. */
export type Fault = (typeof FAULTS)[number] | 'authz-unavailable'

export const T0 = Date.parse('2026-01-01T00:00:00.000Z')
export const ALICE: Identity = {
  user: 'alice',
  groups: ['dev', 'system:authenticated'],
  expiresAt: T0 + 3_600_000,
  source: 'jwt',
}
export const POD: PodInfo = {
  namespace: 'default',
  name: 'echo',
  uid: 'uid-echo',
  nodeName: 'node-a',
  phase: 'Running',
  ports: [{ containerPort: 8080, protocol: 'TCP' }],
}
export const NODE: NodeInfo = { name: 'node-a', address: '10.0.0.1', port: 10250 }

export const LIMITS: GatewayConfig['limits'] = {
  streamsPerConnection: 10,
  streamsPerUser: 10,
  streamOpenTimeoutMs: 5000,
  idleTimeoutMs: 0,
  maxLifetimeMs: 0,
  maxHeaderBytes: 16384,
  unauthenticatedStreams: 10,
  connectionsPerSource: 0,
  requestTimeoutMs: 30000,
  handshakeTimeoutMs: 10000,
  clientKeepaliveMs: 0,
  bufferBudgetBytes: 1 << 26,
  udp: { flowsPerUser: 10, idleTimeoutMs: 0, dnsIdleTimeoutMs: 0 },
}

/** How the fake agent answers an open. */
export type AgentBehaviour = 'ok' | 'refused' | 'hang' | 'throw'

export interface Harness {
  forwarder: Forwarder
  trace: string[]
  records: AuditRecord[]
  /** Upstream (agent) streams handed out, in order. */
  upstreams: FakeStream[]
  faults: Set<Fault>
  /** How the agent answers; with `gate`, it answers only once the gate resolves. */
  agent: { behaviour: AgentBehaviour; gate?: Promise<void> }
  clock: { now: number }
  audit: { mode: AuditPort['mode']; healthy: boolean }
  metrics: GatewayMetrics
}

export interface HarnessOptions {
  faults?: Iterable<Fault>
  limits?: Partial<GatewayConfig['limits']>
  /** Extra deps (e.g. a sweeper tick). */
  deps?: Partial<ForwarderDeps>
}

/** A forwarder on fakes. */
export function harness(options: HarnessOptions = {}): Harness {
  const faults = new Set<Fault>(options.faults ?? [])
  const trace: string[] = []
  const records: AuditRecord[] = []
  const upstreams: FakeStream[] = []
  const clock = { now: T0 }
  const agent: Harness['agent'] = {
    behaviour: faults.has('agent-refused') ? 'refused' : 'ok',
  }
  const audit = {
    mode: 'blocking-strict' as AuditPort['mode'],
    healthy: !faults.has('audit-unhealthy'),
  }
  const keep = (r: AuditRecord): void => {
    records.push(structuredClone(r))
  }
  const auditPort: AuditPort = {
    append: (r) => {
      trace.push(`audit.append ${r.type}`)
      if (r.type === 'stream.opened' && faults.has('audit-open-fails')) {
        // The audit log writes the compensating stream.failed itself (not the forwarder).
        return Promise.reject(
          appError('PFG_ERR_AUDIT_UNAVAILABLE', 'the audit sink file:/var/x cannot record: EIO'),
        )
      }
      keep(r)
      return Promise.resolve()
    },
    appendDenial: (r) => {
      trace.push(`audit.denial ${r.type}`)
      keep(r)
      return true
    },
    healthy: () => audit.healthy,
    get mode() {
      return audit.mode
    },
  }
  const registry = {
    isReady: () => {
      trace.push('registry.ready')
      return !faults.has('not-ready')
    },
    getPod: (ns: string, name: string) => {
      trace.push(`registry.pod ${ns}/${name}`)
      if (faults.has('no-pod') || ns !== POD.namespace || name !== POD.name) return undefined
      return faults.has('not-running') ? { ...POD, phase: 'Pending' } : POD
    },
    getNode: (name: string) => {
      trace.push(`registry.node ${name}`)
      return faults.has('no-node') || name !== NODE.name ? undefined : NODE
    },
  }
  const authenticator = {
    authenticate: (input: { authorization: string | string[] | undefined }): Promise<Identity> => {
      const { authorization } = input
      trace.push('authenticate')
      if (authorization === undefined)
        return Promise.reject(appError('PFG_ERR_AUTH_MISSING', 'Unauthorized'))
      if (authorization !== 'Bearer good' || faults.has('token')) {
        const err = appError('PFG_ERR_AUTH_INVALID', 'Unauthorized (ref 0badc0de)')
        Object.assign(err, { ref: '0badc0de', reason: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' })
        return Promise.reject(err)
      }
      return Promise.resolve(ALICE)
    },
  }
  const authorizer = {
    // The rules' answers, port by port, as Authorizer.mayForward gives them.
    mayForward: (
      id: Identity,
      ns: string,
      pod: string,
      ports: readonly number[],
    ): Promise<number | true | undefined> => {
      if (faults.has('authz-unavailable')) {
        trace.push(`authorize ${id.user} ${ns}/${pod}`)
        return Promise.reject(unavailable('SubjectAccessReview: connect ECONNREFUSED'))
      }
      if (ports.length === 0) {
        trace.push(`authorize ${id.user} ${ns}/${pod}`)
        return Promise.resolve(faults.has('forbidden') ? true : undefined)
      }
      for (const port of ports) {
        trace.push(`authorize ${id.user} ${ns}/${pod}:${port}`)
        if (faults.has('forbidden')) return Promise.resolve(port)
      }
      return Promise.resolve(undefined)
    },
  }
  const agents = {
    sessionCount: () => 0,
    get: (node: NodeInfo) => ({
      open: (
        path: string,
        headers: Record<string, string>,
        opts: { signal?: AbortSignal; timeoutMs: number },
      ): Promise<ClientHttp2Stream> => {
        trace.push(`agent.open ${node.name} ${path} ${JSON.stringify(headers)}`)
        const gate = agent.gate
        agent.gate = undefined
        return gate !== undefined ? gate.then(() => answer(opts)) : answer(opts)
      },
    }),
  }
  const answer = (opts: { signal?: AbortSignal }): Promise<ClientHttp2Stream> => {
    switch (agent.behaviour) {
      case 'ok': {
        const s = new FakeStream()
        upstreams.push(s)
        return Promise.resolve(s as unknown as ClientHttp2Stream)
      }
      case 'refused':
        return Promise.reject(
          appError('PFG_ERR_AGENT_CONNECT_REFUSED', 'connection refused by 10.1.0.5:8080'),
        )
      case 'throw':
        return Promise.reject(new TypeError('agent pool bug'))
      case 'hang':
        return new Promise((_, reject) => {
          opts.signal?.addEventListener('abort', () =>
            reject(appError('PFG_ERR_RELAY_STREAM_RESET', 'the client went away')),
          )
        })
    }
  }
  const metrics = new GatewayMetrics()
  const forwarder = new Forwarder({
    registry: registry as unknown as ForwarderDeps['registry'],
    authenticator: authenticator as unknown as ForwarderDeps['authenticator'],
    authorizer: authorizer as unknown as ForwarderDeps['authorizer'],
    agents: agents as unknown as ForwarderDeps['agents'],
    audit: auditPort,
    limits: {
      ...LIMITS,
      ...(faults.has('conn-limit') ? { streamsPerConnection: 0 } : {}),
      ...(faults.has('user-limit') ? { streamsPerUser: 0 } : {}),
      ...options.limits,
    },
    metrics,
    logger: silentLogger(),
    gatewayId: '0123456789abcdef',
    now: () => clock.now,
    ...options.deps,
  })
  return { forwarder, trace, records, upstreams, faults, agent, clock, audit, metrics }
}

/** A forward request for `h`'s faults (the session is new unless given). */
export function request(
  h: Harness,
  session = h.forwarder.newSession({
    protocol: 'native-h2',
    sourceAddress: '192.0.2.7:40000',
    userAgent: 'pfgate-test/1',
    terminate: () => h.trace.push('session.terminate'),
  }),
): Parameters<Forwarder['open']>[0] {
  const f = h.faults
  return {
    session,
    authorization: 'Bearer good',
    namespace: f.has('name') ? 'Bad_NS' : 'default',
    pod: 'echo',
    node: f.has('wrong-node') ? 'node-b' : 'node-a',
    port: f.has('port') ? appError('PFG_ERR_ROUTE_BAD_PORT', 'port "x" is not a number') : 8080,
    ...(f.has('header-size') ? { headerBytes: 20000 } : { headerBytes: 100 }),
    ...(f.has('impersonation')
      ? {
          impersonation: {
            headers: ['impersonate-user'],
            resource: 'users' as const,
            name: 'root',
          },
        }
      : {}),
    onAuthenticated: () => h.trace.push('onAuthenticated'),
  }
}

/** Records with their random parts (ids, refs) replaced by placeholders. */
export function stable(records: AuditRecord[]): AuditRecord[] {
  return records.map((r) => {
    const out: AuditRecord = { ...r, id: '<id>' }
    if (out.ref !== undefined && out.ref !== '0badc0de') out.ref = '<ref>'
    if (out.error !== undefined)
      out.error = {
        ...out.error,
        message: out.error.message.replace(/ref [0-9a-f]{8}/, 'ref <ref>'),
      }
    return out
  })
}

/** The error `p` rejects with. */
export async function refusal(p: Promise<unknown>): Promise<AppError> {
  try {
    await p
  } catch (err) {
    if (err instanceof AppError) return err
    throw err
  }
  throw new Error('expected a refusal')
}

/** Lets promise callbacks and stream events run. */
export function tick(ms = 0): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}
