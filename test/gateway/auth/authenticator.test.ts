/**
 * The authenticator against real keys and real tokens (jose), a real JWKS file and a real
 * JWKS HTTP server: every token attack is refused with a reason-free 401 whose ref points
 * at a log line with the reason; claims mapping; clock tolerance; the JWKS URL cache,
 * refresh on an unknown kid, and its timeout.
 */
import { after, before, describe, test } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createPublicKey, randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { SignJWT, base64url, exportJWK, generateKeyPair } from 'jose'
import type { CryptoKey, JWK, JWTPayload } from 'jose'
import {
  Authenticator,
  AUTHENTICATED_GROUP,
  MAX_CLAIM_LENGTH,
} from '../../../src/gateway/auth/authenticator.js'
import type { GatewayConfig } from '../../../src/gateway/config.js'
import { isAppError } from '../../../src/shared/errors.js'
import { captureLogger, defer, tempDir } from '../audit/helpers.js'

const ISS = 'https://issuer.test'
const AUD = 'pfgate'

interface KeyPair {
  kid: string
  alg: 'ES256' | 'RS256'
  privateKey: CryptoKey
  publicJwk: JWK
}

async function keyPair(kid: string, alg: 'ES256' | 'RS256'): Promise<KeyPair> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  return { kid, alg, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg } }
}

let es: KeyPair
let rs: KeyPair
/** A key that is not in any JWKS the gateway reads. */
let stranger: KeyPair
/** A symmetric key, present in the JWKS file: the authenticator must ignore it. */
const octSecret = randomBytes(32)

const now = (): number => Math.floor(Date.now() / 1000)

async function sign(
  key: KeyPair,
  claims: JWTPayload = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const payload: JWTPayload = {
    iss: ISS,
    aud: AUD,
    sub: 'alice',
    groups: ['dev'],
    iat: now(),
    exp: now() + 600,
    ...claims,
  }
  for (const [k, v] of Object.entries(payload)) if (v === undefined) delete payload[k]
  return new SignJWT(payload)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...header })
    .sign(key.privateKey)
}

function authConfig(
  jwks: GatewayConfig['auth']['jwks'],
  over: Partial<GatewayConfig['auth']> = {},
): GatewayConfig['auth'] {
  return {
    issuer: ISS,
    audience: [AUD],
    jwks,
    algorithms: ['ES256', 'RS256'],
    clockToleranceS: 60,
    usernameClaim: 'sub',
    usernamePrefix: '',
    groupsClaim: 'groups',
    groupsPrefix: '',
    ...over,
  }
}

let jwksFile: string

before(async () => {
  es = await keyPair('k1', 'ES256')
  rs = await keyPair('r1', 'RS256')
  stranger = await keyPair('k9', 'ES256')
})

async function setup(
  t: TestContext,
  over: Partial<GatewayConfig['auth']> = {},
  clock?: () => number,
): Promise<{ auth: Authenticator; log: () => string }> {
  const dir = await tempDir(t, 'pfgate-authn-')
  jwksFile = join(dir, 'jwks.json')
  const keys = [
    es.publicJwk,
    rs.publicJwk,
    { kty: 'oct', kid: 'sym', alg: 'HS256', k: base64url.encode(octSecret) },
  ]
  writeFileSync(jwksFile, JSON.stringify({ keys }))
  const { logger, text } = captureLogger()
  const auth = new Authenticator(authConfig({ file: jwksFile }, over), logger, clock)
  defer(t, () => auth.close())
  return { auth, log: text }
}

/** Asserts a reason-free 401 that carries its ref and the reason (never logged here). */
async function assertRejected(
  auth: Authenticator,
  log: () => string,
  header: string | string[] | undefined,
  reason: RegExp,
  what: string,
): Promise<void> {
  const err = await auth.authenticate(header).then(
    () => assert.fail(`${what}: accepted`),
    (e: unknown) => e,
  )
  assert.ok(isAppError(err), `${what}: ${String(err)}`)
  assert.equal(err.statusCode, 401, what)
  if (err.code === 'PFG_ERR_AUTH_MISSING') {
    assert.equal(err.message, 'Unauthorized', what)
    assert.match('no bearer token', reason, what)
    return
  }
  assert.equal(err.code, 'PFG_ERR_AUTH_INVALID', what)
  const m = /^Unauthorized \(ref ([0-9a-f]{8})\)$/.exec(err.message)
  assert.ok(
    m !== null,
    `${what}: the client message says only "Unauthorized (ref …)": ${err.message}`,
  )
  // The reason rides on the error with the ref, for whoever records the refusal to log
  // (within the denial flood budget; the e2e tests follow a ref to that log line).
  const e = err as typeof err & { ref?: string; reason?: string }
  assert.equal(e.ref, m[1], `${what}: the error carries its ref`)
  assert.match(e.reason ?? '', reason, `${what}: the reason`)
  const token = typeof header === 'string' ? header.replace(/^Bearer\s+/i, '') : ''
  if (token.length > 8) assert.ok(!log().includes(token), `${what}: the token is never logged`)
}

