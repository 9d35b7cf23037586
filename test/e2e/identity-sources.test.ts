/**
 * The gateway's identity sources and the RBAC authorizer end to end, on a real dev
 * cluster whose gateway trusts, at once: an OIDC issuer found by discovery (a real
 * oidc-provider), a client CA, and TokenReview plus SubjectAccessReview through the test
 * Kubernetes API server (authorization.mode: rbac).
 *
 * - `pfgate login` (authorization code + PKCE, the browser played through the provider's
 *   own sign-in form) writes a kubeconfig whose exec plugin is `pfgate login get-token`;
 *   `pfgate port-forward` with it keeps forwarding across several ID-token lifetimes
 *   (refresh tokens) and across a key rotation at the provider; kubectl 1.33 uses it too.
 * - A client certificate from the client CA forwards; one with only serverAuth, or from
 *   another CA, is refused.
 * - A ServiceAccount-style token is accepted through TokenReview; a forged one is not.
 * - RBAC decides the pod (SubjectAccessReview create pods/portforward); the API server
 *   down is a clear 503, audited, and nothing is allowed.
 * - Every audit record says which source authenticated the user (`authSource`).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse as parseYaml, stringify as toYaml } from 'yaml'
import { startTestCluster } from '../helpers/cluster.js'
import { parseForwarding, runCli, runCliToEnd } from '../helpers/cli.js'
import { echoRoundTrip } from '../helpers/net.js'
import { readAudit, startKubectlForward } from '../helpers/kube-clients.js'
import {
  FakeKubeApiServer,
  generateFakeKubePki,
  writeFakeKubeconfig,
} from '../helpers/fake-kube-apiserver.js'
import type { FakeKubePki } from '../helpers/fake-kube-apiserver.js'
import { TEST_CLIENT_ID, TestBrowser, TestOidcProvider } from '../helpers/oidc-provider.js'
import type { DevCluster } from '../../src/dev/cluster.js'

let cluster: DevCluster & { cleanup(): Promise<void> }
let api: FakeKubeApiServer
let idp: TestOidcProvider
let clientPki: FakeKubePki
let work: string
let idpCa: string

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'pfgate-identity-e2e-'))
  api = await FakeKubeApiServer.start()
  idp = await TestOidcProvider.start({ idTokenTtlS: 6 })
  idpCa = idp.writeCa(join(work, 'idp-ca.pem'))
  clientPki = await generateFakeKubePki()
  writeFileSync(join(work, 'client-ca.pem'), clientPki.caCert)
  const apiKubeconfig = join(work, 'api.kubeconfig')
  writeFakeKubeconfig(api, apiKubeconfig, 'test-token')
  api.accessRules = [
    {
      groups: ['pfgate:developers', 'pfgate-test', 'system:serviceaccounts'],
      verb: 'create',
      resource: 'pods',
      subresource: 'portforward',
      namespace: 'default',
      names: ['echo'],
    },
  ]
  api.reviewedTokens.set('sa-token', {
    username: 'system:serviceaccount:ci:bot',
    uid: 'b0t',
    groups: ['system:serviceaccounts', 'system:serviceaccounts:ci'],
  })
  cluster = await startTestCluster({
    auth: {
      clockTolerance: '1s',
      oidc: [
        {
          issuer: idp.issuer,
          audience: TEST_CLIENT_ID,
          caFile: idpCa,
          minRefreshInterval: '1s',
        },
      ],
      clientCertificates: { ca: join(work, 'client-ca.pem') },
      tokenReview: { kubeconfig: apiKubeconfig, timeout: '2s' },
    },
    authorization: {
      mode: 'rbac',
      rules: [],
      rbac: { kubeconfig: apiKubeconfig, timeout: '2s', negativeCacheTTL: '1s' },
    },
    audit: { denials: { burst: 1000 } },
  })
})

after(async () => {
  await cluster?.cleanup()
  await api?.close()
  await idp?.close()
  rmSync(work, { recursive: true, force: true })
})

/** A copy of the dev kubeconfig with another user entry. */
function kubeconfigWith(name: string, user: Record<string, unknown>): string {
  const doc = parseYaml(readFileSync(cluster.kubeconfig, 'utf8')) as {
    users: { name: string; user: unknown }[]
  }
  doc.users = [{ name: 'dev', user }]
  const path = join(work, `${name}.kubeconfig`)
  writeFileSync(path, toYaml(doc))
  return path
}

