/**
 * `pfgate login` against a real OpenID provider (oidc-provider on loopback): the device
 * flow (the code confirmed through the provider's own device pages and sign-in form), and
 * `pfgate login get-token` as an exec plugin: the cached token, a refresh with the refresh
 * token once it is close to expiry, "log in again" when it cannot refresh and may not
 * prompt, the cache file readable by its user only.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { decodeJwt } from 'jose'
import { deviceLogin, discover } from '../../src/cli/login/oidc.js'
import type { LoginSettings } from '../../src/cli/login/oidc.js'
import { cacheFile, writeCache } from '../../src/cli/login/token-cache.js'
import { runCliToEnd } from '../helpers/cli.js'
import { TEST_CLIENT_ID, TestBrowser, TestOidcProvider } from '../helpers/oidc-provider.js'

let idp: TestOidcProvider
let dir: string
let ca: string

before(async () => {
  idp = await TestOidcProvider.start({ idTokenTtlS: 300, groups: { frank: ['ops'] } })
  dir = mkdtempSync(join(tmpdir(), 'pfgate-login-'))
  ca = idp.writeCa(join(dir, 'idp-ca.pem'))
})
after(async () => {
  await idp.close()
  rmSync(dir, { recursive: true, force: true })
})

test('the device flow: a code confirmed on another device yields tokens', async (t) => {
  const s: LoginSettings = {
    issuer: idp.issuer,
    clientId: TEST_CLIENT_ID,
    scopes: ['groups'],
    caFile: ca,
  }
  const config = await discover(s)
  const browser = new TestBrowser(idp)
  t.after(() => browser.close())
  let confirmed: Promise<string> | undefined
  const tokens = await deviceLogin(config, s, {
    show(uri, code) {
      confirmed = browser.confirmDevice(uri, code, 'frank')
    },
  })
  assert.match((await confirmed) ?? '', /Sign-in Success|success/i)
  const claims = decodeJwt(tokens.idToken)
  assert.equal(claims.sub, 'frank')
  assert.deepEqual(claims.groups, ['ops'])
  assert.ok(tokens.refreshToken !== undefined)
})

test('get-token: cached, refreshed near expiry, "log in again" when it cannot', async () => {
  const cache = join(dir, 'cache')
  const env = {
    PFGATE_CACHE_DIR: cache,
    KUBERNETES_EXEC_INFO: JSON.stringify({
      kind: 'ExecCredential',
      apiVersion: 'client.authentication.k8s.io/v1beta1',
      spec: { interactive: false },
    }),
  }
  const flags = ['--issuer', idp.issuer, '--client-id', TEST_CLIENT_ID, '--ca-file', ca]
  const none = await runCliToEnd(['login', 'get-token', ...flags], env)
  assert.equal(none.code, 1)
  assert.match(none.stderr, /not logged in; log in again: pfgate login --issuer https:/)

  // A login's tokens, as `pfgate login` caches them (the device flow, driven here).
  const s: LoginSettings = { issuer: idp.issuer, clientId: TEST_CLIENT_ID, scopes: [], caFile: ca }
  const browser = new TestBrowser(idp)
  let confirmed: Promise<string> | undefined
  const tokens = await deviceLogin(await discover(s), s, {
    show: (uri, code) => {
      confirmed = browser.confirmDevice(uri, code, 'grace')
    },
  })
  await confirmed
  await browser.close()
  const file = cacheFile(env, s)
  writeCache(file, tokens)
  assert.equal(statSync(file).mode & 0o777, 0o600)
  assert.equal(statSync(cache).mode & 0o777, 0o700)

  // 5 min tokens: more than a minute left, so the cached one is printed as it is.
  const first = await runCliToEnd(['login', 'get-token', ...flags], env)
  assert.equal(first.code, 0, first.stderr)
  const cred = JSON.parse(first.stdout) as {
    apiVersion: string
    kind: string
    status: { token: string; expirationTimestamp: string }
  }
  assert.equal(cred.apiVersion, 'client.authentication.k8s.io/v1beta1', 'the version asked for')
  assert.equal(cred.kind, 'ExecCredential')
  assert.equal(cred.status.token, tokens.idToken)
  // Close to expiry: refreshed with the refresh token (a new ID token).
  writeCache(file, { ...tokens, expiresAt: Date.now() + 30_000 })
  const second = await runCliToEnd(['login', 'get-token', ...flags], env)
  assert.equal(second.code, 0, second.stderr)
  const refreshed = (JSON.parse(second.stdout) as typeof cred).status.token
  assert.notEqual(refreshed, tokens.idToken)
  assert.equal(decodeJwt(refreshed).sub, 'grace')
  // A refresh token the provider no longer knows, not interactive: log in again.
  writeCache(file, { ...tokens, expiresAt: Date.now() - 1000, refreshToken: 'revoked' })
  const third = await runCliToEnd(['login', 'get-token', ...flags], env)
  assert.equal(third.code, 1)
  assert.match(third.stderr, /refreshing the login failed/)
  assert.match(third.stderr, /the login expired at .*; log in again/)
  assert.ok(
    readdirSync(cache).every((f) => f.endsWith('.json')),
    'no lock or temporary file is left behind',
  )
})
