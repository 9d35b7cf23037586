/**
 * The admin console's server side, in process: the plugin on a backend of its own
 * (the gateway's backend is exercised end to end in test/e2e/console-browser.test.ts).
 * Login, cookie flags, CSRF and cross-site refusals, the live event stream, kills naming
 * the admin, audit search/timeline/export with the shared query semantics, headers.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import type { ConsoleBackend } from '../../../src/gateway/console/backend.js'
import { CONSOLE_PREFIX, consolePlugin } from '../../../src/gateway/console/plugin.js'
import type { ConsoleOptions } from '../../../src/gateway/console/plugin.js'
import { csvField } from '../../../src/gateway/console/audit-search.js'
import { appError, isAppError } from '../../../src/shared/errors.js'
import { buildStatus } from '../../../src/protocol/status.js'
import type { AuditRecord } from '../../../src/protocol/audit-record.js'
import type { Identity } from '../../../src/gateway/auth/authenticator.js'

const HOUR = 3_600_000

function record(i: number, fields: Partial<AuditRecord>): AuditRecord {
  return {
    schema: 'pfgate.audit/v2',
    id: `r${i}`,
    time: new Date(Date.now() - (100 - i) * 1000).toISOString(),
    type: 'stream.closed',
    ...fields,
  }
}

/** A backend of its own: two tokens, one live stream, a small trail. */
function testBackend() {
  const kills: { kind: string; id: string; admin: string }[] = []
  const streams = [
    {
      id: 'st-1',
      sessionId: 'se-1',
      user: 'bob',
      sourceAddress: '10.0.0.2:5000',
      protocol: 'native-h2',
      namespace: 'default',
      pod: 'web-0',
      node: 'node-a',
      port: 8080,
      openedAt: new Date().toISOString(),
      bytesClientToPod: 0,
      bytesPodToClient: 0,
    },
  ]
  const trail: AuditRecord[] = []
  for (let i = 0; i < 30; i++) {
    trail.push(
      record(i, {
        user: i % 3 === 0 ? 'bob' : 'carol',
        streamId: `st-${i}`,
        sessionId: 'se-1',
        ...(i % 5 === 0 ? { type: 'stream.denied', status: 403 } : { endedBy: 'pod' }),
        namespace: 'default',
        pod: 'web-0',
        port: 8080,
      }),
    )
  }
  trail.push(record(40, { type: 'session.opened', sessionId: 'se-1', user: 'bob' }))
  trail.push(
    record(41, { type: 'stream.opened', streamId: 'st-1', sessionId: 'se-1', user: 'bob' }),
  )
  let opened = 0
  const backend: ConsoleBackend = {
    async authenticate(token: string): Promise<Identity> {
      const expiresAt = Date.now() + HOUR
      if (token === 'admin-token') return { user: 'alice', groups: ['admins'], expiresAt }
      if (token === 'user-token') return { user: 'bob', groups: ['dev'], expiresAt }
      throw appError('PFG_ERR_AUTH_INVALID', 'Unauthorized')
    },
    isAdmin: (identity) => identity.groups.includes('admins'),
    sessions: () => [
      {
        id: 'se-1',
        users: ['bob'],
        protocol: 'native-h2',
        sourceAddress: '10.0.0.2:5000',
        openedAt: new Date().toISOString(),
        streams: streams.length,
        bytesClientToPod: 0,
        bytesPodToClient: 0,
      },
    ],
    streams: () => streams.map((s) => ({ ...s })),
    killStream(id, admin) {
      kills.push({ kind: 'stream', id, admin })
      return streams.some((s) => s.id === id)
    },
    killSession(id, admin) {
      kills.push({ kind: 'session', id, admin })
      return id === 'se-1'
    },
    async counters() {
      opened += 2
      const s = streams[0] as { bytesClientToPod: number }
      s.bytesClientToPod += 1000
      return { streamsOpened: opened, denials: 0, bytes: s.bytesClientToPod }
    },
    auditRecords: async function* () {
      yield* trail
    },
  }
  return { backend, kills, trail }
}

