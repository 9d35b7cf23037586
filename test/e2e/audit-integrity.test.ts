/**
 * Hostile input against the audit trail, the logs and the gateway's answers, through the
 * real gateway (dev cluster processes) with real clients (raw HTTP/2, kubectl, the pfgate
 * CLI):
 *
 * - a flood of refused requests with 15 KB names, unauthenticated, erases no stream or
 *   session record: refusals go to the denials trail, within a per-source budget, names
 *   cut short; `pfgate audit query` reads both trails in time order;
 * - a pod name or a token's `sub` made to forge a row of `pfgate audit query`'s table
 *   forges nothing;
 * - on a connection where alice authenticated, a refused stream without a token, or with
 *   a forged one, is nobody's; the session's close names every user it carried;
 * - a JWT pasted into a path never reaches a log line; clients learn no agent address
 *   (native stream, kubectl), only a generic message with a ref that the log line has;
 * - refusals at the first step of the CLIs (`GET …/pods/NAME`) are audited and logged;
 * - impersonation (`kubectl --as`, `Impersonate-*` headers) is refused and audited on the
 *   API, upgrade and native paths;
 * - `GET` on the native path without a token is 401 (not 405); the node proxy forwards
 *   the path it checked (`/%68ealthz` → `/healthz`).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { connect } from 'node:http2'
import type { ClientHttp2Session } from 'node:http2'
import { tmpdir } from 'node:os'
import { connect as tlsConnect } from 'node:tls'
import type { ConnectionOptions } from 'node:tls'
import { join } from 'node:path'
import { SignJWT, importJWK } from 'jose'
import type { JWK, JWTPayload } from 'jose'
import { startTestCluster } from '../helpers/cluster.js'
import { runCliToEnd } from '../helpers/cli.js'
import { h2Request } from '../helpers/h2.js'
import {
  extendRegistry,
  openRaw,
  receivedAtLeast,
  settledTrail,
  tokenFor,
  trailPath,
  waitForRecords,
} from '../helpers/gateway.js'
import {
  closedPort,
  refusedThrough,
  runKubectl,
  startKubectlForward,
  until,
} from '../helpers/kube-clients.js'
import type { KubectlForward } from '../helpers/kube-clients.js'
import { RawWebSocket, rawRequest, wsUpgradeHeaders } from '../helpers/raw-upgrade.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import { DEV_AUDIENCE, DEV_ISSUER } from '../../src/dev/token.js'
import type { AuditRecord } from '../../src/protocol/audit-record.js'
import { nativePortForwardPath } from '../../src/protocol/constants.js'
import { hasControlChars } from '../../src/shared/text.js'

let cluster: DevCluster & { cleanup(): Promise<void> }
let work: string
let logFile: string
let trail: string
let alice: string
let bob: string
const sessions: ClientHttp2Session[] = []
const forwards: KubectlForward[] = []
let homeSeq = 0

/**
 * The flood budget of this cluster: room for the refusals the other tests cause from
 * 127.0.0.1 (kubectl retries discovery), far less than the flood; summaries every second.
 */
const BUDGET = { rate: 1, burst: 100, totalRate: 50, totalBurst: 200, summaryInterval: '1s' }

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'pfgate-integrity-e2e-'))
  logFile = join(work, 'components.log')
  cluster = await startTestCluster(
    {
      authorization: {
        rules: [
          { users: ['alice', 'bob'], namespaces: ['default'], pods: ['*'], ports: ['1-65535'] },
          { groups: ['pfgate:developers'], namespaces: ['default'] },
        ],
        admins: { groups: ['pfgate:admins'] },
      },
      audit: {
        // Small files: a flood that reached this trail would rotate history away at once.
        sinks: [
          {
            type: 'file',
            path: 'audit/audit.log',
            maxSize: '64KiB',
            maxFiles: 2,
            denialsMaxSize: '64KiB',
            denialsMaxFiles: 2,
          },
        ],
        denials: BUDGET,
      },
    },
    { logFile },
  )
  trail = trailPath(cluster)
  alice = await tokenFor(cluster, 'alice', [])
  bob = await tokenFor(cluster, 'bob', [])
})