describe('valid tokens and claims mapping', () => {
  test('an ES256 and an RS256 token are accepted; groups get system:authenticated', async (t) => {
    const { auth } = await setup(t)
    for (const key of [es, rs]) {
      const id = await auth.authenticate(`Bearer ${await sign(key)}`)
      assert.equal(id.user, 'alice')
      assert.deepEqual(id.groups, ['dev', AUTHENTICATED_GROUP])
      assert.ok(id.expiresAt > Date.now() + 590_000)
    }
  })

  test('username and groups claims with prefixes (kube-apiserver --oidc-*-claim/-prefix)', async (t) => {
    const { auth, log } = await setup(t, {
      usernameClaim: 'email',
      usernamePrefix: 'oidc:',
      groupsClaim: 'roles',
      groupsPrefix: 'oidc:',
    })
    const id = await auth.authenticate(
      `Bearer ${await sign(es, { email: 'alice@example.com', roles: ['dev', 7, '', 'ops'] })}`,
    )
    assert.equal(id.user, 'oidc:alice@example.com')
    assert.deepEqual(id.groups, ['oidc:dev', 'oidc:ops', AUTHENTICATED_GROUP])
    const single = await auth.authenticate(
      `Bearer ${await sign(es, { email: 'bob@example.com', roles: 'admins' })}`,
    )
    assert.deepEqual(single.groups, ['oidc:admins', AUTHENTICATED_GROUP])
    // `sub` is not the username claim here: a token without `email` names no one.
    await assertRejected(
      auth,
      log,
      `Bearer ${await sign(es, {})}`,
      /username claim "email"/,
      'no username claim',
    )
  })

  test('a username or group that would forge output (controls, bidi, huge) refuses the token', async (t) => {
    const { auth, log } = await setup(t)
    const bad: [JWTPayload, RegExp, string][] = [
      [{ sub: 'eve\u001b[8m' }, /username claim "sub"/, 'ESC in sub'],
      [{ sub: 'eve\n2030-01-01T00:00:00.000Z  stream.closed  root' }, /username/, 'newline'],
      [{ sub: 'x\u202eevil' }, /username/, 'bidi override in sub'],
      [{ sub: 'a'.repeat(MAX_CLAIM_LENGTH + 1) }, /username/, 'a huge sub'],
      [{ groups: ['dev', 'ops\u0007'] }, /groups claim "groups"/, 'BEL in a group'],
      [{ groups: Array.from({ length: 1025 }, (_, i) => `g${i}`) }, /groups/, 'too many groups'],
    ]
    for (const [claims, reason, what] of bad)
      await assertRejected(auth, log, `Bearer ${await sign(es, claims)}`, reason, what)
    // What identity providers do issue is fine: a backslash, e-mail, non-Latin letters.
    const ok = await auth.authenticate(
      `Bearer ${await sign(es, { sub: 'CORP\\zoë', groups: ['開発', 'a'.repeat(MAX_CLAIM_LENGTH)] })}`,
    )
    assert.equal(ok.user, 'CORP\\zoë')
  })
})

