/**
 * Credential loading for the Kubernetes registry: kubeconfig files (contexts,
 * inline data and relative paths, refused auth kinds), the in-cluster
 * service-account files, and the periodically re-read token file.
 *
 * @module
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  BearerTokenSource,
  loadInClusterCredentials,
  loadKubeconfigCredentials,
} from '../../../src/gateway/registry/kube-credentials.js'
import { isAppError } from '../../../src/shared/errors.js'

let tmp: string
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'pfgate-kcreds-'))
})
after(() => rmSync(tmp, { recursive: true, force: true }))

const b64 = (s: string): string => Buffer.from(s).toString('base64')

function write(name: string, text: string): string {
  const path = join(tmp, name)
  writeFileSync(path, text)
  return path
}

function configInvalid(pattern: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(isAppError(err), String(err))
    assert.equal(err.code, 'PFG_ERR_CONFIG_INVALID')
    assert.match(err.message, pattern)
    return true
  }
}

describe('kubeconfig', () => {
  test('current context with inline data; a named context with relative files', () => {
    mkdirSync(join(tmp, 'certs'), { recursive: true })
    write('certs/ca.pem', 'CA-FILE')
    write('certs/client.pem', 'CERT-FILE')
    write('certs/client.key', 'KEY-FILE')
    write('certs/token', 'tok\n')
    const path = write(
      'kubeconfig',
      `apiVersion: v1
kind: Config
current-context: inline
clusters:
- name: c1
  cluster:
    server: https://api.example:6443/prefix/
    certificate-authority-data: ${b64('CA-DATA')}
    tls-server-name: kubernetes.default
- name: c2
  cluster:
    server: https://10.0.0.1
    certificate-authority: certs/ca.pem
contexts:
- name: inline
  context: {cluster: c1, user: u1, namespace: dev}
- name: files
  context: {cluster: c2, user: u2}
users:
- name: u1
  user:
    client-certificate-data: ${b64('CERT-DATA')}
    client-key-data: ${b64('KEY-DATA')}
- name: u2
  user:
    token: static
    tokenFile: certs/token
`,
    )
    const inline = loadKubeconfigCredentials(path)
    assert.equal(inline.server, 'https://api.example:6443/prefix')
    assert.equal(inline.ca?.toString(), 'CA-DATA')
    assert.equal(inline.cert?.toString(), 'CERT-DATA')
    assert.equal(inline.key?.toString(), 'KEY-DATA')
    assert.equal(inline.tlsServerName, 'kubernetes.default')
    assert.equal(inline.namespace, 'dev')
    assert.equal(inline.insecureSkipTlsVerify, false)
    assert.equal(inline.token, undefined)
    assert.match(inline.source, /context inline/)

    const files = loadKubeconfigCredentials(path, 'files')
    assert.equal(files.server, 'https://10.0.0.1')
    assert.equal(files.ca?.toString(), 'CA-FILE')
    assert.equal(files.token, 'static')
    assert.equal(files.tokenFile, join(tmp, 'certs/token'))
    assert.equal(files.cert, undefined)
  })

  const bad: [string, string, RegExp, string?][] = [
    ['no current context', 'clusters: []\ncontexts: []\n', /no current-context/],
    ['unknown context', 'current-context: x\ncontexts: []\n', /no context named "x"/],
    [
      'unknown cluster',
      'current-context: a\ncontexts: [{name: a, context: {cluster: nope}}]\n',
      /no cluster named "nope"/,
    ],
    [
      'no server',
      'current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{name: c, cluster: {}}]\n',
      /has no server/,
    ],
    [
      'insecure with a CA',
      `current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: "https://x", insecure-skip-tls-verify: true, certificate-authority-data: ${b64('x')}}}]\n`,
      /exclusive/,
    ],
    [
      'exec plugin',
      'current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: "https://x"}}]\nusers: [{name: u, user: {exec: {command: aws}}}]\n',
      /uses "exec", which pfgate does not support/,
    ],
    [
      'certificate without key',
      `current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: "https://x"}}]\nusers: [{name: u, user: {client-certificate-data: ${b64('c')}}}]\n`,
      /must come together/,
    ],
    [
      'missing CA file',
      'current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: "https://x", certificate-authority: missing.pem}}]\n',
      /cannot read .*certificate-authority .*missing\.pem/,
    ],
    ['not YAML', 'a: [\n', /invalid YAML/],
  ]
  for (const [name, text, pattern] of bad) {
    test(`refuses: ${name}`, () => {
      const path = write(`bad-${name.replaceAll(' ', '-')}`, text)
      assert.throws(() => loadKubeconfigCredentials(path), configInvalid(pattern))
    })
  }

  test('refuses a missing file', () => {
    assert.throws(
      () => loadKubeconfigCredentials(join(tmp, 'nope')),
      configInvalid(/cannot read kubeconfig/),
    )
  })
})

describe('in-cluster', () => {
  test('reads the service-account files and the service environment', () => {
    const dir = join(tmp, 'sa')
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, 'token'), 'sa-token\n')
    writeFileSync(join(dir, 'ca.crt'), 'CA')
    writeFileSync(join(dir, 'namespace'), 'pfgate')
    const c = loadInClusterCredentials({
      serviceAccountDir: dir,
      env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' },
    })
    assert.equal(c.server, 'https://10.96.0.1:443')
    assert.equal(c.tokenFile, join(dir, 'token'))
    assert.equal(c.token, undefined)
    assert.equal(c.ca?.toString(), 'CA')
    assert.equal(c.namespace, 'pfgate')
    const v6 = loadInClusterCredentials({
      serviceAccountDir: dir,
      env: { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' },
    })
    assert.equal(v6.server, 'https://[fd00::1]:443')
  })

  test('outside a pod: a clear error', () => {
    assert.throws(
      () => loadInClusterCredentials({ serviceAccountDir: tmp, env: {} }),
      configInvalid(/KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set/),
    )
    assert.throws(
      () =>
        loadInClusterCredentials({
          serviceAccountDir: join(tmp, 'absent'),
          env: { KUBERNETES_SERVICE_HOST: 'h', KUBERNETES_SERVICE_PORT: '1' },
        }),
      configInvalid(/cannot read service-account token/),
    )
  })
})

describe('BearerTokenSource', () => {
  test('a static token', async () => {
    assert.equal(await new BearerTokenSource({ token: 't' }).get(), 't')
    assert.equal(await new BearerTokenSource({}).get(), undefined)
  })

  test('a token file is re-read after the refresh period, or at once after invalidate()', async () => {
    const file = write('rotating-token', 'one\n')
    let now = 0
    const src = new BearerTokenSource({ tokenFile: file, refreshMs: 1000, now: () => now })
    assert.equal(await src.get(), 'one')
    writeFileSync(file, 'two')
    now = 999
    assert.equal(await src.get(), 'one', 'cached within the period')
    now = 1000
    assert.equal(await src.get(), 'two', 're-read after the period')
    writeFileSync(file, 'three')
    src.invalidate()
    assert.equal(await src.get(), 'three', 're-read after invalidate')
    // Mid-rotation the file may be missing or empty: keep the last good token.
    rmSync(file)
    now = 5000
    assert.equal(await src.get(), 'three')
    writeFileSync(file, '')
    now = 10_000
    assert.equal(await src.get(), 'three')
  })

  test('a token file that was never readable is an error', async () => {
    const src = new BearerTokenSource({ tokenFile: join(tmp, 'no-token') })
    await assert.rejects(src.get(), configInvalid(/cannot read token file/))
  })
})
