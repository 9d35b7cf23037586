/**
 * The admin API (admins only, `config.auth: 'admin'`): live client sessions and
 * streams, and ending either (`pfgate admin`; docs/audit.md has what the kill records),
 * across every replica when peers are configured (cluster-view.ts, docs/scaling.md);
 * the reverse-connected agents of each replica.
 *
 * @module
 */
import { gatherListing, killAnywhere } from '../cluster-view.js'
import type { ClusterView } from '../cluster-view.js'
import { shownUserAgent } from '../forward/audit-events.js'
import type { Forwarder } from '../forward/forwarder.js'
import { identityOf } from './auth.js'
import type { GatewayPlugin } from './types.js'

/** What the admin API reads and acts on. */
export interface AdminOptions {
  forwarder: Pick<Forwarder, 'sessions' | 'streams' | 'killStream' | 'killSession'>
  /** The other replicas and the reverse agents (none: this replica alone, dial mode). */
  cluster?: ClusterView | undefined
}

/** The Status body of an admin action that worked (`details.gateway`: which replica). */
function successStatus(message: string, gateway: string | undefined): Record<string, unknown> {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    status: 'Success',
    code: 200,
    message,
    ...(gateway !== undefined ? { details: { gateway } } : {}),
  }
}

/** `/admin/v1/sessions`, `/admin/v1/streams` and their DELETEs. */
export const adminRoutes: GatewayPlugin<AdminOptions> = async (app, { forwarder, cluster }) => {
  const gateway = cluster?.gatewayId ?? ''
  // `gateway`: which replica answered (only with a cluster view).
  const self = cluster !== undefined ? { gateway } : {}
  app.get('/admin/v1/sessions', { config: { auth: 'admin' } }, async (request) => ({
    ...self,
    ...(await gatherListing(cluster, '/admin/v1/sessions', sessionItems(), request)),
  }))
  const sessionItems = (): Record<string, unknown>[] =>
    forwarder.sessions().map((s) => ({
      id: s.id,
      // Every user that authenticated on the connection; `user`/`groups` when only one did.
      users: s.users,
      ...(s.identities.size === 1
        ? { user: s.users[0], groups: s.identities.get(s.users[0] as string) }
        : {}),
      protocol: s.protocol,
      sourceAddress: s.sourceAddress,
      ...(s.userAgent !== undefined ? { userAgent: shownUserAgent(s.userAgent) } : {}),
      openedAt: new Date(s.openedAt).toISOString(),
      streams: s.streams.size,
      bytesClientToPod:
        s.bytesClientToPod + [...s.streams].reduce((n, x) => n + (x.relay?.bytesAtoB ?? 0), 0),
      bytesPodToClient:
        s.bytesPodToClient + [...s.streams].reduce((n, x) => n + (x.relay?.bytesBtoA ?? 0), 0),
    }))
  app.get('/admin/v1/streams', { config: { auth: 'admin' } }, async (request) => ({
    ...self,
    ...(await gatherListing(
      cluster,
      '/admin/v1/streams',
      forwarder.streams().map((s) => s.view() as unknown as Record<string, unknown>),
      request,
    )),
  }))
  // Reverse-connected agents on each replica (`pfgate admin agents`).
  app.get('/admin/v1/agents', { config: { auth: 'admin' } }, async (request) => ({
    ...self,
    mode: cluster?.mode ?? 'dial',
    ...(await gatherListing(
      cluster,
      '/admin/v1/agents',
      (cluster?.reverse?.list() ?? []) as unknown as Record<string, unknown>[],
      request,
    )),
  }))
  for (const [kind, kill] of [
    ['stream', (id: string, admin: string) => forwarder.killStream(id, admin)],
    ['session', (id: string, admin: string) => forwarder.killSession(id, admin)],
  ] as const) {
    app.delete<{ Params: { id: string } }>(
      `/admin/v1/${kind}s/:id`,
      { config: { auth: 'admin' } },
      async (request) => {
        const admin = identityOf(request).user
        const id = request.params.id
        const where = await killAnywhere(
          cluster,
          `/admin/v1/${kind}s/${encodeURIComponent(id)}`,
          `${kind} "${id}"`,
          () => kill(id, admin),
          request,
        )
        request.log.info({ [kind]: id, admin, gateway: where.gateway }, `admin ended a ${kind}`)
        return successStatus(`${kind} ended`, cluster !== undefined ? where.gateway : undefined)
      },
    )
  }
}
