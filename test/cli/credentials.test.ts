/**
 * Exec credential plugins and the CLI's credential providers, with real plugin processes
 * (small Node scripts written per test): v1 and v1beta1 answers, KUBERNETES_EXEC_INFO,
 * env and args, interactive mode, a failing plugin, a hung one (timeout), bad output;
 * caching until expiry, refresh before expiry, single-flight, refresh after a 401; a
 * token file re-read when it changes; an expired static token reported once.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, renameSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import {
  parseExecConfig,
  runExecPlugin,
  type ExecConfig,
} from '../../src/cli/credentials/exec-plugin.js'
import {
  ExecCredentials,
  StaticCredentials,
  TokenFileCredentials,
  jwtExpiry,
  refreshMargin,
} from '../../src/cli/credentials/providers.js'
import { loadClientConfig } from '../../src/cli/kubeconfig.js'

function workdir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pfgate-cred-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/**
 * Writes a plugin script: it records its KUBERNETES_EXEC_INFO, argv, env FOO and a run
 * counter in `dir`, then runs `body` (JS with `info`, `runs` and `print(obj)` in scope).
 */
function plugin(dir: string, body: string): string {
  const p = join(dir, 'plugin.mjs')
  writeFileSync(
    p,
    `import { appendFileSync, readFileSync, existsSync } from 'node:fs'
const dir = ${JSON.stringify(dir)}
appendFileSync(dir + '/runs', 'x')
const runs = readFileSync(dir + '/runs', 'utf8').length
const info = JSON.parse(process.env.KUBERNETES_EXEC_INFO)
appendFileSync(dir + '/seen', JSON.stringify({ info, argv: process.argv.slice(2), foo: process.env.FOO }) + '\\n')
const print = (o) => process.stdout.write(JSON.stringify(o))
${body}
`,
  )
  return p
}

function execConfig(script: string, extra: Partial<ExecConfig> = {}): ExecConfig {
  return {
    apiVersion: 'client.authentication.k8s.io/v1',
    command: process.execPath,
    args: [script, '--flag', 'value'],
    env: [{ name: 'FOO', value: 'bar' }],
    interactiveMode: 'IfAvailable',
    provideClusterInfo: true,
    ...extra,
  }
}

