/**
 * The admin API (admins only, `config.auth: 'admin'`): live client sessions and
 * streams, and ending either (`pfgate admin`; docs/audit.md has what the kill records).
 *
 * @module
 */
import { appError } from '../../shared/errors.js'
import { shownUserAgent } from '../forward/audit-events.js'
import type { Forwarder } from '../forward/forwarder.js'
import { identityOf } from './auth.js'
import type { GatewayPlugin } from './types.js'

/** What the admin API reads and acts on. */
export interface AdminOptions {
  forwarder: Pick<Forwarder, 'sessions' | 'streams' | 'killStream' | 'killSession'>
}

/** The Status body of an admin action that worked. */
function successStatus(message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', status: 'Success', code: 200, message }
}

/** `/admin/v1/sessions`, `/admin/v1/streams` and their DELETEs. */
export const adminRoutes: GatewayPlugin<AdminOptions> = async (app, { forwarder }) => {
  app.get('/admin/v1/sessions', { config: { auth: 'admin' } }, async () => ({
    items: forwarder.sessions().map((s) => ({
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
    })),
  }))
  app.get('/admin/v1/streams', { config: { auth: 'admin' } }, async () => ({
    items: forwarder.streams().map((s) => s.view()),
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
        if (!kill(request.params.id, admin)) {
          throw appError('PFG_ERR_ROUTE_NOT_FOUND', `no live ${kind} "${request.params.id}"`)
        }
        request.log.info({ [kind]: request.params.id, admin }, `admin ended a ${kind}`)
        return successStatus(`${kind} ended`)
      },
    )
  }
}