after(async () => {
  for (const f of forwards) await f.stop()
  for (const s of sessions) s.destroy()
  await cluster?.cleanup()
  rmSync(work, { recursive: true, force: true })
})

/** An HTTP/2 session to the gateway from `localAddress` (each test its own source). */
function session(localAddress = '127.0.0.1'): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = connect(cluster.gatewayUrl, {
      createConnection: () =>
        tlsConnect({
          host: '127.0.0.1',
          port: cluster.gatewayPort,
          localAddress,
          ca: readFileSync(join(cluster.dir, 'ca.crt')),
          servername: 'localhost',
          ALPNProtocols: ['h2'],
        } as ConnectionOptions),
    })
    s.once('connect', () => resolve(s))
    s.once('error', reject)
    s.on('error', () => undefined)
    sessions.push(s)
  })
}

/** One native stream: its status and body (closed at once). */
async function native(
  s: ClientHttp2Session,
  pod: string,
  token: string | undefined,
  headers: Record<string, string> = {},
  port = 5000,
): Promise<{ status: number; body: string }> {
  const st = await openRaw(s, { node: 'node-a', pod, port }, token, headers)
  if (st.status === 200) st.req.close()
  else st.req.end()
  await st.closed
  return { status: st.status, body: st.received().toString() }
}

/** The gateway's (and agents') log lines so far. */
function logLines(): string[] {
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
}

/** Signs any claims with the dev key (expired, odd subjects …). */
async function forge(claims: JWTPayload): Promise<string> {
  const jwk = JSON.parse(readFileSync(join(cluster.dir, 'signing-key.jwk'), 'utf8')) as JWK
  const now = Math.floor(Date.now() / 1000)
  return new SignJWT({
    iss: DEV_ISSUER,
    aud: DEV_AUDIENCE,
    iat: now,
    exp: now + 600,
    groups: ['pfgate:developers'],
    ...claims,
  })
    .setProtectedHeader({ alg: 'ES256', kid: jwk.kid ?? 'dev', typ: 'JWT' })
    .sign(await importJWK(jwk, 'ES256'))
}

function kubectlOpts(): { kubeconfig: string; home: string } {
  return { kubeconfig: cluster.kubeconfig, home: join(cluster.dir, `home-${++homeSeq}`) }
}

describe('identity comes from each request alone', () => {
  test('refusals on alice’s connection are nobody’s; the session names all its users', async () => {
    const s = await session('127.0.0.3')
    const ok = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, alice)
    assert.equal(ok.status, 200)
    ok.req.write('hello')
    await receivedAtLeast(ok, 5)
    ok.req.end()
    await ok.closed
    const anonymous = await native(s, 'echo', undefined)
    assert.equal(anonymous.status, 401)
    const forged = await native(s, 'echo', `${alice.slice(0, -4)}AAAA`)
    assert.equal(forged.status, 401)
    const asBob = await native(s, 'echo', bob)
    assert.equal(asBob.status, 200)
    s.close()
    const records = await waitForRecords(
      trail,
      (rs) => {
        const mine = rs.filter((r) => r.sourceAddress?.startsWith('127.0.0.3:') === true)
        return mine.some((r) => r.type === 'session.closed') ? mine : undefined
      },
      'the session’s records',
    )
    const denied = records.filter((r) => r.type === 'stream.denied')
    assert.equal(denied.length, 2)
    for (const d of denied) {
      assert.equal(d.user, undefined, `a refused stream is nobody's: ${JSON.stringify(d)}`)
      assert.equal(d.groups, undefined)
    }
    const opened = records.find((r) => r.type === 'session.opened')
    assert.equal(opened?.user, 'alice', 'opened by the first identity that authenticated')
    const closed = records.find((r) => r.type === 'session.closed')
    assert.deepEqual(closed?.users, ['alice', 'bob'])
    assert.equal(closed?.user, undefined, 'no single user for a session that carried two')
    const streams = records.filter((r) => r.type === 'stream.opened')
    assert.deepEqual(
      streams.map((r) => r.user),
      ['alice', 'bob'],
    )
  })
})