interface Seen {
  info: { kind: string; apiVersion: string; spec: { interactive: boolean; cluster?: unknown } }
  argv: string[]
  foo: string
}
const seen = (dir: string): Seen[] =>
  readFileSync(join(dir, 'seen'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Seen)
const runs = (dir: string): number =>
  existsSync(join(dir, 'runs')) ? readFileSync(join(dir, 'runs'), 'utf8').length : 0

for (const version of ['v1', 'v1beta1'] as const) {
  test(`an ${version} plugin: token, expiry, args, env and KUBERNETES_EXEC_INFO`, async (t) => {
    const dir = workdir(t)
    const apiVersion = `client.authentication.k8s.io/${version}` as const
    const exp = new Date(Date.now() + 3_600_000).toISOString().replace(/\.\d+Z$/, 'Z')
    const script = plugin(
      dir,
      `print({ kind: 'ExecCredential', apiVersion: '${apiVersion}', status: { token: 'tok-' + runs, expirationTimestamp: '${exp}' } })`,
    )
    const cred = await runExecPlugin(execConfig(script, { apiVersion }), {
      terminal: false,
      env: { PATH: process.env.PATH },
      cluster: { server: 'https://gw:8443', certificateAuthorityData: 'Q0E=' },
    })
    assert.equal(cred.token, 'tok-1')
    assert.equal(cred.expiresAt, Date.parse(exp))
    const [s] = seen(dir)
    assert.deepEqual(s!.argv, ['--flag', 'value'])
    assert.equal(s!.foo, 'bar')
    assert.deepEqual(s!.info, {
      kind: 'ExecCredential',
      apiVersion,
      spec: {
        interactive: false,
        cluster: { server: 'https://gw:8443', certificateAuthorityData: 'Q0E=' },
      },
    })
  })
}

test('a plugin may answer with a client certificate', async (t) => {
  const dir = workdir(t)
  const script = plugin(
    dir,
    `print({ kind: 'ExecCredential', apiVersion: 'client.authentication.k8s.io/v1', status: { clientCertificateData: 'CERT', clientKeyData: 'KEY' } })`,
  )
  const cred = await runExecPlugin(execConfig(script), { terminal: false, env: {} })
  assert.equal(cred.cert?.toString(), 'CERT')
  assert.equal(cred.key?.toString(), 'KEY')
  assert.equal(cred.token, undefined)
})

test('interactive mode: the plugin is told, stdin is its only when allowed', async (t) => {
  const dir = workdir(t)
  const script = plugin(
    dir,
    `print({ kind: 'ExecCredential', apiVersion: 'client.authentication.k8s.io/v1', status: { token: 't' } })`,
  )
  await runExecPlugin(execConfig(script), { terminal: true, env: {} })
  await runExecPlugin(execConfig(script, { interactiveMode: 'Never' }), { terminal: true, env: {} })
  await runExecPlugin(execConfig(script), { terminal: false, env: {} })
  assert.deepEqual(
    seen(dir).map((s) => s.info.spec.interactive),
    [true, false, false],
  )
  await assert.rejects(
    runExecPlugin(execConfig(script, { interactiveMode: 'Always' }), { terminal: false, env: {} }),
    /needs an interactive terminal/,
  )
  assert.equal(runs(dir), 3, 'an Always plugin without a terminal is not run')
})

test('a failing plugin: a clear error with its install hint', async (t) => {
  const dir = workdir(t)
  const script = plugin(dir, `process.stderr.write('no session\\n'); process.exit(3)`)
  const errOut: Buffer[] = []
  const stderr = { write: (c: Buffer) => errOut.push(Buffer.from(c)) } as never
  await assert.rejects(
    runExecPlugin(execConfig(script, { installHint: 'install the-plugin' }), {
      terminal: false,
      env: {},
      stderr,
    }),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, 'PFG_ERR_CLI_CREDENTIALS')
      assert.match(err.message, /exited with status 3\ninstall the-plugin$/)
      return true
    },
  )
  assert.equal(Buffer.concat(errOut).toString(), 'no session\n', "the plugin's stderr is passed on")
  await assert.rejects(
    runExecPlugin(execConfig('/nonexistent/plugin', { command: '/nonexistent/plugin', args: [] }), {
      terminal: false,
      env: {},
    }),
    /executable not found/,
  )
})

test('a hung plugin times out and is killed', async (t) => {
  const dir = workdir(t)
  const script = plugin(dir, `setInterval(() => {}, 1000)`)
  const started = Date.now()
  await assert.rejects(
    runExecPlugin(execConfig(script), { terminal: false, env: {}, timeoutMs: 500 }),
    /did not answer within 1 s/,
  )
  assert.ok(Date.now() - started < 5000)
})

test('bad answers are refused with what is wrong', async (t) => {
  const dir = workdir(t)
  const cases: [string, RegExp][] = [
    [`process.stdout.write('not json')`, /invalid JSON/],
    [
      `print({ kind: 'Other', apiVersion: 'client.authentication.k8s.io/v1', status: { token: 't' } })`,
      /kind "Other"/,
    ],
    [
      `print({ kind: 'ExecCredential', apiVersion: 'client.authentication.k8s.io/v1beta1', status: { token: 't' } })`,
      /expects client.authentication.k8s.io\/v1/,
    ],
    [
      `print({ kind: 'ExecCredential', apiVersion: 'client.authentication.k8s.io/v1', status: {} })`,
      /neither a token nor a client certificate/,
    ],
    [
      `print({ kind: 'ExecCredential', apiVersion: 'client.authentication.k8s.io/v1', status: { clientCertificateData: 'C' } })`,
      /without its key/,
    ],
    [
      `print({ kind: 'ExecCredential', apiVersion: 'client.authentication.k8s.io/v1', status: { token: 't', expirationTimestamp: 'soon' } })`,
      /invalid expirationTimestamp/,
    ],
    [
      `print({ kind: 'ExecCredential', apiVersion: 'client.authentication.k8s.io/v1', status: { token: 't', expirationTimestamp: '2001-01-01T00:00:00Z' } })`,
      /expired at 2001-01-01T00:00:00.000Z/,
    ],
    [`process.stdout.write('x'.repeat(2 * 1024 * 1024))`, /more than 1048576 bytes/],
  ]
  for (const [body, re] of cases) {
    const script = plugin(dir, body)
    await assert.rejects(runExecPlugin(execConfig(script), { terminal: false, env: {} }), re)
  }
})

