import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { kubeconfigFiles, loadClientConfig } from '../../src/cli/kubeconfig.js'

function kc(dir: string, name: string, doc: object): string {
  const p = join(dir, name)
  writeFileSync(p, stringify(doc))
  return p
}

const base = (server: string, token: string, ns?: string): object => ({
  apiVersion: 'v1',
  kind: 'Config',
  'current-context': 'ctx',
  clusters: [
    {
      name: 'c',
      cluster: { server, 'certificate-authority-data': Buffer.from('CA-PEM').toString('base64') },
    },
  ],
  users: [{ name: 'u', user: { token } }],
  contexts: [
    {
      name: 'ctx',
      context: { cluster: 'c', user: 'u', ...(ns !== undefined ? { namespace: ns } : {}) },
    },
  ],
})

test('current context: server, CA, token, namespace', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kc-'))
  t.after(() => rmSync(dir, { recursive: true }))
  const p = kc(dir, 'config', base('https://gw:8443', 'tok-1', 'team'))
  const c = loadClientConfig({}, { KUBECONFIG: p })
  assert.equal(c.server, 'https://gw:8443')
  assert.equal(c.token, 'tok-1')
  assert.equal(c.namespace, 'team')
  assert.equal(c.ca?.toString(), 'CA-PEM')
  assert.equal(c.insecureSkipTlsVerify, false)
})

test('KUBECONFIG lists merge: the first file to define a name or current-context wins', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kc-'))
  t.after(() => rmSync(dir, { recursive: true }))
  const a = kc(dir, 'a', { users: [{ name: 'u', user: { token: 'from-a' } }] })
  const b = kc(dir, 'b', base('https://b:1', 'from-b'))
  const c = loadClientConfig({}, { KUBECONFIG: `${a}:${join(dir, 'missing')}:${b}` })
  assert.equal(c.token, 'from-a')
  assert.equal(c.server, 'https://b:1')
  assert.equal(c.namespace, 'default')
  assert.deepEqual(kubeconfigFiles({ KUBECONFIG: `${a}::${b}` }), [a, b])
})

test('flags override the kubeconfig; --context selects another context', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kc-'))
  t.after(() => rmSync(dir, { recursive: true }))
  const doc = base('https://one:1', 'tok') as { contexts: object[]; clusters: object[] }
  doc.clusters.push({
    name: 'c2',
    cluster: { server: 'https://two:2', 'insecure-skip-tls-verify': true },
  })
  doc.contexts.push({ name: 'other', context: { cluster: 'c2', user: 'u', namespace: 'x' } })
  const p = kc(dir, 'config', doc)
  const c = loadClientConfig({ kubeconfig: p, context: 'other', token: 'flag', namespace: 'y' }, {})
  assert.equal(c.server, 'https://two:2')
  assert.equal(c.insecureSkipTlsVerify, true)
  assert.equal(c.token, 'flag')
  assert.equal(c.namespace, 'y')
  const s = loadClientConfig({ kubeconfig: p, server: 'https://three:3' }, {})
  assert.equal(s.server, 'https://three:3')
  assert.equal(s.ca, undefined, "the kubeconfig's CA belongs to its own server")
})

test('tokenFile and client certificate files resolve relative to the kubeconfig', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kc-'))
  t.after(() => rmSync(dir, { recursive: true }))
  writeFileSync(join(dir, 'token'), 'file-token\n')
  writeFileSync(join(dir, 'c.crt'), 'CERT')
  writeFileSync(join(dir, 'c.key'), 'KEY')
  const doc = base('https://gw:1', 'x') as { users: object[] }
  doc.users = [
    {
      name: 'u',
      user: { tokenFile: 'token', 'client-certificate': 'c.crt', 'client-key': 'c.key' },
    },
  ]
  const c = loadClientConfig({}, { KUBECONFIG: kc(dir, 'config', doc) })
  assert.equal(c.token, 'file-token')
  assert.equal(c.cert?.toString(), 'CERT')
  assert.equal(c.key?.toString(), 'KEY')
})

test('clear errors: no kubeconfig, unknown context, plain http, exec plugins', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kc-'))
  t.after(() => rmSync(dir, { recursive: true }))
  assert.throws(() => loadClientConfig({}, { HOME: dir }), {
    code: 'PFG_ERR_CLI_KUBECONFIG',
    message: /no kubeconfig found/,
  })
  const p = kc(dir, 'config', base('https://gw:1', 't'))
  assert.throws(
    () => loadClientConfig({ kubeconfig: p, context: 'nope' }, {}),
    /context "nope" does not exist/,
  )
  assert.throws(() => loadClientConfig({ kubeconfig: join(dir, 'missing') }, {}), /does not exist/)
  assert.throws(
    () => loadClientConfig({ kubeconfig: p, server: 'http://gw:1' }, {}),
    /must use https/,
  )
  const e = base('https://gw:1', 't') as { users: object[] }
  e.users = [{ name: 'u', user: { exec: { command: 'x' } } }]
  assert.throws(
    () => loadClientConfig({ kubeconfig: kc(dir, 'exec', e) }, {}),
    /exec plugin apiVersion undefined is not supported/,
  )
  e.users = [{ name: 'u', user: { 'auth-provider': { name: 'oidc' } } }]
  assert.throws(
    () => loadClientConfig({ kubeconfig: kc(dir, 'auth-provider', e) }, {}),
    /uses an auth-provider plugin, which pfgate does not run/,
  )
})