describe('names and claims cannot forge output', () => {
  test('a pod name with a newline and ESC forges no row of pfgate audit query', async () => {
    const s = await session('127.0.0.4')
    const forgedRow =
      '\n2030-01-01T00:00:00.000Z  stream.closed  root-admin  kube-system/etcd-0:2379  1.0K/1.0K  1.0s  client\u001b[8m'
    const pod = `x${forgedRow}`
    const path = nativePortForwardPath('node-a', 'default', pod)
    assert.ok(path.includes('%0A') && path.includes('%1B'), path)
    assert.equal((await native(s, pod, undefined)).status, 401)
    assert.equal((await native(s, pod, alice)).status, 400)
    const records = await waitForRecords(
      trail,
      (rs) => {
        const r = rs.filter((x) => x.type === 'stream.denied' && x.pod?.startsWith('x') === true)
        return r.length >= 2 ? r : undefined
      },
      'the refusals',
    )
    for (const r of records) {
      assert.ok(!r.pod!.includes('\n') && !r.pod!.includes('\u001b'), `escaped: ${r.pod}`)
      assert.match(r.pod!, /^x\\x0a2030-01-01/)
    }
    const q = await runCliToEnd(['audit', 'query', '-f', trail, '--type', 'stream.denied'])
    assert.equal(q.code, 0, q.stderr)
    assert.ok(!q.stdout.includes('\u001b'), 'no escape sequence reaches the terminal')
    for (const line of q.stdout.split('\n'))
      assert.ok(!line.startsWith('2030-01-01'), `a forged row: ${JSON.stringify(line)}`)
  })

  test('a sub or groups claim with control characters is refused (never recorded as is)', async () => {
    const s = await session('127.0.0.4')
    for (const claims of [
      { sub: 'eve\u001b[8m' },
      { sub: 'eve\n2030-01-01T00:00:00.000Z  stream.closed  root-admin' },
      { sub: 'eve', groups: ['pfgate:developers', 'x\u202egnp.exe'] },
      { sub: 'e'.repeat(2000) },
    ]) {
      const token = await forge(claims)
      const r = await native(s, 'echo', token)
      assert.equal(r.status, 401, JSON.stringify(claims))
      const ref = /ref ([0-9a-f]{8})/.exec(r.body)?.[1]
      assert.ok(ref !== undefined, r.body)
      await until(
        () =>
          logLines().some((l) => l.includes(`"ref":"${ref}"`) && /(username|groups) claim/.test(l)),
        'the log line that says why',
      )
    }
    const all = await settledTrail(trail)
    for (const r of all) {
      for (const v of [r.user, ...(r.users ?? []), ...(r.groups ?? [])])
        if (v !== undefined) assert.ok(!hasControlChars(v), JSON.stringify(r))
    }
  })
})

