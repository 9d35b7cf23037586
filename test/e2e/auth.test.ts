/**
 * Identity and authorization through the real gateway (dev cluster processes): token
 * attacks get a reason-free 401 `Status` whose ref leads to the gateway's log line and
 * the audit record; an authorization matrix of users and groups over pods, ports, the
 * pod API and the admin API (default deny, 403 before any lookup); and authorization
 * evaluated once per stream — a token that expires mid-session keeps its open stream but
 * opens no new one.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createPublicKey } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import type { ClientHttp2Session } from 'node:http2'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT, base64url, importJWK } from 'jose'
import type { JWK, JWTPayload } from 'jose'
import { startTestCluster } from '../helpers/cluster.js'
import { connectGateway, h2Request } from '../helpers/h2.js'
import { eventually } from '../helpers/net.js'
import {
  openRaw,
  receivedAtLeast,
  tokenFor,
  trailPath,
  waitForRecords,
} from '../helpers/gateway.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import { DEV_AUDIENCE, DEV_ISSUER } from '../../src/dev/token.js'

let cluster: DevCluster & { cleanup(): Promise<void> }
let s: ClientHttp2Session
let work: string
let logFile: string

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'pfgate-auth-e2e-'))
  logFile = join(work, 'components.log')
  cluster = await startTestCluster(
    {
      // A short tolerance keeps the mid-session expiry test short.
      auth: { clockTolerance: '1s' },
      // Every refusal here is checked one by one: a budget above what these tests cause
      // (the flood budget itself is tested in audit-integrity.test.ts).
      audit: { denials: { burst: 1000 } },
      authorization: {
        rules: [
          { users: ['alice'], namespaces: ['default'], pods: ['echo'], ports: [5000] },
          { groups: ['web-team'], namespaces: ['default'], pods: ['w*'], ports: ['8000-8999'] },
          { groups: ['pfgate:developers'], namespaces: ['default'] },
        ],
        admins: { users: ['root'], groups: ['pfgate:admins'] },
      },
    },
    { logFile },
  )
  s = await connectGateway(cluster.gatewayUrl, cluster.dir)
  s.on('error', () => undefined)
})

after(async () => {
  s?.destroy()
  await cluster?.cleanup()
  rmSync(work, { recursive: true, force: true })
})

/** Signs with the cluster's dev key, with any claims and header (attacks included). */
async function forge(claims: JWTPayload, header: Record<string, unknown> = {}): Promise<string> {
  const jwk = JSON.parse(readFileSync(join(cluster.dir, 'signing-key.jwk'), 'utf8')) as JWK
  const now = Math.floor(Date.now() / 1000)
  const payload: JWTPayload = {
    iss: DEV_ISSUER,
    aud: DEV_AUDIENCE,
    sub: 'mallory',
    groups: ['pfgate:developers'],
    iat: now,
    exp: now + 600,
    ...claims,
  }
  return new SignJWT(payload)
    .setProtectedHeader({ alg: 'ES256', kid: jwk.kid, typ: 'JWT', ...header })
    .sign(await importJWK(jwk, 'ES256'))
}

async function forward(
  token: string | undefined,
  pod: string,
  port: number,
): Promise<{ status: number; body: string }> {
  const node = pod === 'web' ? 'node-b' : 'node-a'
  const st = await openRaw(s, { node, pod, port }, token)
  if (st.status === 200) st.req.close()
  else st.req.end()
  await st.closed
  return { status: st.status, body: st.received().toString() }
}

