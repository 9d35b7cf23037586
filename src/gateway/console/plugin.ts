/**
 * The admin console: a page and its API under `/console/`, on the gateway's TLS port.
 * A Fastify plugin on a narrow backend (backend.ts): it never touches the forwarder,
 * the relay or the audit sinks itself. docs/console.md describes what an admin sees.
 *
 * - **Access**: admins only. `POST /console/api/login` takes a bearer token once and
 *   sets the login cookie (logins.ts); every other API call needs it. Calls that change
 *   state need the login's CSRF token in `X-Pfgate-Csrf` and a same-origin `Origin` /
 *   `Sec-Fetch-Site` when the browser sends them. Refusals are thrown as AppErrors: the
 *   gateway's error handler answers and audits them (`request.denied`).
 * - **Live view**: `GET /console/api/live`, server-sent events from the sampler
 *   (live.ts), one `sample` a second.
 * - **Audit**: `GET /console/api/audit` (the filters of `pfgate audit query`, newest
 *   first, paginated), `…/audit/timeline?stream=ID`, `…/audit/export?format=jsonl|csv`.
 * - **Page**: the bundle built from src/console-ui (esbuild, `npm run build`), served
 *   from memory with a strict Content-Security-Policy: no inline script, nothing from
 *   another origin.
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { AuditRecord } from '../../protocol/audit-record.js'
import { appError } from '../../shared/errors.js'
import type { ConsoleBackend } from './backend.js'
import {
  COOKIE_NAME,
  CSRF_HEADER,
  ConsoleLogins,
  DEFAULT_LOGIN_LIMITS,
  cookieValue,
  csrfMatches,
  setCookie,
} from './logins.js'
import type { ConsoleLogin, LoginLimits } from './logins.js'
import { DEFAULT_SAMPLER, LiveSampler } from './live.js'
import type { LiveSample, SamplerOptions } from './live.js'
import {
  CSV_HEADER,
  auditQuery,
  csvLine,
  searchAudit,
  searchParams,
  streamTimeline,
} from './audit-search.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** How the console authenticates the route (the gateway's own hook treats it as public). */
    console?: 'asset' | 'login' | 'admin'
  }
}

/** Where the console's routes live. */
export const CONSOLE_PREFIX = '/console'

/** Security headers of every console answer. */
export const CONSOLE_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
}

export interface ConsoleOptions {
  backend: ConsoleBackend
  /**
   * The gateway's connection bookkeeping: a console request that authenticated lifts
   * the connection's pre-authentication bounds, and the live view's stream is exempt
   * from the request deadline (it is bounded by {@link ConsoleOptions.liveMaxMs}).
   */
  connection?: {
    authenticated(request: FastifyRequest): void
    longLived(request: FastifyRequest): void
  }
  /** The built page (default: dist/src/console-ui beside this module's build). */
  assetsDir?: string
  logins?: LoginLimits
  sampler?: SamplerOptions
  /** Live views at once (default 32). */
  maxWatchers?: number
  /** Audit searches and exports at once (default 2). */
  maxSearches?: number
  /** A live view's event stream ends after this long; the browser reconnects (default 10 min). */
  liveMaxMs?: number
}

/** The files of the page (name → content type). */
const ASSETS: Readonly<Record<string, string>> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
}

function defaultAssetsDir(): string {
  // dist/src/gateway/console/plugin.js → dist/src/console-ui/
  return fileURLToPath(new URL('../../console-ui/', import.meta.url))
}

function loadAssets(dir: string): Map<string, Buffer> | undefined {
  const files = new Map<string, Buffer>()
  try {
    for (const name of Object.keys(ASSETS)) files.set(name, readFileSync(`${dir}/${name}`))
  } catch {
    return undefined
  }
  return files
}

type Request = FastifyRequest & { consoleLogin?: ConsoleLogin }

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

