/**
 * The console wired into a whole gateway built in process (real TLS and HTTP/2 client):
 * the page and its login on the gateway's port, the refusal of a non-admin audited by
 * the gateway's error handler, the live view's HTTP/2 stream outliving the request
 * deadline (it is exempt, being bounded by the console), and `GET /admin/v1/audit` with
 * a bearer token over the trail file.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import type { ClientHttp2Session, IncomingHttpHeaders } from 'node:http2'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inProcessGateway } from '../../helpers/in-process-gateway.js'

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

function request(
  client: ClientHttp2Session,
  headers: Record<string, string>,
  body?: string,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = client.request(headers, { endStream: body === undefined })
    let text = ''
    let got: IncomingHttpHeaders = {}
    req.on('response', (h) => (got = h))
    req.setEncoding('utf8')
    req.on('data', (d: string) => (text += d))
    req.on('end', () => resolve({ status: Number(got[':status']), headers: got, body: text }))
    req.on('error', reject)
    if (body !== undefined) req.end(body)
  })
}

test('the console on the gateway: page, login, audited refusal, a live view past the request deadline, the admin audit API', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pfgate-console-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const trail = join(dir, 'audit.log')
  const rec = (id: string, user: string, extra: object): string =>
    `${JSON.stringify({ schema: 'pfgate.audit/v2', id, time: new Date().toISOString(), type: 'stream.closed', user, ...extra })}\n`
  writeFileSync(
    trail,
    rec('r1', 'alice', { endedBy: 'pod' }) + rec('r2', 'alice', { endedBy: 'admin' }),
  )
  const gw = await inProcessGateway({
    overrides: { console: { auditFile: trail } },
    config: { limits: { requestTimeout: '1s', streamOpenTimeout: '500ms' } },
  })
  t.after(() => gw.close())
  const url = await gw.listen()
  const client = await gw.connect(url)
  const origin = url

  const page = await request(client, { ':path': '/console/' })
  assert.equal(page.status, 200)
  assert.match(String(page.headers['content-security-policy']), /default-src 'none'/)

  const login = (token: string) =>
    request(
      client,
      {
        ':method': 'POST',
        ':path': '/console/api/login',
        'content-type': 'application/json',
        origin,
      },
      JSON.stringify({ token }),
    )
  const before = gw.audit.records.length
  const alice = await login(await gw.token('alice'))
  assert.equal(alice.status, 403)
  const denied = gw.audit.records.slice(before).find((r) => r.type === 'request.denied')
  assert.deepEqual(
    [denied?.user, denied?.path, denied?.status],
    ['alice', '/console/api/login', 403],
  )
  const root = await login(await gw.token('root'))
  assert.equal(root.status, 200, root.body)
  const cookie = String(root.headers['set-cookie']).split(';')[0] as string

  // The live view: samples keep coming after the 1 s request deadline.
  const samples = await new Promise<number>((resolve, reject) => {
    const req = client.request({ ':path': '/console/api/live', cookie })
    let n = 0
    const started = Date.now()
    req.setEncoding('utf8')
    req.on('data', (d: string) => {
      n += (d.match(/event: sample/g) ?? []).length
      if (Date.now() - started > 2500) {
        req.close()
        resolve(n)
      }
    })
    req.on('error', reject)
    req.on('close', () => resolve(-1))
  })
  assert.ok(samples >= 2, `samples after the deadline: ${samples}`)

  const audit = await request(client, {
    ':path': '/admin/v1/audit?outcome=admin',
    authorization: `Bearer ${await gw.token('root')}`,
  })
  assert.equal(audit.status, 200, audit.body)
  const body = JSON.parse(audit.body) as { items: { id: string; outcome: string }[]; total: number }
  assert.deepEqual([body.total, body.items.map((r) => [r.id, r.outcome])], [1, [['r2', 'admin']]])
  const forbidden = await request(client, {
    ':path': '/admin/v1/audit',
    authorization: `Bearer ${await gw.token('alice')}`,
  })
  assert.equal(forbidden.status, 403)
})
