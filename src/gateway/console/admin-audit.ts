/**
 * `GET /admin/v1/audit`: the console's audit search for API clients (a bearer token with
 * the admin role, checked by the gateway's own hook): the filters of `pfgate audit query`
 * as query parameters, newest first, `page` and `size`. The same code as the console's
 * search (audit-search.ts) over the same shared query semantics.
 *
 * @module
 */
import type { FastifyInstance } from 'fastify'
import { appError } from '../../shared/errors.js'
import type { ConsoleBackend } from './backend.js'
import { searchAudit, searchParams } from './audit-search.js'

export interface AdminAuditOptions {
  backend: Pick<ConsoleBackend, 'auditRecords'>
  /** Searches at once (default 2). */
  maxSearches?: number
}

export async function adminAuditRoutes(
  app: FastifyInstance,
  opts: AdminAuditOptions,
): Promise<void> {
  const max = opts.maxSearches ?? 2
  let running = 0
  app.get('/admin/v1/audit', { config: { auth: 'admin' } }, async (request) => {
    const { query, page, size } = searchParams(request.query)
    const read = opts.backend.auditRecords
    if (read === undefined) {
      throw appError('PFG_ERR_ROUTE_NOT_FOUND', 'the gateway keeps no audit file to search')
    }
    if (running >= max) {
      throw appError('PFG_ERR_LIMIT_CONSOLE_BUSY', `at most ${max} audit searches at once`)
    }
    running++
    try {
      return await searchAudit(read(), query, page, size)
    } finally {
      running--
    }
  })
}
