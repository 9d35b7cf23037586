/**
 * The gateway's OIDC discovery source against a real OpenID provider (oidc-provider on
 * loopback HTTPS): discovery from the issuer URL alone, ID tokens from a real login
 * (authorization code + PKCE, driven through the provider's own sign-in form), the issuer
 * checked exactly, the audience, key rotation followed, the provider down at start.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { decodeProtectedHeader } from 'jose'
import { Authenticator } from '../../../src/gateway/auth/authenticator.js'
import { OidcIssuerSource } from '../../../src/gateway/auth/oidc-discovery.js'
import type { OidcIssuerOptions } from '../../../src/gateway/auth/oidc-discovery.js'
import { browserLogin, discover } from '../../../src/cli/login/oidc.js'
import type { LoginSettings } from '../../../src/cli/login/oidc.js'
import type { Logger } from '../../../src/shared/log.js'
import { closedPort } from '../../helpers/kube-clients.js'
import { TEST_CLIENT_ID, TestBrowser, TestOidcProvider } from '../../helpers/oidc-provider.js'

let idp: TestOidcProvider
let dir: string
let ca: string

const silent = {
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  debug: () => undefined,
} as unknown as Logger

before(async () => {
  idp = await TestOidcProvider.start({ idTokenTtlS: 60, groups: { alice: ['team-a', 'dev'] } })
  dir = mkdtempSync(join(tmpdir(), 'pfgate-oidc-'))
  ca = idp.writeCa(join(dir, 'idp-ca.pem'))
})
after(async () => {
  await idp.close()
  rmSync(dir, { recursive: true, force: true })
})

/** Logs in as `who` the way pfgate login does, the browser played by the test. */
async function login(who: string): Promise<string> {
  const s: LoginSettings = {
    issuer: idp.issuer,
    clientId: TEST_CLIENT_ID,
    scopes: ['groups'],
    caFile: ca,
  }
  const config = await discover(s)
  const browser = new TestBrowser(idp)
  try {
    const tokens = await browserLogin(config, s, {
      open: (url) => void browser.signIn(url, who),
      timeoutMs: 20_000,
    })
    return tokens.idToken
  } finally {
    await browser.close()
  }
}

function options(extra: Partial<OidcIssuerOptions> = {}): OidcIssuerOptions {
  return {
    issuer: idp.issuer,
    audience: [TEST_CLIENT_ID],
    algorithms: ['ES256', 'RS256'],
    clockToleranceS: 5,
    caFile: ca,
    timeoutMs: 2000,
    cacheMaxAgeMs: 600_000,
    minRefreshIntervalMs: 0,
    usernameClaim: 'sub',
    usernamePrefix: 'oidc:',
    groupsClaim: 'groups',
    groupsPrefix: 'oidc:',
    ...extra,
  }
}

function authenticator(...sources: OidcIssuerSource[]): Authenticator {
  return new Authenticator(undefined, silent, Date.now, { jwt: sources })
}

test('an ID token from a real login authenticates through discovery alone', async (t) => {
  const source = new OidcIssuerSource(options(), silent)
  const auth = authenticator(source)
  t.after(() => auth.close())
  const token = await login('alice')
  const id = await auth.authenticate(`Bearer ${token}`)
  assert.equal(id.user, 'oidc:alice')
  assert.deepEqual(id.groups, ['oidc:team-a', 'oidc:dev', 'system:authenticated'])
  assert.equal(id.source, 'oidc')
  assert.ok(id.expiresAt > Date.now() + 30_000)
})

test('the issuer must be exactly the one discovery names; the audience must match', async (t) => {
  const token = await login('bob')
  const slash = new OidcIssuerSource(options({ issuer: `${idp.issuer}/` }), silent)
  const a1 = authenticator(slash)
  t.after(() => a1.close())
  // The token's iss has no slash: no source claims it; the only JWT source says why.
  const err = await a1.authenticate(`Bearer ${token}`).then(
    () => assert.fail('accepted'),
    (e: Error & { code?: string; reason?: string }) => e,
  )
  assert.equal(err.code, 'PFG_ERR_AUTH_UNAVAILABLE')
  assert.match(
    err.reason ?? '',
    /names issuer "https:\/\/127\.0\.0\.1:\d+", not ".*\/" \(they must be identical\)/,
  )
  const otherAud = new OidcIssuerSource(options({ audience: ['kubernetes'] }), silent)
  const a2 = authenticator(otherAud)
  t.after(() => a2.close())
  const err2 = await a2.authenticate(`Bearer ${token}`).then(
    () => assert.fail('accepted'),
    (e: Error & { code?: string; reason?: string }) => e,
  )
  assert.equal(err2.code, 'PFG_ERR_AUTH_INVALID')
  assert.match(err2.reason ?? '', /claim "aud"/)
})

test('key rotation at the provider is followed', async (t) => {
  const source = new OidcIssuerSource(options(), silent)
  const auth = authenticator(source)
  t.after(() => auth.close())
  const before = await login('carol')
  await auth.authenticate(`Bearer ${before}`)
  const fetches = idp.jwksFetches
  await idp.rotateKeys()
  const after = await login('carol')
  assert.notEqual(decodeProtectedHeader(after).kid, decodeProtectedHeader(before).kid)
  assert.equal((await auth.authenticate(`Bearer ${after}`)).user, 'oidc:carol')
  assert.ok(idp.jwksFetches > fetches, 'the new key set was fetched')
  // The old key dropped: tokens it signed are refused once the cache is refreshed.
  await idp.rotateKeys({ dropOld: true })
  const latest = await login('carol')
  await auth.authenticate(`Bearer ${latest}`)
  const source2 = new OidcIssuerSource(options(), silent)
  const fresh = authenticator(source2)
  t.after(() => fresh.close())
  await assert.rejects(fresh.authenticate(`Bearer ${before}`), /Unauthorized/)
})

test('the provider unreachable: 503 for its tokens (fail closed), not retried in a loop', async (t) => {
  const token = await login('dave')
  const port = await closedPort()
  const source = new OidcIssuerSource(
    options({ issuer: `https://127.0.0.1:${port}`, minRefreshIntervalMs: 60_000 }),
    silent,
  )
  t.after(() => source.close())
  const err = await source.authenticate(token).then(
    () => assert.fail('accepted'),
    (e: Error & { code?: string; reason?: string }) => e,
  )
  assert.equal(err.code, 'PFG_ERR_AUTH_UNAVAILABLE')
  assert.match(err.reason ?? '', /OIDC discovery for https:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/)
  const again = await source.authenticate(token).then(
    () => assert.fail('accepted'),
    (e: Error & { reason?: string }) => e,
  )
  assert.match(again.reason ?? '', /failed recently/, 'not retried within minRefreshInterval')
})
