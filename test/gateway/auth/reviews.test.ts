/**
 * TokenReview delegation and the SubjectAccessReview authorizer against the test
 * Kubernetes API server, in the real wire format (`authentication.k8s.io/v1`,
 * `authorization.k8s.io/v1`): what is sent, what is believed, what is cached (hashed keys,
 * positive and negative, bounded), what is shared (one review for concurrent equal
 * questions), the bounds (in flight, per second), and the API server failing, hanging or
 * refusing the gateway (fail closed, clear reason, no token in it).
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { Authenticator } from '../../../src/gateway/auth/authenticator.js'
import type { Identity } from '../../../src/gateway/auth/authenticator.js'
import { KubeReviewClient } from '../../../src/gateway/auth/kube-review.js'
import { TokenReviewSource } from '../../../src/gateway/auth/token-review.js'
import { TtlCache } from '../../../src/gateway/auth/bounded-cache.js'
import { RbacAuthorizer } from '../../../src/gateway/authz/rbac.js'
import type { KubeCredentials } from '../../../src/gateway/registry/kube-credentials.js'
import { FakeKubeApiServer } from '../../helpers/fake-kube-apiserver.js'
import type { Logger } from '../../../src/shared/log.js'

let api: FakeKubeApiServer
let creds: KubeCredentials

before(async () => {
  api = await FakeKubeApiServer.start()
  creds = {
    server: api.url,
    ca: Buffer.from(api.pki.caCert),
    token: 'test-token',
    insecureSkipTlsVerify: false,
    source: 'test',
  }
})
after(() => api.close())

const silent = {
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  debug: () => undefined,
} as unknown as Logger

const limits = { maxInFlight: 16, perSecond: 1000, burst: 1000 }

function tokenSource(
  extra: Partial<ConstructorParameters<typeof TokenReviewSource>[0]> = {},
): TokenReviewSource {
  return new TokenReviewSource({
    client: new KubeReviewClient({ credentials: creds, timeoutMs: 1000 }),
    audiences: [],
    cacheTtlMs: 60_000,
    negativeCacheTtlMs: 5_000,
    maxEntries: 100,
    limits,
    ...extra,
  })
}

/** An authenticator whose only source is TokenReview. */
function reviewOnly(source: TokenReviewSource): Authenticator {
  return new Authenticator(undefined, silent, Date.now, { tokenReview: source })
}

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string; reason?: string }> {
  try {
    await p
  } catch (err) {
    return err as Error & { code?: string; reason?: string }
  }
  throw new Error('expected a rejection')
}

test('TokenReview: the wire format, the identity, the source, and caching by hash', async (t) => {
  api.reviewFailure = 'none'
  api.reviews.length = 0
  api.reviewedTokens.set('sa-token-1', {
    username: 'system:serviceaccount:ci:deployer',
    uid: 'c0ffee',
    groups: ['system:serviceaccounts', 'system:serviceaccounts:ci'],
    extra: { 'authentication.kubernetes.io/pod-name': ['runner-1'] },
  })
  const src = tokenSource()
  const auth = reviewOnly(src)
  t.after(() => auth.close())
  const id = await auth.authenticate('Bearer sa-token-1')
  assert.deepEqual(id, {
    user: 'system:serviceaccount:ci:deployer',
    groups: ['system:serviceaccounts', 'system:serviceaccounts:ci', 'system:authenticated'],
    expiresAt: id.expiresAt,
    source: 'tokenreview',
    uid: 'c0ffee',
    extra: { 'authentication.kubernetes.io/pod-name': ['runner-1'] },
  })
  assert.deepEqual(api.reviews, [{ kind: 'TokenReview', spec: { token: 'sa-token-1' } }])
  // Cached: 20 more requests, concurrent, no new review.
  await Promise.all(Array.from({ length: 20 }, () => src.authenticate('sa-token-1')))
  assert.equal(api.reviews.length, 1)
  // Concurrent first requests with a new token share one review.
  api.reviewedTokens.set('sa-token-2', { username: 'u2' })
  await Promise.all(Array.from({ length: 20 }, () => src.authenticate('sa-token-2')))
  assert.equal(api.reviews.length, 2)
})