test('kubeconfig exec entries are checked as client-go checks them', (t) => {
  const dir = workdir(t)
  const resolve = (p: string): string => join(dir, p)
  assert.throws(
    () =>
      parseExecConfig(
        { apiVersion: 'client.authentication.k8s.io/v1', command: 'x' },
        'u',
        resolve,
      ),
    /interactiveMode is required/,
  )
  assert.throws(
    () =>
      parseExecConfig(
        { apiVersion: 'client.authentication.k8s.io/v1alpha1', command: 'x' },
        'u',
        resolve,
      ),
    /v1alpha1" is not supported/,
  )
  const beta = parseExecConfig(
    { apiVersion: 'client.authentication.k8s.io/v1beta1', command: './bin/plugin', args: ['a'] },
    'u',
    resolve,
  )
  assert.equal(beta.interactiveMode, 'IfAvailable')
  assert.equal(beta.command, join(dir, './bin/plugin'), 'a relative path is next to the kubeconfig')
  const bare = parseExecConfig(
    {
      apiVersion: 'client.authentication.k8s.io/v1',
      command: 'kubelogin',
      interactiveMode: 'Never',
    },
    'u',
    resolve,
  )
  assert.equal(bare.command, 'kubelogin', 'a bare name is looked up on PATH')

  const kc = join(dir, 'config')
  writeFileSync(
    kc,
    stringify({
      'current-context': 'c',
      clusters: [
        {
          name: 'c',
          cluster: {
            server: 'https://gw:1',
            extensions: [
              { name: 'client.authentication.k8s.io/exec', extension: { audience: 'x' } },
            ],
          },
        },
      ],
      users: [
        {
          name: 'u',
          user: {
            exec: {
              apiVersion: 'client.authentication.k8s.io/v1',
              command: 'p',
              interactiveMode: 'Never',
              provideClusterInfo: true,
            },
          },
        },
      ],
      contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }],
    }),
  )
  const cfg = loadClientConfig({ kubeconfig: kc }, {})
  assert.equal(cfg.exec?.command, 'p')
  assert.deepEqual(cfg.execCluster, { server: 'https://gw:1', config: { audience: 'x' } })
  assert.equal(cfg.token, undefined)
})

test('exec credentials: cached until due, refreshed early in the background, single-flight', async (t) => {
  const dir = workdir(t)
  let now = 1_000_000
  const script = plugin(
    dir,
    `print({ kind: 'ExecCredential', apiVersion: 'client.authentication.k8s.io/v1', status: { token: 'tok-' + runs, expirationTimestamp: new Date(${'Number(process.env.NOW)'} + 100_000).toISOString() } })`,
  )
  const warnings: string[] = []
  const env: NodeJS.ProcessEnv = { NOW: String(now) }
  const provider = new ExecCredentials({
    config: execConfig(script),
    env,
    terminal: false,
    warn: (m) => warnings.push(m),
    now: () => now,
  })
  // 50 streams at once: one run.
  const first = await Promise.all(Array.from({ length: 50 }, () => provider.get()))
  assert.ok(first.every((c) => c.token === 'tok-1'))
  assert.equal(runs(dir), 1)
  // Within the lifetime, before the margin (a fifth: 20 s): cached.
  now += 70_000
  assert.equal((await provider.get()).token, 'tok-1')
  assert.equal(runs(dir), 1)
  // Inside the margin: the old token is still used while the plugin runs once.
  now += 15_000
  env.NOW = String(now)
  const during = await Promise.all(Array.from({ length: 20 }, () => provider.get()))
  assert.ok(during.every((c) => c.token === 'tok-1'))
  let token = ''
  for (let i = 0; i < 200 && token !== 'tok-2'; i++) {
    await new Promise((r) => setTimeout(r, 20))
    token = (await provider.get()).token ?? ''
  }
  assert.equal(token, 'tok-2')
  assert.equal(runs(dir), 2)
  // A 401 for the current credential: one run, however many streams saw it.
  const cur = await provider.get()
  const again = await Promise.all(Array.from({ length: 10 }, () => provider.refresh(cur)))
  assert.ok(again.every((c) => c?.token === 'tok-3'))
  assert.equal(runs(dir), 3)
  assert.deepEqual(warnings, [])
  assert.equal(refreshMargin(0, 3_600_000), 300_000)
  assert.equal(refreshMargin(0, 2000), 1000)
})