describe('secrets and internals stay out of what clients and logs see', () => {
  test('a JWT pasted into the pod path never appears in a log line', async () => {
    const s = await session('127.0.0.5')
    // A real, valid credential pasted where a name goes (a copy-paste accident).
    assert.equal((await native(s, alice, undefined)).status, 401)
    assert.equal((await native(s, alice, bob)).status, 400)
    await waitForRecords(
      trail,
      (rs) => {
        const r = rs.filter(
          (x) => x.type === 'stream.denied' && x.sourceAddress?.startsWith('127.0.0.5:') === true,
        )
        return r.length >= 2 ? r : undefined
      },
      'the two refusals',
    )
    // Each refusal's log line is written before its record.
    await until(() => logLines().filter((l) => l.includes('"status":400')).length >= 1, 'logs')
    for (const line of logLines())
      assert.ok(!line.includes(alice), `a log line holds the token: ${line.slice(0, 300)}`)
    const recs = await settledTrail(trail)
    for (const r of recs) assert.ok(!JSON.stringify(r).includes(alice), 'nor any record')
  })

  test('an unreachable agent: clients get a generic message and a ref, the log the details', async () => {
    const deadPort = await closedPort()
    extendRegistry(cluster, {
      nodes: [{ name: 'node-dead', address: '127.0.0.1', port: deadPort, tlsServerName: 'x' }],
      pods: [
        {
          namespace: 'default',
          name: 'ghost',
          uid: '00000000-0000-4000-8000-00000000dead',
          node: 'node-dead',
          phase: 'Running',
          ports: [{ containerPort: 5000 }],
        },
      ],
    })
    const s = await session('127.0.0.5')
    let r = { status: 0, body: '' }
    await until(async () => {
      const st = await openRaw(s, { node: 'node-dead', pod: 'ghost', port: 5000 }, alice)
      st.req.end()
      await st.closed
      r = { status: st.status, body: st.received().toString() }
      return r.status !== 404
    }, 'the registry reload')
    assert.equal(r.status, 502, r.body)
    const message = (JSON.parse(r.body) as { message: string }).message
    assert.match(message, /^the node agent cannot be reached \(ref [0-9a-f]{8}\)$/)
    assert.ok(!message.includes(String(deadPort)) && !message.includes('127.0.0.1'), message)
    const ref = /ref ([0-9a-f]{8})/.exec(message)![1]!
    await until(
      () => logLines().some((l) => l.includes(`"ref":"${ref}"`) && l.includes(String(deadPort))),
      'the log line with the details and the same ref',
    )
    const rec = await waitForRecords(
      trail,
      (rs) => rs.find((x) => x.type === 'stream.failed' && x.ref === ref),
      'the audit record',
    )
    assert.match(rec.error?.message ?? '', /unreachable/, 'the trail keeps the details')

    // kubectl prints what the gateway says on the error stream: 1.33 (SPDY tunnelled in a
    // WebSocket), 1.28 (SPDY).
    for (const version of ['1.33', '1.28']) {
      const f = await startKubectlForward(version, ['ghost', ':5000'], 1, kubectlOpts())
      forwards.push(f)
      await refusedThrough(f.local[0]!.port)
      await until(
        () => /cannot be reached \(ref [0-9a-f]{8}\)/.test(f.stderr()),
        `kubectl ${version}’s error`,
      )
      // The local port kubectl names may be the number the dead agent port had (both were
      // free ports): only the rest of the line must not carry it.
      const said = f.stderr().replaceAll(`forwarding ${f.local[0]!.port} ->`, 'forwarding ->')
      assert.ok(!said.includes(String(deadPort)), f.stderr())
      await f.stop()
    }
    // The v4 channel protocol: the line on the port's error channel.
    const res = await rawRequest(
      cluster.gatewayPort,
      readFileSync(join(cluster.dir, 'ca.crt')),
      'GET',
      '/api/v1/namespaces/default/pods/ghost/portforward?ports=5000',
      wsUpgradeHeaders(cluster.token, ['v4.channel.k8s.io']),
    )
    assert.equal(res.status, 101, res.body)
    const ws = new RawWebSocket(res.socket, res.rest)
    await ws.closed
    const text = ws.messages
      .filter((m) => m.data[0] === 1)
      .map((m) => m.data.subarray(1).toString())
      .join('')
    assert.match(text, /the node agent cannot be reached \(ref [0-9a-f]{8}\)/)
    assert.ok(!text.includes(String(deadPort)), text)
  })
})