test('TokenReview: a refused token is 401 with the reason, cached negatively for a while', async (t) => {
  api.reviewFailure = 'none'
  api.reviews.length = 0
  let now = Date.now()
  const src = tokenSource({ now: () => now })
  t.after(() => src.close())
  for (let i = 0; i < 3; i++) {
    const err = await rejection(src.authenticate('forged'))
    assert.equal(err.code, 'PFG_ERR_AUTH_INVALID')
    assert.match(err.message, /^Unauthorized \(ref [0-9a-f]{8}\)$/)
    assert.equal(err.reason, 'TokenReview: not authenticated: invalid bearer token')
  }
  assert.equal(api.reviews.length, 1, 'the refusal is cached')
  now += 6000
  await rejection(src.authenticate('forged'))
  assert.equal(api.reviews.length, 2, 'and asked again after negativeCacheTTL')
})

test('TokenReview: audiences are asked for and must come back', async (t) => {
  api.reviewFailure = 'none'
  api.reviews.length = 0
  api.reviewedTokens.set('aud-ok', { username: 'a', audiences: ['pfgate'] })
  api.reviewedTokens.set('aud-other', { username: 'b', audiences: ['vault'] })
  const src = tokenSource({ audiences: ['pfgate'] })
  t.after(() => src.close())
  assert.equal((await src.authenticate('aud-ok')).user, 'a')
  const err = await rejection(src.authenticate('aud-other'))
  assert.match(err.reason ?? '', /audiences are invalid/)
  assert.deepEqual(api.reviews[0]?.spec, { token: 'aud-ok', audiences: ['pfgate'] })
})

test('TokenReview: the API server failing, hanging or refusing the gateway fails closed', async (t) => {
  api.reviewedTokens.set('good', { username: 'g' })
  const cases: [string, () => void, RegExp][] = [
    ['500', () => (api.reviewFailure = 'error'), /500 Internal error occurred/],
    ['hung', () => (api.reviewFailure = 'hang'), /no answer within 1000 ms/],
    [
      '403 to the gateway',
      () => {
        api.reviewFailure = 'none'
        api.forbidden.add('tokenreviews')
      },
      /403 .*cannot create resource "tokenreviews".*rbac\.yaml/,
    ],
  ]
  for (const [what, arrange, reason] of cases) {
    arrange()
    const src = tokenSource()
    const err = await rejection(src.authenticate('good'))
    src.close()
    assert.equal(err.code, 'PFG_ERR_AUTH_UNAVAILABLE', what)
    assert.match(err.message, /^authentication is unavailable \(ref [0-9a-f]{8}\)$/, what)
    assert.match(err.reason ?? '', reason, what)
    assert.doesNotMatch(`${err.message} ${err.reason ?? ''}`, /good/, 'the token is not in it')
  }
  api.forbidden.delete('tokenreviews')
  api.reviewFailure = 'none'
  // Down with no answer, then back: nothing was cached from the failure.
  const src = tokenSource()
  t.after(() => src.close())
  assert.equal((await src.authenticate('good')).user, 'g')
  // Unreachable API server.
  const dead = new TokenReviewSource({
    client: new KubeReviewClient({
      credentials: { ...creds, server: 'https://127.0.0.1:1' },
      timeoutMs: 1000,
    }),
    audiences: [],
    cacheTtlMs: 1000,
    negativeCacheTtlMs: 1000,
    maxEntries: 10,
    limits,
  })
  t.after(() => dead.close())
  const err = await rejection(dead.authenticate('good'))
  assert.equal(err.code, 'PFG_ERR_AUTH_UNAVAILABLE')
  assert.match(err.reason ?? '', /ECONNREFUSED/)
})

test('TokenReview: bounded in flight and per second, nothing queued', async (t) => {
  api.reviewFailure = 'hang'
  api.reviews.length = 0
  const src = tokenSource({ limits: { maxInFlight: 3, perSecond: 0.01, burst: 5 } })
  t.after(() => src.close())
  const hung = ['h1', 'h2', 'h3'].map((tok) => rejection(src.authenticate(tok)))
  const over = await rejection(src.authenticate('h4'))
  assert.equal(over.code, 'PFG_ERR_AUTH_UNAVAILABLE')
  assert.match(over.reason ?? '', /too many token reviews in flight \(3\)/)
  await Promise.all(hung)
  api.reviewFailure = 'error'
  await rejection(src.authenticate('r1'))
  await rejection(src.authenticate('r2'))
  const rate = await rejection(src.authenticate('r3'))
  assert.match(rate.reason ?? '', /over 0.01 per second/)
  assert.equal(api.reviews.length, 5, 'the refused ones never reached the API server')
  api.reviewFailure = 'none'
})