/** Registers the console (use with `{ prefix: CONSOLE_PREFIX }`). */
export async function consolePlugin(app: FastifyInstance, opts: ConsoleOptions): Promise<void> {
  const { backend } = opts
  const logins = new ConsoleLogins(opts.logins ?? DEFAULT_LOGIN_LIMITS)
  const sampler = new LiveSampler(backend, opts.sampler ?? DEFAULT_SAMPLER)
  const maxWatchers = opts.maxWatchers ?? 32
  const maxSearches = opts.maxSearches ?? 2
  const liveMaxMs = opts.liveMaxMs ?? 10 * 60_000
  const assets = loadAssets(opts.assetsDir ?? defaultAssetsDir())
  const live = new Set<() => void>()
  let searches = 0

  sampler.start()
  app.addHook('preClose', async () => {
    for (const end of [...live]) end()
    sampler.stop()
  })

  app.addHook('onSend', async (_request, reply) => {
    reply.headers(CONSOLE_HEADERS)
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store')
  })

  /** Refuses a cross-site state-changing call (before any credential is looked at). */
  const sameSite = (request: FastifyRequest): void => {
    const site = request.headers['sec-fetch-site']
    if (site !== undefined && site !== 'same-origin') {
      throw appError('PFG_ERR_AUTH_CSRF', `cross-site request refused (Sec-Fetch-Site: ${site})`)
    }
    const origin = request.headers.origin
    if (origin !== undefined && origin !== `https://${request.host}`) {
      throw appError('PFG_ERR_AUTH_CSRF', 'cross-site request refused (Origin)')
    }
  }

  app.addHook('onRequest', async (request: Request) => {
    const mode = request.routeOptions.config.console
    if (mode === undefined || mode === 'asset') return
    if (STATE_CHANGING.has(request.method)) sameSite(request)
    if (mode === 'login') return
    const cookie = cookieValue(request.headers.cookie, COOKIE_NAME)
    if (cookie === undefined) throw appError('PFG_ERR_AUTH_MISSING', 'Unauthorized: log in first')
    const login = logins.get(cookie)
    if (login === undefined) throw appError('PFG_ERR_AUTH_INVALID', 'Unauthorized: log in again')
    request.identity = login.identity
    if (!backend.isAdmin(login.identity)) {
      throw appError('PFG_ERR_AUTH_FORBIDDEN', `user "${login.identity.user}" is not an admin`)
    }
    if (STATE_CHANGING.has(request.method) && !csrfMatches(login, request.headers[CSRF_HEADER])) {
      throw appError('PFG_ERR_AUTH_CSRF', 'missing or wrong CSRF token')
    }
    request.consoleLogin = login
    opts.connection?.authenticated(request)
  })

  // --- The page
  const page = async (name: string, reply: FastifyReply): Promise<unknown> => {
    const body = assets?.get(name)
    if (body === undefined) {
      throw appError(
        'PFG_ERR_ROUTE_NOT_FOUND',
        'the console page is not built (npm run build builds it)',
      )
    }
    return reply
      .type(ASSETS[name] as string)
      .header('cache-control', 'no-cache')
      .send(body)
  }
  const asset = { config: { auth: 'public' as const, console: 'asset' as const } }
  app.get('', asset, async (_request, reply) => reply.redirect(`${CONSOLE_PREFIX}/`))
  // Only `/console/`: the page's relative URLs (app.js, api/…) need the slash.
  app.get('/', { ...asset, prefixTrailingSlash: 'slash' }, async (_request, reply) =>
    page('index.html', reply),
  )
  app.get('/app.js', asset, async (_request, reply) => page('app.js', reply))
  app.get('/app.css', asset, async (_request, reply) => page('app.css', reply))

  // --- Login
  const admin = { config: { auth: 'public' as const, console: 'admin' as const } }
  app.post<{ Body: { token?: unknown } }>(
    '/api/login',
    { config: { auth: 'public', console: 'login' }, bodyLimit: 16_384 },
    async (request, reply) => {
      const token = request.body?.token
      if (typeof token !== 'string' || token.trim() === '') {
        throw appError('PFG_ERR_AUTH_MISSING', 'Unauthorized: no token')
      }
      const identity = await backend.authenticate(token.trim())
      request.identity = identity
      if (!backend.isAdmin(identity)) {
        throw appError('PFG_ERR_AUTH_FORBIDDEN', `user "${identity.user}" is not an admin`)
      }
      opts.connection?.authenticated(request)
      const login = logins.create(identity)
      request.log.info({ admin: identity.user }, 'admin logged in to the console')
      return reply
        .header('set-cookie', setCookie(login))
        .send({ user: identity.user, csrf: login.csrf, expiresAt: login.expiresAt })
    },
  )
  app.post('/api/logout', admin, async (request: Request, reply) => {
    if (request.consoleLogin !== undefined) logins.delete(request.consoleLogin.id)
    return reply.header('set-cookie', setCookie(undefined)).send({ user: null })
  })
  // Who is logged in (the page asks on load): a visitor without a login learns only that.
  app.get('/api/me', { config: { auth: 'public', console: 'asset' } }, async (request) => {
    const login = logins.get(cookieValue(request.headers.cookie, COOKIE_NAME))
    if (login === undefined || !backend.isAdmin(login.identity)) return { user: null }
    return { user: login.identity.user, csrf: login.csrf, expiresAt: login.expiresAt }
  })

  // --- Live view
  app.get('/api/live', admin, async (request: Request, reply) => {
    if (sampler.watchers >= maxWatchers) {
      throw appError('PFG_ERR_LIMIT_CONSOLE_BUSY', `at most ${maxWatchers} live views at once`)
    }
    const login = request.consoleLogin as ConsoleLogin
    opts.connection?.longLived(request)
    reply.hijack()
    const raw = reply.raw
    raw.writeHead(200, {
      ...CONSOLE_HEADERS,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
    })
    let paused = false
    const send = (event: string, data: unknown): void => {
      if (paused) return // a slow reader misses samples rather than growing a buffer
      if (!raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)) {
        paused = true
        raw.once('drain', () => {
          paused = false
        })
      }
    }
    const timer = setTimeout(() => end(), Math.min(liveMaxMs, login.expiresAt - Date.now()))
    timer.unref()
    const unsubscribe = sampler.subscribe((sample: LiveSample) => {
      if (logins.get(login.id) === undefined) return end()
      send('sample', sample)
    })
    const end = (): void => {
      clearTimeout(timer)
      unsubscribe()
      live.delete(end)
      if (!raw.writableEnded) raw.end()
    }
    live.add(end)
    raw.once('close', end)
    raw.write('retry: 2000\n\n')
    send('history', sampler.history())
  })

  // --- Kill
  app.delete('/api/streams/:id', admin, async (request: Request) => {
    const { id } = request.params as { id: string }
    const user = (request.consoleLogin as ConsoleLogin).identity.user
    if (!backend.killStream(id, user)) {
      throw appError('PFG_ERR_ROUTE_NOT_FOUND', `no live stream "${id}"`)
    }
    request.log.info({ stream: id, admin: user }, 'admin ended a stream (console)')
    return { status: 'Success', message: 'stream ended' }
  })
  app.delete('/api/sessions/:id', admin, async (request: Request) => {
    const { id } = request.params as { id: string }
    const user = (request.consoleLogin as ConsoleLogin).identity.user
    if (!backend.killSession(id, user)) {
      throw appError('PFG_ERR_ROUTE_NOT_FOUND', `no live session "${id}"`)
    }
    request.log.info({ session: id, admin: user }, 'admin ended a session (console)')
    return { status: 'Success', message: 'session ended' }
  })

  // --- Audit
  /** The trail's reader, within the search limit (call `release` once done). */
  const takeTrail = (): { read: () => AsyncIterable<AuditRecord>; release: () => void } => {
    const read = backend.auditRecords
    if (read === undefined) {
      throw appError('PFG_ERR_ROUTE_NOT_FOUND', 'the gateway keeps no audit file to search')
    }
    if (searches >= maxSearches) {
      throw appError('PFG_ERR_LIMIT_CONSOLE_BUSY', `at most ${maxSearches} audit searches at once`)
    }
    searches++
    let released = false
    const release = (): void => {
      if (!released) searches--
      released = true
    }
    return { read, release }
  }
  const withTrail = async <T>(
    fn: (records: AsyncIterable<AuditRecord>) => Promise<T>,
  ): Promise<T> => {
    const { read, release } = takeTrail()
    try {
      return await fn(read())
    } finally {
      release()
    }
  }

  app.get('/api/audit', admin, async (request) => {
    const { query, page: pageNo, size } = searchParams(request.query)
    return withTrail((records) => searchAudit(records, query, pageNo, size))
  })
  app.get('/api/audit/timeline', admin, async (request) => {
    const { extra } = auditQuery(request.query, ['stream'], false)
    const stream = extra.stream
    if (stream === undefined || stream === '' || stream.length > 128) {
      throw appError('PFG_ERR_ROUTE_BAD_QUERY', 'timeline needs ?stream=ID')
    }
    return { items: await withTrail((records) => streamTimeline(records, stream)) }
  })
  app.get('/api/audit/export', admin, async (request, reply) => {
    const { query, extra } = auditQuery(request.query, ['format'])
    const format = extra.format ?? 'jsonl'
    if (format !== 'jsonl' && format !== 'csv') {
      throw appError('PFG_ERR_ROUTE_BAD_QUERY', 'format must be jsonl or csv')
    }
    const { read, release } = takeTrail()
    reply.raw.once('close', release)
    const lines = async function* (): AsyncGenerator<string> {
      try {
        if (format === 'csv') yield CSV_HEADER
        for await (const r of read()) {
          if (!query.matches(r)) continue
          yield format === 'csv' ? csvLine(r) : `${JSON.stringify(r)}\n`
        }
      } finally {
        release()
      }
    }
    const stamp = new Date().toISOString().replace(/[:.]/g, '-')
    return reply
      .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson; charset=utf-8')
      .header('content-disposition', `attachment; filename="pfgate-audit-${stamp}.${format}"`)
      .send(Readable.from(lines()))
  })
}
