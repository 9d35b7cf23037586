/**
 * The agent config's namespace sources: `dialer.namespaces: runtime` (the default: the
 * container runtime over CRI) takes no `pods[].netns`; `config` needs a uid with each.
 * And `pfgate dev --runtime` takes only containerd.
 *
 * @module
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseAgentConfig } from '../../src/agent/config.js'
import { main as devMain } from '../../src/dev/main.js'

const base = {
  nodeName: 'node-a',
  tls: { cert: 'a.crt', key: 'a.key', clientCa: 'ca.crt' },
}

test('netns dialer defaults: namespaces from the runtime, containerd then CRI-O sockets', () => {
  const c = parseAgentConfig({ ...base, dialer: { type: 'netns' } }, 'agent.yaml', '/etc/pfgate')
  assert.equal(c.dialer.namespaces, 'runtime')
  assert.equal(c.runtime.endpoint, undefined)
  assert.equal(c.runtime.timeoutMs, 2000)
  const e = parseAgentConfig(
    {
      ...base,
      dialer: { type: 'netns' },
      runtime: { endpoint: 'unix:///run/k3s/containerd/containerd.sock', timeout: '500ms' },
    },
    'agent.yaml',
    '/etc/pfgate',
  )
  assert.equal(e.runtime.endpoint, 'unix:///run/k3s/containerd/containerd.sock')
  assert.equal(e.runtime.timeoutMs, 500)
  assert.throws(
    () =>
      parseAgentConfig({ ...base, runtime: { endpoint: 'tcp://1.2.3.4:1' } }, 'agent.yaml', '/'),
    /runtime\.endpoint/,
  )
})

test('a pod netns in the config is refused unless namespaces come from the config, and needs a uid', () => {
  const pod = { namespace: 'default', name: 'echo', netns: 'pfgate-echo' }
  assert.throws(
    () => parseAgentConfig({ ...base, dialer: { type: 'netns' }, pods: [pod] }, 'agent.yaml', '/'),
    /pods\[0\]\.netns: only read with dialer\.type netns and dialer\.namespaces config/,
  )
  assert.throws(
    () =>
      parseAgentConfig(
        { ...base, dialer: { type: 'netns', namespaces: 'config' }, pods: [pod] },
        'agent.yaml',
        '/',
      ),
    /pods\[0\]: a uid is required with netns/,
  )
  const ok = parseAgentConfig(
    { ...base, dialer: { type: 'netns', namespaces: 'config' }, pods: [{ ...pod, uid: 'u-1' }] },
    'agent.yaml',
    '/',
  )
  assert.equal(ok.pods[0]?.uid, 'u-1')
})

test('pfgate dev --runtime takes only containerd', async () => {
  const writes: string[] = []
  const orig = process.stderr.write.bind(process.stderr)
  process.stderr.write = (chunk: string) => {
    writes.push(String(chunk))
    return true
  }
  try {
    assert.equal(await devMain(['--runtime', 'docker']), 2)
  } finally {
    process.stderr.write = orig
  }
  assert.match(writes.join(''), /--runtime "docker": only containerd/)
})

test('reverse mode: the gateway address (host:port, IPv6 in brackets), defaults, listen: null only with it', () => {
  const c = parseAgentConfig(
    { ...base, listen: null, reverse: { gateway: 'pfgate-agents.pfgate.svc:8132' } },
    'agent.yaml',
    '/etc/pfgate',
  )
  assert.equal(c.listen, null)
  assert.deepEqual(
    [c.reverse?.host, c.reverse?.port, c.reverse?.keepaliveMs, c.reverse?.backoffInitialMs],
    ['pfgate-agents.pfgate.svc', 8132, 15_000, 200],
  )
  assert.equal(c.reverse?.backoffMaxMs, 15_000)
  const v6 = parseAgentConfig({ ...base, reverse: { gateway: '[fd00::1]:8132' } }, 'a.yaml', '/')
  assert.equal(v6.reverse?.host, 'fd00::1')
  assert.equal(parseAgentConfig(base, 'a.yaml', '/').reverse, null, 'dial-in by default')
  for (const gateway of ['no-port', 'host:', 'a b:1', 'host:99999', 'https://x:1']) {
    assert.throws(
      () => parseAgentConfig({ ...base, reverse: { gateway } }, 'a.yaml', '/'),
      /reverse/,
      gateway,
    )
  }
  assert.throws(() => parseAgentConfig({ ...base, listen: null }, 'a.yaml', '/'), /reverse/)
  assert.throws(
    () =>
      parseAgentConfig(
        { ...base, reverse: { gateway: 'x:1', backoffInitial: '2s', backoffMax: '1s' } },
        'a.yaml',
        '/',
      ),
    /backoff/,
  )
})
