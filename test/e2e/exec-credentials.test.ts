/**
 * Exec credential plugins end to end: `pfgate port-forward` and kubectl 1.33 with a
 * kubeconfig whose user runs a plugin (a real process minting short-lived tokens the dev
 * gateway accepts), through the real gateway. A forward outlives many tokens without a
 * failed connection; a plugin that misstates its expiry is caught by the 401 path (one
 * refresh, the stream retried); a failing or hung plugin gives a clear error.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml, stringify as toYaml } from 'yaml'
import { startTestCluster } from '../helpers/cluster.js'
import { parseForwarding, runCli } from '../helpers/cli.js'
import { echoRoundTrip } from '../helpers/net.js'
import { readAudit, startKubectlForward } from '../helpers/kube-clients.js'
import type { DevCluster } from '../../src/dev/cluster.js'

const TOKEN_MODULE = fileURLToPath(new URL('../../src/dev/token.js', import.meta.url))

let cluster: DevCluster & { cleanup(): Promise<void> }
let work: string

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'pfgate-exec-e2e-'))
  // A short clock tolerance so that an expired token is refused within a second.
  cluster = await startTestCluster({ auth: { clockTolerance: '1s' } })
  writeFileSync(
    join(work, 'plugin.mjs'),
    `import { appendFileSync } from 'node:fs'
import { mintToken } from ${JSON.stringify(TOKEN_MODULE)}
const [dir, counter, ttl, mode] = process.argv.slice(2)
appendFileSync(counter, 'x')
if (mode === 'fail') { process.stderr.write('plugin: no session, run the login first\\n'); process.exit(4) }
if (mode === 'hang') setInterval(() => {}, 1000)
else {
  const token = await mintToken(dir, { subject: 'exec-user', groups: ['pfgate:developers'], ttlMs: Number(ttl) })
  const exp = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).exp * 1000
  // 'lie': claims an hour, so that only the gateway's 401 shows the token has expired.
  const expirationTimestamp = new Date(mode === 'lie' ? Date.now() + 3_600_000 : exp).toISOString()
  process.stdout.write(JSON.stringify({ kind: 'ExecCredential', apiVersion: process.env.EXEC_API, status: { token, expirationTimestamp } }))
}
`,
  )
})

after(async () => {
  await cluster?.cleanup()
  rmSync(work, { recursive: true, force: true })
})

/** A copy of the dev kubeconfig whose user runs the plugin; returns its path and run counter. */
function execKubeconfig(
  name: string,
  ttlMs: number,
  mode: 'honest' | 'lie' | 'fail' | 'hang',
  apiVersion = 'client.authentication.k8s.io/v1',
): { path: string; runs: () => number } {
  const doc = parseYaml(readFileSync(cluster.kubeconfig, 'utf8')) as {
    users: { name: string; user: unknown }[]
  }
  const counter = join(work, `${name}.runs`)
  doc.users = [
    {
      name: 'dev',
      user: {
        exec: {
          apiVersion,
          command: process.execPath,
          args: [join(work, 'plugin.mjs'), cluster.dir, counter, String(ttlMs), mode],
          env: [{ name: 'EXEC_API', value: apiVersion }],
          interactiveMode: 'Never',
          installHint: 'the test plugin is written by test/e2e/exec-credentials.test.ts',
        },
      },
    },
  ]
  const path = join(work, `${name}.kubeconfig`)
  writeFileSync(path, toYaml(doc))
  return {
    path,
    runs: () => (existsSync(counter) ? readFileSync(counter, 'utf8').length : 0),
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

describe('pfgate port-forward with an exec plugin', () => {
  test('a forward outlives its tokens: refreshed before expiry, no connection fails', async (t) => {
    const kc = execKubeconfig('honest', 3000, 'honest')
    const cli = runCli(['port-forward', 'echo', ':5000'], { KUBECONFIG: kc.path, HOME: work })
    t.after(() => cli.stop())
    const [fwd] = parseForwarding(await cli.waitForLines(2))
    // 12 s of connections, one every 400 ms, across four 3 s tokens.
    const until = Date.now() + 12_000
    let n = 0
    while (Date.now() < until) {
      const r = await echoRoundTrip(fwd!.port, 4096)
      assert.equal(r.received, r.sent, `connection ${n} echoed`)
      n++
      await sleep(400)
    }
    assert.ok(kc.runs() >= 4, `the plugin ran ${kc.runs()} times for ${n} connections`)
    assert.ok(kc.runs() < n / 2, 'tokens are cached, not fetched per connection')
    assert.doesNotMatch(cli.stderr(), /Unauthorized|error/)
    assert.equal(await cli.stop(), 0)
    const records = readAudit(cluster.dir)
    const denied = records.filter((r) => r.type === 'stream.denied' || r.type === 'request.denied')
    assert.deepEqual(denied, [], 'no token reached the gateway expired: refreshed before expiry')
    const streams = records.filter((r) => r.type === 'stream.closed' && r.user === 'exec-user')
    assert.ok(streams.length >= n, `${streams.length} streams of exec-user audited`)
  })

  test('a plugin that misstates its expiry: the 401 refreshes once and the stream is retried', async (t) => {
    const kc = execKubeconfig('lie', 2000, 'lie', 'client.authentication.k8s.io/v1beta1')
    const cli = runCli(['port-forward', 'echo', ':5000'], { KUBECONFIG: kc.path, HOME: work })
    t.after(() => cli.stop())
    const [fwd] = parseForwarding(await cli.waitForLines(2))
    const first = await echoRoundTrip(fwd!.port, 1024)
    assert.equal(first.received, first.sent)
    assert.equal(kc.runs(), 1)
    await sleep(3500) // the token has expired (2 s + the gateway's 1 s tolerance)
    const r = await echoRoundTrip(fwd!.port, 1024)
    assert.equal(r.received, r.sent, 'the connection after expiry works')
    assert.equal(kc.runs(), 2, 'one refresh')
    const denied = readAudit(cluster.dir).filter((r) => r.type === 'stream.denied')
    assert.equal(denied.length, 1, 'the expired token was refused once, then the retry passed')
    assert.doesNotMatch(cli.stderr(), /error/)
    assert.equal(await cli.stop(), 0)
  })

  test('a failing plugin: pfgate says which plugin and why, with its hint and stderr', async () => {
    const kc = execKubeconfig('fail', 2000, 'fail')
    const cli = runCli(['port-forward', 'echo', ':5000'], { KUBECONFIG: kc.path, HOME: work })
    assert.equal(await cli.exited, 1)
    assert.match(cli.stderr(), /plugin: no session, run the login first/)
    assert.match(cli.stderr(), /exec plugin .* exited with status 4\nthe test plugin is written by/)
    assert.equal(kc.runs(), 1)
  })

  test('a hung plugin: timed out (PFGATE_EXEC_TIMEOUT), killed, reported', async () => {
    const kc = execKubeconfig('hang', 2000, 'hang')
    const started = Date.now()
    const cli = runCli(['port-forward', 'echo', ':5000'], {
      KUBECONFIG: kc.path,
      HOME: work,
      PFGATE_EXEC_TIMEOUT: '1',
    })
    assert.equal(await cli.exited, 1)
    assert.match(cli.stderr(), /did not answer within 1 s/)
    assert.ok(Date.now() - started < 10_000)
  })
})

describe('kubectl 1.33 with the same exec kubeconfig', () => {
  test('forwards through the gateway with the plugin token', async (t) => {
    const kc = execKubeconfig('kubectl', 60_000, 'honest')
    const f = await startKubectlForward('1.33', ['echo', ':5000'], 1, {
      kubeconfig: kc.path,
      home: join(work, 'kubectl-home'),
    })
    t.after(() => f.stop())
    const r = await echoRoundTrip(f.local[0]!.port, 64 * 1024)
    assert.equal(r.received, r.sent)
    assert.ok(kc.runs() >= 1)
    await f.stop()
  })
})