describe('refusals at the CLIs’ first step are audited', () => {
  test('kubectl and pfgate port-forward: garbage, expired, forbidden, no groups', async () => {
    const expired = await forge({ sub: 'dev', exp: Math.floor(Date.now() / 1000) - 3600 })
    const nogroups = await forge({ sub: 'nobody', groups: [] })
    // kubectl's first request is discovery (`/api`) unless cached: a bad token is refused
    // there; with a good one, `GET …/pods/echo` is what is refused.
    const cases: [string, string[], number, string, RegExp][] = [
      ['garbage token', ['--token', 'garbage'], 401, 'unauthenticated', /^\/api/],
      ['expired token', ['--token', expired], 401, 'unauthenticated', /^\/api/],
      ['forbidden namespace', ['-n', 'kube-system'], 403, 'forbidden', /\/pods\/echo$/],
      ['no groups', ['--token', nogroups], 403, 'forbidden', /\/pods\/echo$/],
    ]
    for (const [what, flags, status, reason, path] of cases) {
      const before = (await settledTrail(trail, 50)).length
      const k = await runKubectl('1.33', [...flags, 'port-forward', 'echo', ':5000'], {
        ...kubectlOpts(),
        timeoutMs: 20_000,
      })
      assert.notEqual(k.code, 0, `${what}: kubectl failed`)
      assert.ok(!k.stdout.includes('Forwarding from'), what)
      const rec = await waitForRecords(
        trail,
        (rs) => rs.slice(before).find((r) => r.type === 'request.denied' && r.status === status),
        `${what}: the request.denied record`,
      )
      assert.equal(rec.reason, reason, what)
      assert.match(rec.sourceAddress ?? '', /^127\.0\.0\.1:\d+$/, 'from where')
      assert.match(rec.userAgent ?? '', /^kubectl/)
      assert.equal(rec.method, 'GET')
      assert.match(rec.path ?? '', path, what)
      if (status === 401) {
        assert.equal(rec.user, undefined)
        assert.match(rec.error?.message ?? '', /Unauthorized \(ref [0-9a-f]{8}\): /, 'the reason')
        assert.ok(
          logLines().some((l) => l.includes(`"ref":"${rec.ref}"`) && l.includes('"reason"')),
          `${what}: the log line with the ref and the reason`,
        )
      } else {
        assert.equal(rec.pod, 'echo')
        assert.ok(rec.user !== undefined, what)
        assert.ok(
          logLines().some(
            (l) => l.includes('request refused') && l.includes(`"user":"${rec.user}"`),
          ),
          `${what}: a log line`,
        )
      }
    }
    // The pfgate CLI reads the pod first.
    const before = (await settledTrail(trail, 50)).length
    const p = await runCliToEnd(
      ['port-forward', 'echo', ':5000', '--kubeconfig', cluster.kubeconfig, '--token', 'garbage'],
      { HOME: cluster.dir },
    )
    assert.equal(p.code, 1, p.stderr)
    const rec = await waitForRecords(
      trail,
      (rs) =>
        rs
          .slice(before)
          .find((r) => r.type === 'request.denied' && r.status === 401 && r.pod === 'echo'),
      'the pfgate CLI’s refusal',
    )
    assert.equal(rec.path, '/api/v1/namespaces/default/pods/echo')
  })
})