const b64 = (s: string): string => Buffer.from(s).toString('base64')
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

async function forwardOnce(kubeconfig: string, extra: string[] = []): Promise<void> {
  const cli = runCli(['port-forward', 'echo', ':5000', ...extra], {
    KUBECONFIG: kubeconfig,
    HOME: work,
  })
  try {
    const [fwd] = parseForwarding(await cli.waitForLines(2))
    const r = await echoRoundTrip(fwd!.port, 4096)
    assert.equal(r.received, r.sent)
  } finally {
    assert.equal(await cli.stop(), 0, cli.stderr())
  }
}

function sourcesOf(user: string): string[] {
  return [
    ...new Set(
      readAudit(cluster.dir)
        .filter((r) => r.user === user)
        .map((r) => r.authSource ?? 'none'),
    ),
  ]
}

describe('client certificates', () => {
  test('a user certificate from the client CA forwards (CN the user, O the groups)', async () => {
    const kc = kubeconfigWith('x509', {
      'client-certificate-data': b64(clientPki.clientCert),
      'client-key-data': b64(clientPki.clientKey),
    })
    await forwardOnce(kc)
    assert.deepEqual(sourcesOf('pfgate-gateway'), ['x509'])
  })

  for (const [what, cert, key] of [
    ['a server-only certificate from the same CA', 'serverCert', 'serverKey'],
    ['a certificate from another CA', 'strangerCert', 'strangerKey'],
  ] as const) {
    test(`${what} is refused`, async () => {
      const kc = kubeconfigWith(`x509-${cert}`, {
        'client-certificate-data': b64(clientPki[cert]),
        'client-key-data': b64(clientPki[key]),
      })
      const r = await runCliToEnd(['port-forward', 'echo', ':5000'], {
        KUBECONFIG: kc,
        HOME: work,
      })
      assert.equal(r.code, 1)
      assert.match(r.stderr, /Unauthorized/)
    })
  }
})

describe('TokenReview and RBAC', () => {
  test('a token the API server accepts forwards; RBAC decides the pod', async () => {
    const kc = kubeconfigWith('sa', { token: 'sa-token' })
    await forwardOnce(kc)
    assert.deepEqual(sourcesOf('system:serviceaccount:ci:bot'), ['tokenreview'])
    const web = await runCliToEnd(['port-forward', 'web', ':8080'], { KUBECONFIG: kc, HOME: work })
    assert.equal(web.code, 1)
    assert.match(web.stderr, /Forbidden|forbidden/)
    const sar = api.reviews.filter((r) => r.kind === 'SubjectAccessReview')
    assert.ok(
      sar.some(
        (r) =>
          r.spec.user === 'system:serviceaccount:ci:bot' &&
          (r.spec.resourceAttributes as { name?: string }).name === 'web',
      ),
    )
  })

  test('a forged token is refused', async () => {
    const kc = kubeconfigWith('forged', { token: 'forged-token' })
    const r = await runCliToEnd(['port-forward', 'echo', ':5000'], { KUBECONFIG: kc, HOME: work })
    assert.equal(r.code, 1)
    assert.match(r.stderr, /Unauthorized/)
  })

  test('the API server down: 503 with a ref, audited, nothing allowed', async (t) => {
    api.reviewFailure = 'error'
    t.after(() => (api.reviewFailure = 'none'))
    api.reviewedTokens.set('sa-token-2', { username: 'system:serviceaccount:ci:other' })
    const kc = kubeconfigWith('down', { token: 'sa-token-2' })
    const r = await runCliToEnd(['port-forward', 'echo', ':5000'], { KUBECONFIG: kc, HOME: work })
    assert.equal(r.code, 1)
    const ref = /unavailable \(ref ([0-9a-f]{8})\)/.exec(r.stderr)?.[1]
    assert.ok(ref !== undefined, r.stderr)
    await sleep(300)
    const rec = readAudit(cluster.dir).find((x) => x.ref === ref)
    assert.ok(rec !== undefined, 'the refusal is audited with its ref')
    assert.match(JSON.stringify(rec), /TokenReview: POST .* 500/)
  })
})