async function app(
  backend: ConsoleBackend,
  extra: Partial<ConsoleOptions> = {},
): Promise<FastifyInstance> {
  const f = Fastify()
  f.setErrorHandler((err, _request, reply) => {
    // As the gateway's handler: an AppError's status, else the error's own (415 …).
    const status = isAppError(err)
      ? err.statusCode
      : ((err as { statusCode?: number }).statusCode ?? 500)
    const code = isAppError(err) ? err.code : undefined
    return reply.code(status).send(buildStatus(status, (err as Error).message, code))
  })
  await f.register(consolePlugin, {
    prefix: CONSOLE_PREFIX,
    backend,
    sampler: { intervalMs: 50, historyPoints: 100 },
    ...extra,
  })
  await f.ready()
  return f
}

async function login(f: FastifyInstance, token = 'admin-token') {
  const res = await f.inject({
    method: 'POST',
    url: '/console/api/login',
    headers: { origin: 'https://localhost:80', 'sec-fetch-site': 'same-origin' },
    payload: { token },
  })
  const cookie = String(res.headers['set-cookie'] ?? '').split(';')[0] ?? ''
  return { res, cookie, csrf: res.json<{ csrf?: string }>().csrf ?? '' }
}

test('login: a bad token is 401, a non-admin 403; an admin gets a strict cookie and a CSRF token', async (t) => {
  const f = await app(testBackend().backend)
  t.after(() => f.close())
  const bad = await login(f, 'nope')
  assert.equal(bad.res.statusCode, 401)
  assert.equal(bad.res.headers['set-cookie'], undefined)
  const user = await login(f, 'user-token')
  assert.equal(user.res.statusCode, 403)
  assert.match(user.res.json<{ message: string }>().message, /"bob" is not an admin/)
  assert.equal(user.res.headers['set-cookie'], undefined)
  const ok = await login(f)
  assert.equal(ok.res.statusCode, 200)
  const setCookie = String(ok.res.headers['set-cookie'])
  assert.match(setCookie, /^__Host-pfgate-console=[\w-]{43};/)
  for (const flag of ['HttpOnly', 'Secure', 'SameSite=Strict', 'Path=/'])
    assert.ok(setCookie.includes(flag), `${flag} in ${setCookie}`)
  assert.match(ok.csrf, /^[\w-]{43}$/)
  const me = await f.inject({ url: '/console/api/me', headers: { cookie: ok.cookie } })
  assert.deepEqual(me.json<{ user: string }>().user, 'alice')
  const anon = await f.inject({ url: '/console/api/me' })
  assert.deepEqual(anon.json(), { user: null })
})

test('a form post from another site cannot log in (content type, Origin, Sec-Fetch-Site)', async (t) => {
  const f = await app(testBackend().backend)
  t.after(() => f.close())
  const form = await f.inject({
    method: 'POST',
    url: '/console/api/login',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: 'token=admin-token',
  })
  assert.equal(form.statusCode, 415)
  for (const headers of [{ origin: 'https://evil.example' }, { 'sec-fetch-site': 'cross-site' }]) {
    const res = await f.inject({
      method: 'POST',
      url: '/console/api/login',
      headers,
      payload: { token: 'admin-token' },
    })
    assert.equal(res.statusCode, 403, JSON.stringify(headers))
    assert.match(res.body, /PFG_ERR_AUTH_CSRF/)
  }
})