test('the TTL cache is bounded and drops the least recently used', () => {
  let now = 0
  const c = new TtlCache<number>(3, () => now)
  c.set('a', 1, 100)
  c.set('b', 2, 100)
  c.set('c', 3, 100)
  assert.equal(c.get('a'), 1) // a is now the most recent
  c.set('d', 4, 100)
  assert.equal(c.size, 3)
  assert.equal(c.get('b'), undefined)
  assert.equal(c.get('a'), 1)
  now = 100
  assert.equal(c.get('a'), undefined, 'expired')
})

const alice: Identity = {
  user: 'alice',
  groups: ['dev', 'system:authenticated'],
  expiresAt: Date.now() + 3_600_000,
  source: 'oidc',
}

test('SubjectAccessReview: create pods/portforward in the namespace, cached both ways', async (t) => {
  api.reviewFailure = 'none'
  api.reviews.length = 0
  api.accessRules = [
    {
      groups: ['dev'],
      verb: 'create',
      resource: 'pods',
      subresource: 'portforward',
      namespace: 'team',
    },
    { users: ['alice'], verb: 'get', resource: 'pods', namespace: 'team', names: ['web'] },
  ]
  let now = Date.now()
  const rbac = new RbacAuthorizer({
    client: new KubeReviewClient({ credentials: creds, timeoutMs: 1000 }),
    cacheTtlMs: 60_000,
    negativeCacheTtlMs: 5_000,
    maxEntries: 100,
    limits,
    now: () => now,
  })
  t.after(() => rbac.close())
  const yes = await rbac.portForward(alice, 'team', 'web')
  assert.equal(yes.allowed, true)
  assert.match(yes.reason, /RBAC: allowed/)
  assert.deepEqual(api.reviews[0], {
    kind: 'SubjectAccessReview',
    spec: {
      resourceAttributes: {
        namespace: 'team',
        verb: 'create',
        group: '',
        resource: 'pods',
        subresource: 'portforward',
        name: 'web',
      },
      user: 'alice',
      groups: ['dev', 'system:authenticated'],
    },
  })
  assert.equal((await rbac.portForward(alice, 'other', 'web')).allowed, false)
  assert.equal((await rbac.getPod(alice, 'team', 'web')).allowed, true)
  assert.equal((await rbac.getPod(alice, 'team', 'db')).allowed, false)
  assert.equal(api.reviews.length, 4)
  await Promise.all([
    rbac.portForward(alice, 'team', 'web'),
    rbac.portForward(alice, 'other', 'web'),
  ])
  assert.equal(api.reviews.length, 4, 'both answers cached')
  now += 6000
  await rbac.portForward(alice, 'team', 'web')
  await rbac.portForward(alice, 'other', 'web')
  assert.equal(api.reviews.length, 5, 'the denial expired first (negativeCacheTTL)')
  // TokenReview's uid and extra are passed on.
  await rbac.portForward({ ...alice, uid: 'u-1', extra: { scopes: ['a'] } }, 'team', 'web')
  assert.deepEqual(
    [api.reviews.at(-1)?.spec.uid, api.reviews.at(-1)?.spec.extra],
    ['u-1', { scopes: ['a'] }],
  )
})

test('SubjectAccessReview: the API server down fails closed with a clear reason', async (t) => {
  api.reviewFailure = 'error'
  const rbac = new RbacAuthorizer({
    client: new KubeReviewClient({ credentials: creds, timeoutMs: 1000 }),
    cacheTtlMs: 60_000,
    negativeCacheTtlMs: 5_000,
    maxEntries: 100,
    limits,
  })
  t.after(() => rbac.close())
  const err = await rejection(rbac.portForward(alice, 'team', 'web'))
  assert.equal(err.code, 'PFG_ERR_AUTH_UNAVAILABLE')
  assert.match(err.message, /^authorization is unavailable \(ref [0-9a-f]{8}\)$/)
  assert.match(err.reason ?? '', /^SubjectAccessReview: POST .*: 500 Internal error/)
  api.reviewFailure = 'none'
  assert.equal((await rbac.portForward(alice, 'team', 'web')).allowed, true, 'not cached')
})