describe('token attacks: each is a 401 that does not say why', () => {
  test('alg none, HMAC with the public key, algorithm not allowed, foreign and unknown keys', async (t) => {
    const { auth, log } = await setup(t)
    const good = await sign(es)
    const [h, p, sig] = good.split('.') as [string, string, string]
    const enc = (o: object): string => base64url.encode(JSON.stringify(o))
    const payload = JSON.parse(new TextDecoder().decode(base64url.decode(p))) as JWTPayload
    const pem = createPublicKey({ key: es.publicJwk as never, format: 'jwk' })
      .export({ type: 'spki', format: 'pem' })
      .toString()
    const hmac = (secret: Uint8Array, kid: string): Promise<string> =>
      new SignJWT(payload).setProtectedHeader({ alg: 'HS256', kid, typ: 'JWT' }).sign(secret)
    const cases: [string, string, RegExp][] = [
      [
        'alg none, no signature',
        `${enc({ alg: 'none', typ: 'JWT' })}.${p}.`,
        /ALG_NOT_ALLOWED|JWS/,
      ],
      [
        'alg none, a real signature kept',
        `${enc({ alg: 'none', kid: 'k1' })}.${p}.${sig}`,
        /ALG|JWS/,
      ],
      ['alg NONE (case games)', `${enc({ alg: 'NONE' })}.${p}.`, /ALG|JWS/],
      [
        'HS256 signed with the public key PEM',
        await hmac(new TextEncoder().encode(pem), 'k1'),
        /ALG_NOT_ALLOWED/,
      ],
      [
        'HS256 signed with the public JWK text',
        await hmac(new TextEncoder().encode(JSON.stringify(es.publicJwk)), 'k1'),
        /ALG_NOT_ALLOWED/,
      ],
      [
        'HS256 signed with the symmetric key found in the JWKS',
        await hmac(octSecret, 'sym'),
        /ALG_NOT_ALLOWED/,
      ],
      ['signed by a key not in the JWKS (unknown kid)', await sign(stranger), /NO_MATCHING_KEY/],
      [
        'signed by another key under a known kid',
        await sign({ ...stranger, kid: 'k1' }),
        /SIGNATURE_VERIFICATION_FAILED/,
      ],
      [
        'header swapped to another key',
        `${enc({ ...(JSON.parse(new TextDecoder().decode(base64url.decode(h))) as object), kid: 'r1', alg: 'RS256' })}.${p}.${sig}`,
        /SIGNATURE|JWS|INVALID/,
      ],
    ]
    for (const [what, token, reason] of cases) {
      await assertRejected(auth, log, `Bearer ${token}`, reason, what)
    }
    // An allowed-by-the-JWKS algorithm that this config does not allow.
    const esOnly = await setup(t, { algorithms: ['ES256'] })
    await assertRejected(
      esOnly.auth,
      esOnly.log,
      `Bearer ${await sign(rs)}`,
      /ALG_NOT_ALLOWED/,
      'RS256 when only ES256 is allowed',
    )
  })

  test('tampered payloads and signatures', async (t) => {
    const { auth, log } = await setup(t)
    const good = await sign(es)
    const [h, p, sig] = good.split('.') as [string, string, string]
    const payload = JSON.parse(new TextDecoder().decode(base64url.decode(p))) as JWTPayload
    const enc = (o: object): string => base64url.encode(JSON.stringify(o))
    const flipped = Buffer.from(base64url.decode(sig))
    flipped[5] = (flipped[5] as number) ^ 0x01
    const cases: [string, string][] = [
      ['sub changed to an admin', `${h}.${enc({ ...payload, sub: 'root' })}.${sig}`],
      ['groups widened', `${h}.${enc({ ...payload, groups: ['pfgate:admins'] })}.${sig}`],
      ['exp extended', `${h}.${enc({ ...payload, exp: now() + 86_400 })}.${sig}`],
      ['one signature bit flipped', `${h}.${p}.${base64url.encode(flipped)}`],
      ['signature removed', `${h}.${p}.`],
    ]
    for (const [what, token] of cases) {
      await assertRejected(auth, log, `Bearer ${token}`, /SIGNATURE_VERIFICATION_FAILED|JWS/, what)
    }
  })

  test('expired, not yet valid, wrong or missing iss/aud/exp', async (t) => {
    const { auth, log } = await setup(t)
    const cases: [string, JWTPayload, RegExp][] = [
      ['expired 2 minutes ago (tolerance 60 s)', { exp: now() - 120 }, /ERR_JWT_EXPIRED/],
      ['not valid for 2 more minutes', { nbf: now() + 120 }, /claim "nbf"/],
      ['wrong issuer', { iss: 'https://evil.test' }, /claim "iss"/],
      ['wrong audience', { aud: 'kubernetes' }, /claim "aud"/],
      ['no issuer', { iss: undefined }, /claim "iss"/],
      ['no audience', { aud: undefined }, /claim "aud"/],
      ['no expiry', { exp: undefined }, /claim "exp"/],
      ['exp not a number', { exp: 'tomorrow' as never }, /claim "exp"/],
    ]
    for (const [what, claims, reason] of cases) {
      await assertRejected(auth, log, `Bearer ${await sign(es, claims)}`, reason, what)
    }
  })

  test('garbage and malformed headers', async (t) => {
    const { auth, log } = await setup(t)
    const good = await sign(es)
    const cases: [string, string | string[] | undefined, RegExp][] = [
      ['no header', undefined, /no bearer token/],
      ['empty header', '', /no bearer token/],
      ['Bearer alone', 'Bearer', /no bearer token/],
      ['Basic credentials', 'Basic YWxpY2U6c2VjcmV0', /no bearer token/],
      ['two headers', [`Bearer ${good}`, `Bearer ${good}`], /no bearer token/],
      ['not a JWT', 'Bearer not-a-jwt', /ERR_JWS_INVALID|invalid/i],
      ['three dots of nothing', 'Bearer a.b.c', /ERR_JWS_INVALID|invalid/i],
      ['a truncated token', `Bearer ${good.slice(0, 40)}`, /ERR_JWS_INVALID|invalid/i],
      ['binary noise', `Bearer ${randomBytes(60).toString('base64url')}`, /ERR_JWS_INVALID/],
      ['a 20 KiB token', `Bearer ${'A'.repeat(20_000)}.e30.x`, /token too large/],
    ]
    for (const [what, header, reason] of cases) {
      await assertRejected(auth, log, header, reason, what)
    }
  })
})