describe('impersonation is refused, never ignored', () => {
  test('kubectl --as: the API refuses it with 403, audited; nothing is forwarded', async () => {
    const as = '--as=system:serviceaccount:default:nobody'
    // Without a discovery cache, kubectl's first request (discovery) is refused; it shows
    // a 403 without the message (client-go reads discovery answers raw, for any server).
    const cold = await runKubectl('1.33', [as, 'port-forward', 'pod/echo', ':5000'], {
      ...kubectlOpts(),
      timeoutMs: 20_000,
    })
    assert.notEqual(cold.code, 0, `kubectl --as must fail: ${cold.stdout}`)
    assert.ok(!cold.stdout.includes('Forwarding from'), cold.stdout)
    assert.match(cold.stderr, /Forbidden/)
    // With its discovery cache (a kubectl that was used before), the first request is the
    // pod's GET, and kubectl prints the message.
    const opts = kubectlOpts()
    const warm = await runKubectl('1.33', ['get', 'pods'], opts)
    assert.equal(warm.code, 0, warm.stderr)
    const k = await runKubectl('1.33', [as, 'port-forward', 'pod/echo', ':5000'], {
      ...opts,
      timeoutMs: 20_000,
    })
    assert.notEqual(k.code, 0, `kubectl --as must fail: ${k.stdout}`)
    assert.ok(!k.stdout.includes('Forwarding from'), k.stdout)
    assert.match(
      k.stderr,
      /users "system:serviceaccount:default:nobody" is forbidden: User "dev" cannot impersonate resource "users"/,
    )
    const rec = await waitForRecords(
      trail,
      (rs) =>
        rs.find(
          (r) =>
            r.type === 'request.denied' &&
            r.reason === 'impersonation' &&
            r.path === '/api/v1/namespaces/default/pods/echo',
        ),
      'the request.denied record',
    )
    assert.equal(rec.status, 403)
    assert.equal(rec.user, 'dev', 'the real identity is recorded')
    assert.equal(rec.error?.code, 'PFG_ERR_AUTH_IMPERSONATION')

    const g = await runKubectl(
      '1.33',
      ['--as=dev', '--as-group=system:masters', 'get', 'pods'],
      opts,
    )
    assert.notEqual(g.code, 0)
    assert.match(g.stderr, /cannot impersonate resource "users"/)
  })

  test('upgrades and native streams with Impersonate-* headers are refused too', async () => {
    const ca = readFileSync(join(cluster.dir, 'ca.crt'))
    const up = await rawRequest(
      cluster.gatewayPort,
      ca,
      'GET',
      '/api/v1/namespaces/default/pods/echo/portforward?ports=5000',
      {
        Authorization: `Bearer ${cluster.token}`,
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
        'Sec-WebSocket-Protocol': 'v4.channel.k8s.io',
        'Impersonate-User': 'nobody',
      },
    )
    up.socket.destroy()
    assert.equal(up.status, 403, up.body)
    assert.match(up.body, /cannot impersonate/)
    const s = await session('127.0.0.6')
    for (const h of [
      { 'impersonate-user': 'nobody' } as Record<string, string>,
      { 'impersonate-group': 'system:masters' },
      { 'impersonate-uid': '1' },
      { 'impersonate-extra-scopes': 'x' },
    ]) {
      const r = await native(s, 'echo', cluster.token, h)
      assert.equal(r.status, 403, `${JSON.stringify(h)}: ${r.body}`)
      assert.match(r.body, /PFG_ERR_AUTH_IMPERSONATION/)
    }
    const recs = await waitForRecords(
      trail,
      (rs) => {
        const r = rs.filter((x) => x.type === 'stream.denied' && x.reason === 'impersonation')
        return r.length >= 5 ? r : undefined
      },
      'the stream.denied records',
    )
    assert.ok(recs.every((r) => r.user === 'dev' && r.status === 403))
  })
})

describe('smaller ones', () => {
  test('GET on the native path: 401 without a token, 405 with one', async () => {
    const s = await session('127.0.0.6')
    const path = nativePortForwardPath('node-a', 'default', 'echo')
    const anon = await h2Request(s, { ':method': 'GET', ':path': path, port: '5000' })
    assert.equal(anon.status, 401, anon.body)
    assert.equal(anon.headers['www-authenticate'], 'Bearer realm="pfgate"')
    const authed = await h2Request(s, {
      ':method': 'GET',
      ':path': path,
      port: '5000',
      authorization: `Bearer ${cluster.token}`,
    })
    assert.equal(authed.status, 405, authed.body)
    assert.equal(authed.headers.allow, 'POST')
  })

  test('the node proxy forwards the path it checked (/%68ealthz is /healthz)', async () => {
    const s = await session('127.0.0.6')
    const get = (path: string): ReturnType<typeof h2Request> =>
      h2Request(s, { ':method': 'GET', ':path': path, authorization: `Bearer ${cluster.token}` })
    const plain = await get('/proxy/nodes/node-a/healthz')
    assert.equal(plain.status, 200, plain.body)
    const encoded = await get('/proxy/nodes/node-a/%68ealthz')
    assert.deepEqual([encoded.status, encoded.body], [plain.status, plain.body])
    const query = await get('/proxy/nodes/node-a/healthz?verbose=1')
    assert.deepEqual([query.status, query.body], [plain.status, plain.body])
  })
})