describe('token attacks through the gateway', () => {
  test('each is a 401 Status that says only "Unauthorized (ref …)"; the ref finds the reason', async () => {
    const good = cluster.token
    const [h, p, sig] = good.split('.') as [string, string, string]
    const enc = (o: object): string => base64url.encode(JSON.stringify(o))
    const jwks = readFileSync(join(cluster.dir, 'jwks.json'), 'utf8')
    const pub = (JSON.parse(jwks) as { keys: JWK[] }).keys[0] as JWK
    const pem = createPublicKey({ key: pub as never, format: 'jwk' })
      .export({ type: 'spki', format: 'pem' })
      .toString()
    const payload = JSON.parse(new TextDecoder().decode(base64url.decode(p))) as JWTPayload
    const hs256 = (secret: string): Promise<string> =>
      new SignJWT(payload)
        .setProtectedHeader({ alg: 'HS256', ...(pub.kid !== undefined ? { kid: pub.kid } : {}) })
        .sign(new TextEncoder().encode(secret))
    const now = Math.floor(Date.now() / 1000)
    const attacks: [string, string, RegExp][] = [
      ['alg none', `${enc({ alg: 'none', typ: 'JWT' })}.${p}.`, /ALG_NOT_ALLOWED|JWS/],
      ['HS256 keyed with the public JWKS', await hs256(jwks), /ALG_NOT_ALLOWED/],
      ['HS256 keyed with the public key PEM', await hs256(pem), /ALG_NOT_ALLOWED/],
      ['expired', await forge({ exp: now - 30 }), /ERR_JWT_EXPIRED/],
      ['not yet valid', await forge({ nbf: now + 60 }), /claim "nbf"/],
      ['wrong issuer', await forge({ iss: 'https://accounts.example.com' }), /claim "iss"/],
      ['wrong audience', await forge({ aud: 'kubernetes' }), /claim "aud"/],
      ['unknown kid', await forge({}, { kid: 'rotated-away' }), /NO_MATCHING_KEY/],
      [
        'tampered payload (admin groups)',
        `${h}.${enc({ ...payload, sub: 'mallory', groups: ['pfgate:admins'] })}.${sig}`,
        /SIGNATURE_VERIFICATION_FAILED/,
      ],
      ['garbage', 'definitely-not-a-token', /ERR_JWS_INVALID/],
    ]
    const tampered = attacks[8]?.[1] as string
    for (const [what, token, reason] of attacks) {
      const r = await forward(token, 'echo', 5000)
      assert.equal(r.status, 401, what)
      const status = JSON.parse(r.body) as { kind: string; reason: string; message: string }
      assert.deepEqual([status.kind, status.reason], ['Status', 'Unauthorized'], what)
      const ref = /^Unauthorized \(ref ([0-9a-f]{8})\)$/.exec(status.message)?.[1]
      assert.ok(ref !== undefined, `${what}: ${status.message}`)
      await eventually(
        () => readFileSync(logFile, 'utf8').includes(`"ref":"${ref}"`),
        5000,
        `${what}: the log line`,
      )
      const line = readFileSync(logFile, 'utf8')
        .split('\n')
        .find((l) => l.includes(`"ref":"${ref}"`) && l.includes('authentication failed'))
      assert.ok(line !== undefined, `${what}: no log line with ref ${ref}`)
      assert.match((JSON.parse(line) as { reason: string }).reason, reason, `${what}: the reason`)
      const rec = await waitForRecords(
        trailPath(cluster),
        (rs) => rs.find((x) => x.type === 'stream.denied' && x.ref === ref),
        `${what}: the audit record`,
      )
      assert.deepEqual([rec.reason, rec.status, rec.user], ['unauthenticated', 401, undefined])
    }
    // The API and the admin API answer the same way, with a challenge.
    for (const path of ['/api/v1/namespaces/default/pods/echo', '/admin/v1/streams']) {
      const r = await h2Request(s, {
        ':method': 'GET',
        ':path': path,
        authorization: `Bearer ${tampered}`,
      })
      assert.equal(r.status, 401)
      assert.equal(r.headers['www-authenticate'], 'Bearer realm="pfgate"')
      assert.match(r.body, /"message":"Unauthorized \(ref [0-9a-f]{8}\)"/)
    }
  })
})