test('exec credentials: a failure is told once and keeps a still-valid credential', async (t) => {
  const dir = workdir(t)
  let now = 5_000_000
  writeFileSync(join(dir, 'fail'), '')
  const script = plugin(
    dir,
    `if (runs > 1) { process.stderr.write('expired session\\n'); process.exit(1) }
print({ kind: 'ExecCredential', apiVersion: 'client.authentication.k8s.io/v1', status: { token: 'ok', expirationTimestamp: new Date(${now} + 10_000).toISOString() } })`,
  )
  const warnings: string[] = []
  const provider = new ExecCredentials({
    config: execConfig(script),
    env: {},
    terminal: false,
    stderr: { write: () => true } as never,
    warn: (m) => warnings.push(m),
    now: () => now,
  })
  assert.equal((await provider.get()).token, 'ok')
  now += 9000 // in the margin: the background refresh fails, the token is still good
  assert.equal((await provider.get()).token, 'ok')
  for (let i = 0; i < 200 && warnings.length === 0; i++) await new Promise((r) => setTimeout(r, 20))
  now += 500
  assert.equal((await provider.get()).token, 'ok')
  now += 2000 // expired, and the failure hold is over: the error surfaces
  await assert.rejects(provider.get(), /exited with status 1/)
  await assert.rejects(provider.get(), /exited with status 1/) // held: not run again
  assert.equal(warnings.length, 1, warnings.join('\n'))
  assert.match(warnings[0]!, /^error: exec plugin .* exited with status 1$/)
})

function fakeJwt(exp: number): string {
  const part = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url')
  return `${part({ alg: 'ES256' })}.${part({ sub: 'a', exp })}.sig`
}

test('a static token that has expired says so, once', async () => {
  const warnings: string[] = []
  const token = fakeJwt(1_700_000_000)
  assert.equal(jwtExpiry(token), 1_700_000_000_000)
  assert.equal(jwtExpiry('opaque-token'), undefined)
  const p = new StaticCredentials(
    { token },
    (m) => warnings.push(m),
    () => 1_800_000_000_000,
  )
  for (let i = 0; i < 5; i++) {
    await p.get()
    assert.equal(await p.refresh({ token }), undefined)
  }
  assert.deepEqual(warnings, ['token expired at 2023-11-14T22:13:20.000Z; log in again'])
  const fresh = new StaticCredentials(
    { token: fakeJwt(1_900_000_000) },
    (m) => warnings.push(m),
    () => 1_800_000_000_000,
  )
  await fresh.get()
  assert.equal(warnings.length, 1)
})

test('a token file is re-read when it changes, and at once after a 401', async (t) => {
  const dir = workdir(t)
  const file = join(dir, 'token')
  writeFileSync(file, 'one\n')
  let now = 0
  const p = new TokenFileCredentials(
    file,
    {},
    () => undefined,
    () => now,
  )
  assert.equal((await p.get()).token, 'one')
  // Replaced as the kubelet and most rotators do: a new file renamed over the old one.
  writeFileSync(join(dir, 'token.new'), 'two\n')
  renameSync(join(dir, 'token.new'), file)
  assert.equal((await p.get()).token, 'one', 'looked at no more than once a second')
  now += 1000
  assert.equal((await p.get()).token, 'two')
  writeFileSync(join(dir, 'token.new'), 'three')
  renameSync(join(dir, 'token.new'), file)
  assert.equal((await p.refresh({ token: 'two' }))?.token, 'three')
  assert.equal(await p.refresh({ token: 'three' }), undefined, 'unchanged: nothing fresh')
  rmSync(file)
  now += 1000
  await assert.rejects(p.get(), /cannot read token file/)
})
