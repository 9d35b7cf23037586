/**
 * `pfgate token` as a real process: the development label, the claims it mints (subject,
 * groups, lifetime, not-before), verification by the gateway's own authenticator with
 * the dev cluster's JWKS, and its errors.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { base64url } from 'jose'
import { runCliToEnd } from '../helpers/cli.js'
import { DEV_AUDIENCE, DEV_ISSUER, createSigningKey } from '../../src/dev/token.js'
import { Authenticator } from '../../src/gateway/auth/authenticator.js'
import { silentLogger } from '../../src/shared/log.js'

function claims(token: string): Record<string, unknown> {
  return JSON.parse(
    new TextDecoder().decode(base64url.decode(token.split('.')[1] as string)),
  ) as Record<string, unknown>
}

function devAuthenticator(dir: string): Authenticator {
  return new Authenticator(
    {
      issuer: DEV_ISSUER,
      audience: [DEV_AUDIENCE],
      jwks: { file: join(dir, 'jwks.json') },
      algorithms: ['ES256', 'RS256', 'EdDSA'],
      clockToleranceS: 60,
      usernameClaim: 'sub',
      usernamePrefix: '',
      groupsClaim: 'groups',
      groupsPrefix: '',
    },
    silentLogger(),
  )
}

test('mints a labelled development token the dev gateway accepts', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pfgate-token-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  await createSigningKey(dir)
  const r = await runCliToEnd([
    'token',
    '--dir',
    dir,
    '--user',
    'alice',
    '-g',
    'pfgate:developers',
    '-g',
    'ops',
    '--ttl',
    '15m',
  ])
  assert.equal(r.code, 0, r.stderr)
  assert.match(
    r.stderr,
    /^pfgate token: DEVELOPMENT token for the dev cluster only \(user "alice", groups \[pfgate:developers, ops\], expires \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)\n$/,
  )
  const token = r.stdout.trim()
  assert.equal(r.stdout, `${token}\n`, 'stdout is the token alone (for $(pfgate token))')
  const c = claims(token)
  assert.deepEqual(
    [c.sub, c.groups, c.iss, c.aud],
    ['alice', ['pfgate:developers', 'ops'], DEV_ISSUER, DEV_AUDIENCE],
  )
  assert.equal((c.exp as number) - (c.iat as number), 900)
  const header = JSON.parse(
    new TextDecoder().decode(base64url.decode(token.split('.')[0] as string)),
  ) as {
    alg: string
    kid: string
  }
  assert.equal(header.alg, 'ES256')
  assert.match(header.kid, /^dev-/)
  const auth = devAuthenticator(dir)
  t.after(() => auth.close())
  const id = await auth.authenticate(`Bearer ${token}`)
  assert.deepEqual(
    [id.user, id.groups],
    ['alice', ['pfgate:developers', 'ops', 'system:authenticated']],
  )

  // Defaults: user dev, no groups, one hour. --not-before sets nbf.
  const d = await runCliToEnd(['token', '--dir', dir, '--not-before', '2m'])
  assert.equal(d.code, 0, d.stderr)
  const dc = claims(d.stdout.trim())
  assert.deepEqual([dc.sub, dc.groups], ['dev', []])
  assert.equal((dc.exp as number) - (dc.iat as number), 3600)
  assert.equal((dc.nbf as number) - (dc.iat as number), 120)
  await assert.rejects(
    auth.authenticate(`Bearer ${d.stdout.trim()}`),
    /Unauthorized/,
    'not yet valid',
  )
})

test('help says development only; errors have clear exit codes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pfgate-token-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const help = await runCliToEnd(['token', '--help'])
  assert.equal(help.code, 0)
  assert.match(help.stdout, /DEVELOPMENT ONLY/)
  assert.match(help.stdout, /identity provider/)

  const noKey = await runCliToEnd(['token', '--dir', dir])
  assert.equal(noKey.code, 1)
  assert.match(noKey.stderr, /signing-key\.jwk not found: run 'pfgate dev'/)
  assert.equal(noKey.stdout, '')

  await createSigningKey(dir)
  for (const args of [
    ['--ttl', 'forever'],
    ['--ttl', '0s'],
    ['--ttl', '721h'],
    ['--not-before', 'soon'],
    ['--user', ''],
    ['--bogus'],
  ]) {
    const r = await runCliToEnd(['token', '--dir', dir, ...args])
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, /^error: /)
    assert.equal(r.stdout, '')
  }
  // A bare number is not a duration here (it would read as milliseconds): a unit is required.
  for (const ttl of ['30', '3600', '1.5']) {
    const r = await runCliToEnd(['token', '--dir', dir, '--ttl', ttl])
    assert.equal(r.code, 2, `--ttl ${ttl}: ${r.stderr}`)
    assert.match(r.stderr, /give a number with a unit \(30s, 15m, 8h\)/)
    assert.doesNotMatch(r.stderr, /milliseconds/)
    assert.equal(r.stdout, '')
  }
  const bare = await runCliToEnd(['token', '--dir', dir, '--not-before', '120'])
  assert.equal(bare.code, 2)
  assert.match(bare.stderr, /--not-before "120": give a number with a unit/)
})