describe('a flood of refusals erases no history', () => {
  test('300 unauthenticated requests with 15 KB names: every earlier record survives', async (t) => {
    // History: a stream and its session, as alice.
    const s = await session('127.0.0.7')
    const ok = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, alice)
    assert.equal(ok.status, 200)
    ok.req.end('bye')
    await ok.closed
    s.close()
    const history = await waitForRecords(
      trail,
      (rs) => {
        const h = rs.filter((r) => r.sourceAddress?.startsWith('127.0.0.7:') === true)
        return h.some((r) => r.type === 'session.closed') ? h : undefined
      },
      'the history',
    )
    const before = (await settledTrail(trail)).filter((r) => r.type !== 'denials.suppressed')
    assert.ok(before.length >= 8, `${before.length} records before the flood`)

    // The flood: 15 KB pod names, `Bearer x`, from one source, 50 streams at a time.
    const flood = 300
    const name = 'a'.repeat(15_000)
    const f = await session('127.0.0.8')
    const started = Date.now()
    for (let i = 0; i < flood; i += 50) {
      const batch = Array.from({ length: Math.min(50, flood - i) }, () => native(f, name, 'x'))
      for (const r of await Promise.all(batch)) assert.equal(r.status, 401)
    }
    const floodMs = Date.now() - started
    f.close()

    // The summaries are written every second.
    const fromFlood = (rs: AuditRecord[]): AuditRecord[] =>
      rs.filter(
        (r) =>
          (r.type === 'stream.denied' && r.sourceAddress?.startsWith('127.0.0.8:') === true) ||
          (r.type === 'denials.suppressed' && r.sourceAddress === '127.0.0.8'),
      )
    const tally = (rs: AuditRecord[]): number =>
      rs.reduce((n, r) => n + (r.type === 'stream.denied' ? 1 : (r.count ?? 0)), 0)
    await waitForRecords(
      trail,
      (rs) => (tally(fromFlood(rs)) >= flood ? true : undefined),
      'every refusal recorded or counted',
      5_000,
    ).catch(() => undefined) // asserted below, after the history

    // Every earlier record is still there (main trail untouched by the flood).
    const afterRecords = await settledTrail(trail)
    const ids = new Set(afterRecords.map((r) => r.id))
    const lost = before.filter((r) => !ids.has(r.id))
    assert.deepEqual(
      lost.map((r) => r.type),
      [],
      `${lost.length} of ${before.length} earlier records lost`,
    )
    for (const h of history) assert.ok(ids.has(h.id))

    const denials = fromFlood(afterRecords)
    assert.equal(tally(denials), flood, 'each refusal recorded or counted, once')
    const single = denials.filter((r) => r.type === 'stream.denied')
    const summaries = denials.filter((r) => r.type === 'denials.suppressed')
    // Within the budget: the burst, plus a token a second while it lasted.
    assert.ok(
      single.length <= BUDGET.burst + Math.ceil(floodMs / 1000) * BUDGET.rate + 1,
      `${single.length} recorded one by one in ${floodMs} ms`,
    )
    for (const r of single) assert.ok(r.pod!.length < 200, `a cut name: ${r.pod!.length}`)
    assert.ok(summaries.length >= 1, 'the rest were counted in summaries')
    t.diagnostic(
      `flood of ${flood} in ${floodMs} ms: ${before.length - lost.length} of ${before.length} earlier records kept; ${single.length} refusals recorded, ${tally(summaries)} counted in ${summaries.length} summaries`,
    )
    for (const r of summaries) assert.equal(r.reasons?.unauthenticated, r.count)

    // pfgate audit query: both trails, in time order.
    const q = await runCliToEnd(['audit', 'query', '-f', trail, '-o', 'json'])
    assert.equal(q.code, 0, q.stderr)
    const out = q.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditRecord)
    // In time order: each trail is in the order written (a lingering close may follow a
    // newer open by a few ms), so allow that much; concatenating the trails would not.
    for (let i = 1; i < out.length; i++) {
      const back = Date.parse(out[i - 1]!.time) - Date.parse(out[i]!.time)
      assert.ok(back < 1000, `out of order by ${back} ms at ${i}: ${out[i]!.type}`)
    }
    const seen = new Set(out.map((r) => r.id))
    for (const h of history) assert.ok(seen.has(h.id), `query shows ${h.type}`)
    for (const r of summaries) assert.ok(seen.has(r.id), 'query shows the summaries')
  })
})