describe('clock tolerance and token lifetime', () => {
  test('60 s tolerance by default on exp and nbf; a cached identity expires with its token', async (t) => {
    let clock = Date.now()
    const { auth, log } = await setup(t, {}, () => clock)
    const t0 = Math.floor(clock / 1000)
    // Within the tolerance: accepted.
    await auth.authenticate(`Bearer ${await sign(es, { exp: t0 - 30 })}`)
    await auth.authenticate(`Bearer ${await sign(es, { nbf: t0 + 30 })}`)
    // A token valid now, verified (and cached) now, is refused once its exp+tolerance passed.
    const token = await sign(es, { exp: t0 + 10 })
    await auth.authenticate(`Bearer ${token}`)
    clock += 72_000 // past exp (10 s) + tolerance (60 s)
    await assertRejected(auth, log, `Bearer ${token}`, /ERR_JWT_EXPIRED/, 'cached, then expired')
  })

  test('a configured tolerance of 0 refuses a token one second past exp', async (t) => {
    const { auth, log } = await setup(t, { clockToleranceS: 0 })
    await assertRejected(
      auth,
      log,
      `Bearer ${await sign(es, { exp: now() - 1 })}`,
      /ERR_JWT_EXPIRED/,
      'expired 1 s ago',
    )
  })
})

describe('JWKS URL', () => {
  let server: Server
  let url: string
  let keys: JWK[] = []
  let fetches = 0
  let hang = false

  before(async () => {
    server = createServer((_req, res) => {
      if (hang) return // never answers: the fetch must time out
      fetches++
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ keys }))
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`
  })
  after(async () => {
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
  })

  function remote(
    t: TestContext,
    over: { timeoutMs?: number; minRefreshIntervalMs?: number } = {},
  ): { auth: Authenticator; log: () => string } {
    const { logger, text } = captureLogger()
    const auth = new Authenticator(
      authConfig({
        url,
        timeoutMs: over.timeoutMs ?? 2000,
        cacheMaxAgeMs: 600_000,
        minRefreshIntervalMs: over.minRefreshIntervalMs ?? 200,
      }),
      logger,
    )
    t.after(() => auth.close())
    return { auth, log: text }
  }

  test('keys are fetched once and cached; an unknown kid refetches, at most once per interval', async (t) => {
    keys = [es.publicJwk]
    fetches = 0
    hang = false
    // An interval long enough that a loaded machine cannot let it pass during the 20 verifies.
    const { auth, log } = remote(t, { minRefreshIntervalMs: 3000 })
    for (let i = 0; i < 20; i++) {
      await auth.authenticate(`Bearer ${await sign(es, { sub: `user-${i}` })}`)
    }
    assert.equal(fetches, 1, '20 tokens, one JWKS fetch')
    // The IdP rotates: a new key appears. Within the refresh interval an unknown kid is
    // refused without a fetch (forged kids cannot hammer the IdP)…
    const next = await keyPair('k2', 'ES256')
    keys = [es.publicJwk, next.publicJwk]
    await assertRejected(auth, log, `Bearer ${await sign(next)}`, /NO_MATCHING_KEY/, 'too soon')
    assert.equal(fetches, 1)
    // …after it, the unknown kid refetches and the new key verifies.
    await new Promise((r) => setTimeout(r, 3100))
    const id = await auth.authenticate(`Bearer ${await sign(next, { sub: 'carol' })}`)
    assert.equal(id.user, 'carol')
    assert.equal(fetches, 2)
    // A kid the IdP never published: refused, one more fetch at most.
    await new Promise((r) => setTimeout(r, 3100))
    await assertRejected(auth, log, `Bearer ${await sign(stranger)}`, /NO_MATCHING_KEY/, 'never')
    assert.ok(fetches <= 3)
  })

  test('a JWKS endpoint that does not answer fails the token within the timeout (401, no hang)', async (t) => {
    keys = [es.publicJwk]
    hang = true
    const { auth, log } = remote(t, { timeoutMs: 300 })
    const started = Date.now()
    await assertRejected(auth, log, `Bearer ${await sign(es)}`, /ERR_JWKS_TIMEOUT/, 'hung IdP')
    const took = Date.now() - started
    assert.ok(took >= 250 && took < 2000, `refused after ${took} ms`)
    hang = false
  })
})