test('every API call but login needs the cookie; kills need the CSRF token and name the admin', async (t) => {
  const { backend, kills } = testBackend()
  const f = await app(backend)
  t.after(() => f.close())
  for (const url of ['/console/api/audit', '/console/api/live', '/console/api/audit/export']) {
    const res = await f.inject({ url })
    assert.equal(res.statusCode, 401, url)
  }
  const forged = await f.inject({ method: 'DELETE', url: '/console/api/streams/st-1' })
  assert.equal(forged.statusCode, 401)
  const { cookie, csrf } = await login(f)
  const noToken = await f.inject({
    method: 'DELETE',
    url: '/console/api/streams/st-1',
    headers: { cookie },
  })
  assert.equal(noToken.statusCode, 403)
  assert.match(noToken.body, /PFG_ERR_AUTH_CSRF/)
  const wrong = await f.inject({
    method: 'DELETE',
    url: '/console/api/streams/st-1',
    headers: { cookie, 'x-pfgate-csrf': csrf.replace(/^./, (c) => (c === 'a' ? 'b' : 'a')) },
  })
  assert.equal(wrong.statusCode, 403)
  const crossSite = await f.inject({
    method: 'DELETE',
    url: '/console/api/streams/st-1',
    headers: { cookie, 'x-pfgate-csrf': csrf, origin: 'https://evil.example' },
  })
  assert.equal(crossSite.statusCode, 403)
  assert.deepEqual(kills, [])
  const ok = await f.inject({
    method: 'DELETE',
    url: '/console/api/streams/st-1',
    headers: { cookie, 'x-pfgate-csrf': csrf, origin: 'https://localhost:80' },
  })
  assert.equal(ok.statusCode, 200)
  const gone = await f.inject({
    method: 'DELETE',
    url: '/console/api/sessions/nope',
    headers: { cookie, 'x-pfgate-csrf': csrf },
  })
  assert.equal(gone.statusCode, 404)
  assert.deepEqual(kills, [
    { kind: 'stream', id: 'st-1', admin: 'alice' },
    { kind: 'session', id: 'nope', admin: 'alice' },
  ])
  // Logged out, the cookie is worth nothing.
  const out = await f.inject({
    method: 'POST',
    url: '/console/api/logout',
    headers: { cookie, 'x-pfgate-csrf': csrf },
  })
  assert.equal(out.statusCode, 200)
  assert.match(String(out.headers['set-cookie']), /Max-Age=0/)
  const after = await f.inject({ url: '/console/api/audit', headers: { cookie } })
  assert.equal(after.statusCode, 401)
})

test('audit search: the shared filters, newest first, paginated; bad filters are 400', async (t) => {
  const f = await app(testBackend().backend)
  t.after(() => f.close())
  const { cookie } = await login(f)
  const get = (qs: string) => f.inject({ url: `/console/api/audit?${qs}`, headers: { cookie } })
  type Page = { items: { id: string; user: string; outcome: string }[]; total: number }
  const bob = (await get('user=bob&outcome=denied')).json<Page>()
  // i % 3 == 0 and i % 5 == 0: 0, 15
  assert.deepEqual(
    bob.items.map((r) => r.id),
    ['r15', 'r0'],
  )
  assert.equal(bob.total, 2)
  assert.ok(bob.items.every((r) => r.outcome === 'denied'))
  const p0 = (await get('size=10&page=0')).json<Page>()
  const p1 = (await get('size=10&page=1')).json<Page>()
  const p3 = (await get('size=10&page=3')).json<Page>()
  assert.equal(p0.total, 32)
  assert.deepEqual(
    p0.items.map((r) => r.id),
    ['r41', 'r40', 'r29', 'r28', 'r27', 'r26', 'r25', 'r24', 'r23', 'r22'],
  )
  assert.equal(p1.items[0]?.id, 'r21')
  assert.deepEqual(
    p3.items.map((r) => r.id),
    ['r1', 'r0'],
  )
  for (const qs of ['port=0', 'outcome=maybe', 'colour=red', 'user=a&user=b', 'size=0']) {
    const res = await get(qs)
    assert.equal(res.statusCode, 400, qs)
    assert.match(res.body, /PFG_ERR_ROUTE_BAD_QUERY/)
  }
  const timeline = await f.inject({
    url: '/console/api/audit/timeline?stream=st-1',
    headers: { cookie },
  })
  assert.deepEqual(
    timeline.json<{ items: { type: string }[] }>().items.map((r) => r.type),
    ['stream.closed', 'session.opened', 'stream.opened'],
  )
})

