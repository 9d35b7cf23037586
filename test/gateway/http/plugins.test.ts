/**
 * The authentication hook and the error handling as plugins on an app of their own, with
 * an identity source of the test's (a header): how a new identity source or a new set
 * of routes plugs in (docs/architecture.md, "Where things go"). Route auth modes,
 * default deny on unknown paths, the challenge, the connection told of authentication,
 * refusals recorded, errors that hide their detail, thrown non-AppErrors.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import { appError } from '../../../src/shared/errors.js'
import type { AppError } from '../../../src/shared/errors.js'
import type { Identity } from '../../../src/gateway/auth/authenticator.js'
import type { DeniedRequest } from '../../../src/gateway/forward/audit-events.js'
import { authentication, identityOf } from '../../../src/gateway/http/auth.js'
import type { AuthRequest } from '../../../src/gateway/http/auth.js'
import { errorHandling } from '../../../src/gateway/http/errors.js'
import type { GatewayApp, GatewayPlugin } from '../../../src/gateway/http/types.js'

/** An identity source of the test: `x-user: name[,group...]`. */
async function fromHeader(request: AuthRequest): Promise<Identity> {
  const v = request.headers['x-user']
  if (v === 'crash') throw new Error('identity source bug')
  if (typeof v !== 'string') throw appError('PFG_ERR_AUTH_MISSING', 'Unauthorized')
  const [user = '', ...groups] = v.split(',')
  return { user, groups, expiresAt: Date.now() + 60_000 }
}

const routes: GatewayPlugin = async (app) => {
  app.get('/open', { config: { auth: 'public' } }, async (request) => ({
    identity: request.identity ?? null,
  }))
  app.get('/mine', async (request) => ({ user: identityOf(request).user }))
  app.get('/boss', { config: { auth: 'admin' } }, async () => 'ok')
  app.get('/broken', async () => {
    throw appError('PFG_ERR_RELAY_AGENT_UNAVAILABLE', 'secret detail: 10.0.0.7:10250 refused')
  })
}

async function app(): Promise<{
  app: GatewayApp
  denied: DeniedRequest[]
  authenticated: unknown[]
}> {
  const denied: DeniedRequest[] = []
  const authenticated: unknown[] = []
  const a = Fastify() as unknown as GatewayApp
  await a.register(errorHandling, {
    forwarder: {
      requestDenied: (info: DeniedRequest, err: AppError) => {
        denied.push(info)
        return err
      },
    },
  })
  await a.register(authentication, {
    authenticate: fromHeader,
    authorizer: { isAdmin: (id: Identity) => id.groups.includes('admins') },
    onAuthenticated: (socket) => authenticated.push(socket),
  })
  await a.register(routes)
  await a.ready()
  return { app: a, denied, authenticated }
}

test('route auth modes with a pluggable identity source', async () => {
  const { app: a, denied, authenticated } = await app()
  try {
    const open = await a.inject({ url: '/open' })
    assert.deepEqual([open.statusCode, open.json()], [200, { identity: null }])
    assert.equal(authenticated.length, 0)

    const mine = await a.inject({ url: '/mine', headers: { 'x-user': 'ann' } })
    assert.deepEqual([mine.statusCode, mine.json()], [200, { user: 'ann' }])
    assert.equal(authenticated.length, 1)

    const anon = await a.inject({ url: '/mine' })
    assert.equal(anon.statusCode, 401)
    assert.equal(anon.headers['www-authenticate'], 'Bearer realm="pfgate"')
    assert.equal(anon.json().details.causes[0].reason, 'PFG_ERR_AUTH_MISSING')

    // A bug in an identity source is a 401, never a way in.
    const crash = await a.inject({ url: '/mine', headers: { 'x-user': 'crash' } })
    assert.deepEqual(
      [crash.statusCode, crash.json().message, crash.json().details.causes[0].reason],
      [401, 'Unauthorized', 'PFG_ERR_AUTH_INVALID'],
    )

    const notBoss = await a.inject({ url: '/boss', headers: { 'x-user': 'ann' } })
    assert.deepEqual(
      [notBoss.statusCode, notBoss.json().message],
      [403, 'user "ann" is not an admin'],
    )
    const boss = await a.inject({ url: '/boss', headers: { 'x-user': 'bo,admins' } })
    assert.deepEqual([boss.statusCode, boss.body], [200, 'ok'])

    const imp = await a.inject({
      url: '/mine',
      headers: { 'x-user': 'ann', 'impersonate-group': 'admins' },
    })
    assert.equal(imp.statusCode, 403)
    assert.equal(imp.json().details.causes[0].reason, 'PFG_ERR_AUTH_IMPERSONATION')

    // Unknown paths require a user too (default deny), then are 404.
    assert.equal((await a.inject({ url: '/nothing' })).statusCode, 401)
    assert.equal(
      (await a.inject({ url: '/nothing', headers: { 'x-user': 'ann' } })).statusCode,
      404,
    )

    assert.deepEqual(
      denied.map((d) => [d.path, d.identity?.user]),
      [
        ['/mine', undefined],
        ['/mine', undefined],
        ['/boss', 'ann'],
        ['/mine', 'ann'],
        ['/nothing', undefined],
      ],
    )
  } finally {
    await a.close()
  }
})

test('errors that hide their detail: a generic message and a ref', async () => {
  const { app: a } = await app()
  try {
    const r = await a.inject({ url: '/broken', headers: { 'x-user': 'ann' } })
    assert.equal(r.statusCode, 502)
    assert.doesNotMatch(r.body, /secret detail/)
    assert.match(
      r.json<{ message: string }>().message,
      /^the node agent cannot be reached \(ref [0-9a-f]{8}\)$/,
    )
  } finally {
    await a.close()
  }
})
