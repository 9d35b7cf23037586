import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair, SignJWT } from 'jose'
import {
  MAX_RECORDED_USER_AGENT,
  logText,
  looksLikeSecret,
  redactText,
  REDACTED,
  sanitizeRecord,
  untrustedText,
} from '../../../src/gateway/audit/sanitize.js'
import { encodeRecordLine } from '../../../src/gateway/audit/record.js'
import type { AuditRecord } from '../../../src/protocol/audit-record.js'
import { rec } from './helpers.js'

async function realJwt(): Promise<string> {
  const { privateKey } = await generateKeyPair('ES256')
  return new SignJWT({ sub: 'alice', groups: ['dev'] })
    .setProtectedHeader({ alg: 'ES256' })
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(privateKey)
}

test('a real JWT anywhere in a record is redacted, and the field is listed', async () => {
  const jwt = await realJwt()
  const r = rec('stream.denied', {
    user: 'alice',
    userAgent: `kubectl/v1.30 token=${jwt}`,
    error: { code: 'PFG_ERR_AUTH_INVALID', message: `token ${jwt} expired` },
    groups: ['dev', jwt],
  })
  const { record, redacted } = sanitizeRecord(r)
  const line = JSON.stringify(record)
  assert.ok(!line.includes(jwt), 'the JWT must not survive')
  assert.ok(!line.includes(jwt.split('.')[2]!), 'not even its signature')
  assert.deepEqual(redacted.sort(), ['error.message', 'groups[1]', 'userAgent'])
  assert.deepEqual(record.redacted?.sort(), ['error.message', 'groups[1]', 'userAgent'])
  assert.equal(record.error?.message, `token ${REDACTED} expired`)
  assert.equal(record.user, 'alice')
  // The input record is not modified.
  assert.ok(JSON.stringify(r).includes(jwt))
  // Sanitizing is idempotent.
  assert.deepEqual(sanitizeRecord(record).record, record)
  assert.equal(sanitizeRecord(record).redacted.length, 0)
})

test('bearer credentials, authorization and cookie headers are redacted', () => {
  const cases: [string, string][] = [
    ['Authorization: Bearer abcDEF123456789', 'Authorization: [REDACTED]'],
    ['authorization=Basic dXNlcjpwYXNzd29yZA==, next', 'authorization=[REDACTED], next'],
    ['sent Bearer s3cr3t-token-value', 'sent Bearer [REDACTED]'],
    ['Basic dXNlcjpwYXNz', 'Basic [REDACTED]'],
    ['cookie: session=abc123', 'cookie: [REDACTED]'],
    ['proxy-authorization: "x y z"', 'proxy-authorization: [REDACTED]'],
    [
      'opaque AAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBB.CCCCCCCCCCCCCCCCCCCC here',
      `opaque ${REDACTED} here`,
    ],
  ]
  for (const [input, want] of cases) {
    assert.ok(looksLikeSecret(input), input)
    assert.equal(redactText(input), want)
    assert.ok(!looksLikeSecret(redactText(input)), `idempotent: ${input}`)
  }
})

test('ordinary audit values are left alone (no copy)', () => {
  const ordinary = [
    'ip-10-0-1-23.eu-west-1.compute.internal',
    'kubectl/v1.30.1 (linux/amd64) kubernetes/7c48c2b',
    'basic authentication failed',
    'Bearer realm="pfgate"',
    '2024-05-01T10:00:00.123Z',
    'web-0.web.default.svc.cluster.local',
    '[2001:db8::1]:50123',
    'system:serviceaccount:default:builder',
    'connect ECONNREFUSED 10.0.0.7:8080',
  ]
  for (const s of ordinary) assert.ok(!looksLikeSecret(s), s)
  const r: AuditRecord = rec('stream.opened', {
    node: ordinary[0],
    userAgent: ordinary[1],
    sourceAddress: ordinary[6],
    groups: ['system:authenticated', ordinary[7]!],
    error: { code: 'PFG_ERR_RELAY_CONNECT_REFUSED', message: ordinary[8]! },
  })
  const out = sanitizeRecord(r)
  assert.equal(out.record, r, 'a clean record is returned as is')
  assert.deepEqual(out.redacted, [])
})

test('fields named like secrets are dropped, whatever they hold', () => {
  const r = {
    ...rec('session.opened'),
    token: 'x',
    headers: { Authorization: 'whatever', accept: '*/*' },
    apiKey: 'k',
  } as unknown as AuditRecord
  const { record, redacted } = sanitizeRecord(r)
  assert.deepEqual(redacted.sort(), ['apiKey', 'headers.Authorization', 'token'])
  const line = encodeRecordLine(r)
  assert.ok(!line.includes('whatever'))
  assert.ok(!line.includes('"token":'))
  assert.deepEqual((record as unknown as { headers: unknown }).headers, { accept: '*/*' })
})

test('every sink encodes through the sanitizer', async () => {
  const jwt = await realJwt()
  const line = encodeRecordLine(rec('stream.failed', { reason: `bad ${jwt}` }))
  assert.ok(!line.includes(jwt))
  assert.ok(line.endsWith('\n'))
  assert.equal(line.indexOf('\n'), line.length - 1, 'one line')
})

test('a user agent is redacted first, then escaped and cut short; free text in logs too', async () => {
  const jwt = await realJwt()
  // A token past the bound: cut first, it would no longer look like one.
  const ua = `${'x'.repeat(200)} Authorization: Bearer ${jwt} \u001b[8m${'y'.repeat(5000)}`
  const { record, redacted } = sanitizeRecord(rec('stream.opened', { userAgent: ua }))
  assert.deepEqual(redacted, ['userAgent'])
  assert.deepEqual(record.redacted, ['userAgent'])
  const shown = record.userAgent!
  assert.ok(shown.length <= MAX_RECORDED_USER_AGENT + 12, `${shown.length}`)
  assert.ok(!shown.includes(jwt.slice(0, 40)), 'no part of the token')
  assert.match(shown, /…\[\+\d+\]$/)
  const esc = sanitizeRecord(rec('stream.opened', { userAgent: 'kubectl\n2030 forged\u001b' }))
  assert.equal(esc.record.userAgent, 'kubectl\\x0a2030 forged\\x1b')
  assert.deepEqual(esc.redacted, [])
  const plain = rec('stream.opened', { userAgent: 'kubectl/v1.33.1 (linux/amd64)' })
  assert.equal(sanitizeRecord(plain).record, plain, 'an ordinary user agent: no copy')
  // The same order for any text from a request that goes into a record or a log line.
  const pod = untrustedText(`${jwt}\n${'p'.repeat(1000)}`, 128)
  assert.equal(pod.redacted, true)
  assert.ok(!pod.text.includes(jwt.slice(0, 40)) && !pod.text.includes('\n'))
  assert.ok(logText(`${'a'.repeat(300)}${jwt}`).length < 280)
  assert.ok(!logText(`pod/${jwt}`).includes(jwt.split('.')[1]!))
})