test('export: JSON lines and CSV of the whole result, as attachments', async (t) => {
  const { backend, trail } = testBackend()
  trail.push(record(50, { type: 'request.denied', user: 'bob', path: '=HYPERLINK("x")' }))
  const f = await app(backend)
  t.after(() => f.close())
  const { cookie } = await login(f)
  const jsonl = await f.inject({
    url: '/console/api/audit/export?user=bob&format=jsonl',
    headers: { cookie },
  })
  assert.equal(jsonl.statusCode, 200)
  assert.match(
    String(jsonl.headers['content-disposition']),
    /^attachment; filename="pfgate-audit-.*\.jsonl"$/,
  )
  const lines = jsonl.body
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as AuditRecord)
  assert.equal(lines.length, 10 + 2 + 1)
  assert.ok(lines.every((r) => r.user === 'bob'))
  const csv = await f.inject({
    url: '/console/api/audit/export?user=bob&type=request&format=csv',
    headers: { cookie },
  })
  const rows = csv.body.trim().split('\r\n')
  assert.match(rows[0] ?? '', /^time,type,outcome,user,/)
  assert.equal(rows.length, 2)
  assert.match(rows[1] ?? '', /,request\.denied,denied,bob,/)
  assert.equal(csvField('=1+1'), "'=1+1")
  assert.equal(csvField('a,"b"'), '"a,""b"""')
})

test('the live view streams server-sent events: the history, then a sample a tick', async (t) => {
  const { backend } = testBackend()
  const f = await app(backend)
  t.after(() => f.close())
  const { cookie } = await login(f)
  await f.listen({ port: 0, host: '127.0.0.1' })
  const port = (f.server.address() as { port: number }).port
  const text = await new Promise<string>((resolve, reject) => {
    const req = httpRequest(
      { port, host: '127.0.0.1', path: '/console/api/live', headers: { cookie } },
      (res) => {
        assert.equal(res.statusCode, 200)
        assert.match(String(res.headers['content-type']), /^text\/event-stream/)
        assert.ok(String(res.headers['content-security-policy']).includes("script-src 'self'"))
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => {
          body += d
          if ((body.match(/event: sample/g) ?? []).length >= 3) {
            req.destroy()
            resolve(body)
          }
        })
      },
    )
    req.on('error', reject)
    req.end()
  })
  assert.match(text, /^retry: 2000\n\nevent: history\ndata: \[/)
  const samples = text
    .split('\n\n')
    .filter((e) => e.startsWith('event: sample'))
    .map(
      (e) =>
        JSON.parse(e.slice(e.indexOf('data: ') + 6)) as {
          streams: { id: string; bytesClientToPod: number; rateClientToPod: number }[]
          gateway: { opensPerSec: number }
        },
    )
  const bytes = samples.map((s) => s.streams[0]?.bytesClientToPod ?? -1)
  assert.ok(
    bytes.every((b, i) => i === 0 || b > (bytes[i - 1] as number)),
    bytes.join(),
  )
  assert.ok((samples[2]?.streams[0]?.rateClientToPod ?? 0) > 0)
  assert.ok((samples[2]?.gateway.opensPerSec ?? 0) > 0)
})

test('the page: served with a strict CSP and no inline script; the bundle is built', async (t) => {
  const f = await app(testBackend().backend)
  t.after(() => f.close())
  const page = await f.inject({ url: '/console/' })
  assert.equal(page.statusCode, 200)
  const csp = String(page.headers['content-security-policy'])
  assert.match(csp, /default-src 'none'/)
  assert.match(csp, /script-src 'self';/)
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/)
  assert.equal(page.headers['x-frame-options'], 'DENY')
  assert.match(page.body, /<script type="module" src="app.js"><\/script>/)
  assert.doesNotMatch(page.body, /<script>|<script [^>]*>[^<]/)
  assert.doesNotMatch(page.body, /https?:\/\//)
  const js = await f.inject({ url: '/console/app.js' })
  assert.equal(js.statusCode, 200)
  assert.match(String(js.headers['content-type']), /^text\/javascript/)
  assert.ok(js.body.length > 10_000)
  // No CDN: the bundle loads nothing from another origin.
  assert.doesNotMatch(js.body, /import\s*\(?\s*["']https?:|from\s*["']https?:/)
  const redirect = await f.inject({ url: '/console' })
  assert.equal(redirect.statusCode, 302)
  const missing = await app(testBackend().backend, { assetsDir: '/nonexistent' })
  t.after(() => missing.close())
  assert.equal((await missing.inject({ url: '/console/' })).statusCode, 404)
})