describe('pfgate login (OIDC)', () => {
  test('login, then a forward that outlives its ID tokens and a key rotation; kubectl too', async (t) => {
    const cache = join(work, 'oidc-cache')
    const env = { HOME: work, PFGATE_CACHE_DIR: cache, BROWSER: 'false' }
    const kc = join(work, 'oidc.kubeconfig')
    writeFileSync(kc, readFileSync(cluster.kubeconfig))
    const flags = [
      '--issuer',
      idp.issuer,
      '--client-id',
      TEST_CLIENT_ID,
      '--ca-file',
      idpCa,
      '--scope',
      'groups',
    ]
    const setup = await runCliToEnd(
      ['login', 'setup-kubeconfig', ...flags, '--kubeconfig', kc, '--user', 'dev'],
      env,
    )
    assert.equal(setup.code, 0, setup.stderr)
    // Not logged in yet, and not interactive: a clear message.
    const early = await runCliToEnd(['port-forward', 'echo', ':5000'], { ...env, KUBECONFIG: kc })
    assert.equal(early.code, 1)
    assert.match(early.stderr, /not logged in; log in again: pfgate login --issuer/)

    const login = runCli(['login', ...flags], env)
    t.after(() => login.stop())
    await login.waitForStderr(/Open this URL in a browser to log in:\n\n {2}(\S+)/)
    const url = /Open this URL in a browser to log in:\n\n {2}(\S+)/.exec(login.stderr())![1]!
    const browser = new TestBrowser(idp)
    t.after(() => browser.close())
    const page = await browser.signIn(url, 'erin')
    assert.match(page.body, /You are logged in/)
    assert.equal(await login.exited, 0, login.stderr())
    assert.match(
      login.stdout(),
      /logged in to https:\/\/127\.0\.0\.1:\d+; the token is valid until .* refreshed automatically/,
    )

    const cli = runCli(['port-forward', 'echo', ':5000'], { ...env, KUBECONFIG: kc })
    t.after(() => cli.stop())
    const [fwd] = parseForwarding(await cli.waitForLines(2))
    // 15 s: about three 6 s ID tokens, a key rotation in the middle.
    const until = Date.now() + 15_000
    let rotated = false
    let fetchesAtRotation = Infinity
    let n = 0
    while (Date.now() < until) {
      const r = await echoRoundTrip(fwd!.port, 2048)
      assert.equal(r.received, r.sent, `connection ${n}`)
      n++
      if (!rotated && Date.now() > until - 9000) {
        fetchesAtRotation = idp.jwksFetches
        await idp.rotateKeys({ dropOld: true })
        rotated = true
      }
      await sleep(500)
    }
    assert.equal(await cli.stop(), 0, cli.stderr())
    assert.deepEqual(sourcesOf('erin'), ['oidc'])
    const opened = readAudit(cluster.dir).filter(
      (r) => r.user === 'erin' && r.type === 'stream.opened',
    )
    assert.ok(opened.length >= n, `${opened.length} streams of erin for ${n} connections`)
    assert.ok(idp.jwksFetches > fetchesAtRotation, 'the gateway fetched the rotated key set')

    // kubectl with the same kubeconfig (the plugin reads the cache; no prompt).
    const f = await startKubectlForward('1.33', ['echo', ':5000'], 1, {
      kubeconfig: kc,
      home: join(work, 'kubectl-home'),
      env: { PFGATE_CACHE_DIR: cache },
    })
    t.after(() => f.stop())
    const r = await echoRoundTrip(f.local[0]!.port, 8192)
    assert.equal(r.received, r.sent)
    await f.stop()
  })
})