describe('authorization matrix (default deny)', () => {
  test('port-forward, the pod API and the admin API, per user and group', async () => {
    const alice = await tokenFor(cluster, 'alice', [])
    const bob = await tokenFor(cluster, 'bob', ['web-team'])
    const carol = await tokenFor(cluster, 'carol', ['viewers'])
    const root = await tokenFor(cluster, 'root', [])
    const dev = cluster.token // pfgate:developers + pfgate:admins
    // [who, token, pod, port, expected port-forward status]
    const pf: [string, string | undefined, string, number, number][] = [
      ['alice', alice, 'echo', 5000, 200],
      ['alice', alice, 'echo', 6000, 403],
      ['alice', alice, 'web', 8080, 403],
      ['alice', alice, 'nosuchpod', 5000, 403], // denied before the lookup: no existence leak
      ['bob', bob, 'web', 8080, 200],
      ['bob', bob, 'web', 9000, 403],
      ['bob', bob, 'echo', 5000, 403],
      ['bob', bob, 'wnosuch', 8080, 404], // allowed by the pattern, then not found
      ['carol', carol, 'echo', 5000, 403],
      ['carol', carol, 'web', 8080, 403],
      ['root', root, 'echo', 5000, 403], // the admin role is not a port-forward grant
      ['dev', dev, 'echo', 6000, 200],
      ['dev', dev, 'web', 8080, 200],
      ['anonymous', undefined, 'echo', 5000, 401],
    ]
    let denied = 0
    for (const [who, token, pod, port, expected] of pf) {
      const r = await forward(token, pod, port)
      assert.equal(r.status, expected, `${who} → ${pod}:${port}: ${r.body}`)
      if (expected === 403) {
        denied++
        const st = JSON.parse(r.body) as { reason: string; message: string }
        assert.equal(st.reason, 'Forbidden')
        assert.match(st.message, new RegExp(`user "${who}" cannot forward to port ${port}`))
      }
    }
    const records = await waitForRecords(
      trailPath(cluster),
      (rs) => {
        const f = rs.filter((x) => x.type === 'stream.denied' && x.reason === 'forbidden')
        return f.length >= denied ? f : undefined
      },
      'the denials',
    )
    assert.equal(records.length, denied, 'one stream.denied per 403')
    for (const r of records) assert.equal(r.status, 403)

    // [who, token, path, expected]
    const api: [string, string, string, number][] = [
      ['alice', alice, '/api/v1/namespaces/default/pods/echo', 200],
      ['alice', alice, '/api/v1/namespaces/default/pods/web', 403],
      ['alice', alice, '/api/v1/namespaces/default/pods/nosuchpod', 403],
      ['bob', bob, '/api/v1/namespaces/default/pods/web', 200],
      ['bob', bob, '/api/v1/namespaces/default/pods/wnosuch', 404],
      ['carol', carol, '/api/v1/namespaces/default/pods/echo', 403],
      ['alice', alice, '/admin/v1/streams', 403],
      ['bob', bob, '/admin/v1/sessions', 403],
      ['carol', carol, '/proxy/nodes/node-a/metrics', 403],
      ['root', root, '/admin/v1/streams', 200],
      ['root', root, '/proxy/nodes/node-a/healthz', 200],
      ['dev', dev, '/admin/v1/sessions', 200],
      ['carol', carol, '/api/v1/namespaces/default/secrets', 404],
    ]
    for (const [who, token, path, expected] of api) {
      const r = await h2Request(s, {
        ':method': 'GET',
        ':path': path,
        authorization: `Bearer ${token}`,
      })
      assert.equal(r.status, expected, `${who} GET ${path}: ${r.body}`)
    }
  })
})

describe('evaluated once per stream', () => {
  test('a token that expires mid-session keeps its open stream but opens no new one', async (t) => {
    const token = await tokenFor(cluster, 'brief', ['pfgate:developers'], 3000)
    const exp = (
      JSON.parse(new TextDecoder().decode(base64url.decode(token.split('.')[1] as string))) as {
        exp: number
      }
    ).exp
    const first = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, token)
    assert.equal(first.status, 200)
    first.req.write('before expiry')
    await receivedAtLeast(first, 13)
    // Past exp + the 1 s tolerance.
    const wait = exp * 1000 + 1500 - Date.now()
    await new Promise((r) => setTimeout(r, Math.max(0, wait)))
    first.req.write('after expiry')
    await receivedAtLeast(first, 25)
    const second = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, token)
    second.req.end()
    await second.closed
    assert.equal(second.status, 401, 'no new stream with an expired token')
    first.req.end()
    const how = await first.closed
    assert.equal(how.rstCode, 0)
    assert.equal(first.received().toString(), 'before expiryafter expiry')
    const close = await waitForRecords(
      trailPath(cluster),
      (rs) => rs.find((x) => x.type === 'stream.closed' && x.streamId === first.streamId),
      'the close',
    )
    assert.deepEqual([close.endedBy, close.bytesClientToPod], ['client', 25])
    t.diagnostic(`the open stream outlived its token by ${Date.now() - exp * 1000} ms`)
  })
})
