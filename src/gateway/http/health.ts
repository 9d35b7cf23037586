/**
 * Health routes, public: `/healthz` and `/livez` (the process answers) and `/readyz`
 * (ready once the registry has synced, while the audit trail is writable, in reverse mode
 * while enough agents are connected, and until shutdown begins; otherwise 503 naming
 * what is missing).
 *
 * @module
 */
import { buildStatus } from '../../protocol/status.js'
import type { GatewayPlugin } from './types.js'

/** What readiness depends on. */
export interface HealthOptions {
  registry: { isReady(): boolean }
  audit: { healthy(): boolean }
  forwarder: { readonly draining: boolean }
  /** Why the agents make this replica not ready (reverse mode), or undefined. */
  agentsProblem?: () => string | undefined
}

/** `/healthz`, `/livez`, `/readyz`. */
export const healthRoutes: GatewayPlugin<HealthOptions> = async (app, deps) => {
  app.get('/healthz', { config: { auth: 'public' } }, async () => 'ok')
  app.get('/livez', { config: { auth: 'public' } }, async () => 'ok')
  app.get('/readyz', { config: { auth: 'public' } }, async (_req, reply) => {
    const problems: string[] = []
    if (!deps.registry.isReady()) problems.push('registry not synced')
    if (!deps.audit.healthy()) problems.push('audit sink unavailable')
    if (deps.forwarder.draining) problems.push('shutting down')
    const agents = deps.agentsProblem?.()
    if (agents !== undefined) problems.push(agents)
    if (problems.length === 0) return 'ok'
    return reply
      .code(503)
      .type('application/json')
      .send(buildStatus(503, `not ready: ${problems.join(', ')}`, 'PFG_ERR_ROUTE_NOT_READY'))
  })
}
