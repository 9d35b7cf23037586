/**
 * The console's backend on the gateway's own parts: the authenticator, the authorizer,
 * the forwarder's table of live sessions and streams, the metrics and the file trail.
 * The one place that knows both sides (the console plugin knows only backend.ts).
 *
 * @module
 */
import type { AuditRecord } from '../../protocol/audit-record.js'
import { trailRecords } from '../audit/trail-reader.js'
import type { Authenticator } from '../auth/authenticator.js'
import type { Authorizer } from '../authz/authorizer.js'
import { shownUserAgent } from '../forward/audit-events.js'
import type { Forwarder } from '../forward/forwarder.js'
import type { GatewayMetrics } from '../metrics.js'
import type { ConsoleBackend, ConsoleCounters } from './backend.js'

export interface GatewayBackendParts {
  authenticator: Authenticator
  authorizer: Authorizer
  forwarder: Forwarder
  metrics: GatewayMetrics
  /** The file trail's path (the first file sink), if the gateway keeps one. */
  auditFile: string | undefined
}

async function counterTotal(
  counter: { get(): Promise<{ values: { value: number; labels: Record<string, unknown> }[] }> },
  keep: (labels: Record<string, unknown>) => boolean = () => true,
): Promise<number> {
  const m = await counter.get()
  return m.values.reduce((n, v) => (keep(v.labels) ? n + v.value : n), 0)
}

export function gatewayConsoleBackend(parts: GatewayBackendParts): ConsoleBackend {
  const { forwarder } = parts
  const auditFile = parts.auditFile
  return {
    authenticate: (token) => parts.authenticator.authenticate(`Bearer ${token}`),
    isAdmin: (identity) => parts.authorizer.isAdmin(identity),
    sessions: () =>
      forwarder.sessions().map((s) => {
        let c2p = s.bytesClientToPod
        let p2c = s.bytesPodToClient
        for (const x of s.streams) {
          c2p += x.relay?.bytesAtoB ?? 0
          p2c += x.relay?.bytesBtoA ?? 0
        }
        return {
          id: s.id,
          users: s.users,
          protocol: s.protocol,
          sourceAddress: s.sourceAddress,
          ...(s.userAgent !== undefined ? { userAgent: shownUserAgent(s.userAgent) } : {}),
          openedAt: new Date(s.openedAt).toISOString(),
          streams: s.streams.size,
          bytesClientToPod: c2p,
          bytesPodToClient: p2c,
        }
      }),
    streams: () =>
      forwarder.streams().map((s) => {
        const v = s.view()
        return {
          id: v.id,
          sessionId: v.sessionId,
          user: v.user,
          sourceAddress: v.sourceAddress,
          protocol: v.protocol,
          namespace: v.namespace,
          pod: v.pod,
          node: v.node,
          port: v.port,
          ...(s.transport !== undefined ? { transport: s.transport } : {}),
          ...(v.target !== undefined ? { service: v.target } : {}),
          openedAt: v.openedAt,
          bytesClientToPod: v.bytesClientToPod,
          bytesPodToClient: v.bytesPodToClient,
        }
      }),
    killStream: (id, admin) => forwarder.killStream(id, admin),
    killSession: (id, admin) => forwarder.killSession(id, admin),
    async counters(): Promise<ConsoleCounters> {
      const m = parts.metrics
      // Closed streams' bytes are counted at their close; live ones are read from the relay.
      let live = 0
      for (const s of forwarder.streams()) {
        live += (s.relay?.bytesAtoB ?? 0) + (s.relay?.bytesBtoA ?? 0)
      }
      return {
        streamsOpened: await counterTotal(m.streamsOpened),
        denials: await counterTotal(
          m.streamsRejected,
          (l) => l.status === '401' || l.status === '403',
        ),
        bytes: (await counterTotal(m.bytes)) + live,
      }
    },
    auditRecords:
      auditFile === undefined
        ? undefined
        : async function* (): AsyncGenerator<AuditRecord> {
            for await (const { record } of trailRecords(auditFile)) yield record
          },
  }
}
