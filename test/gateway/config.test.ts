import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { loadGatewayConfig, parseGatewayConfig } from '../../src/gateway/config.js'
import type { GatewayConfig } from '../../src/gateway/config.js'
import { parseDuration, parseSize, readYamlFile } from '../../src/shared/config.js'
import { loadAgentConfig, parseAgentConfig } from '../../src/agent/config.js'

const root = fileURLToPath(new URL('../../../', import.meta.url))

test('the example configs validate, with defaults applied and paths resolved', () => {
  const g = loadGatewayConfig(`${root}config/gateway.yaml`)
  assert.equal(g.listen.port, 8443)
  assert.equal(g.audit.mode, 'blocking-strict')
  assert.equal(g.auth.clockToleranceS, 60)
  assert.deepEqual(g.authorization.rules[0]?.ports, [{ from: 1, to: 65535 }])
  assert.equal(g.limits.unauthenticatedStreams, 100)
  assert.equal(g.limits.connectionsPerSource, 32)
  assert.equal(g.limits.requestTimeoutMs, 30_000)
  assert.equal(g.limits.handshakeTimeoutMs, 10_000)
  assert.equal(g.limits.clientKeepaliveMs, 30_000)
  assert.equal(g.limits.bufferBudgetBytes, 256 * 1024 * 1024)
  assert.ok(Object.isFrozen(g))
  const a = loadAgentConfig(`${root}config/agent-node-a.yaml`)
  assert.equal(a.nodeName, 'node-a')
  assert.equal(a.dialer.connectTimeoutMs, 5000)
  assert.equal(
    loadAgentConfig(`${root}config/agent-node-a.yaml`, { nodeName: 'n9' }).nodeName,
    'n9',
  )
})

test('every problem is listed at once, by path', () => {
  assert.throws(
    () =>
      parseGatewayConfig(
        {
          tls: { cert: 'a' },
          agents: { ca: 'c', cert: 'd', key: 'e' },
          registry: { source: 'static' },
          auth: { issuer: 'i', audience: 'a', jwks: {}, algorithms: ['HS256'] },
          authorization: { rules: [{ namespaces: ['default'] }] },
          limits: { idleTimeout: 'soon' },
          bogus: 1,
        },
        'gw.yaml',
        '/tmp',
      ),
    (err: Error) => {
      for (const part of [
        'gw.yaml: invalid configuration',
        'unknown field "bogus"',
        'tls: missing required field "key"',
        'registry: missing required field "file"',
        'auth.algorithms.0: must be one of',
        'authorization.rules.0',
      ]) {
        assert.ok(err.message.includes(part), `missing ${JSON.stringify(part)} in:\n${err.message}`)
      }
      return (err as Error & { code?: string }).code === 'PFG_ERR_CONFIG_INVALID'
    },
  )
})

test('HMAC and none are not in the algorithm allow-list', () => {
  for (const alg of ['HS256', 'HS512', 'none']) {
    assert.throws(
      () =>
        parseGatewayConfig(
          {
            tls: { cert: 'a', key: 'b' },
            agents: { ca: 'c', cert: 'd', key: 'e' },
            registry: { source: 'static', file: 'r' },
            auth: { issuer: 'i', audience: 'a', jwks: { file: 'j' }, algorithms: [alg] },
          },
          'x',
          '/',
        ),
      { code: 'PFG_ERR_CONFIG_INVALID' },
    )
  }
})

test('agent config: bad port map and dialer type are reported', () => {
  assert.throws(
    () =>
      parseAgentConfig(
        {
          nodeName: 'n',
          tls: { cert: 'a', key: 'b', clientCa: 'c' },
          dialer: { type: 'magic' },
          pods: [{ namespace: 'd', name: 'p', ports: { '0': 1, '80': 70000 } }],
        },
        'agent.yaml',
        '/',
      ),
    (err: Error) =>
      /dialer.type: must be one of/.test(err.message) && /pods.0.ports/.test(err.message),
  )
})

/** The least a gateway config must say. */
const MINIMAL = {
  tls: { cert: 'a', key: 'b' },
  agents: { ca: 'c', cert: 'd', key: 'e' },
  registry: { source: 'static', file: 'r.yaml' },
  auth: { issuer: 'i', audience: 'a', jwks: { file: 'j' } },
}

test('audit: the denial flood budget and the denials trail have defaults, and are checked', () => {
  const base = MINIMAL
  const g = parseGatewayConfig(base, 'gw.yaml', '/etc/pfgate')
  assert.deepEqual(g.audit.denials, {
    rate: 1,
    burst: 20,
    totalRate: 50,
    totalBurst: 200,
    summaryIntervalMs: 10_000,
  })
  const file = g.audit.sinks[0]
  assert.ok(file?.type === 'file')
  assert.equal(file.path, '/etc/pfgate/audit/audit.log')
  assert.deepEqual([file.denialsMaxSizeBytes, file.denialsMaxFiles], [100 * 1024 * 1024, 5])
  const custom = parseGatewayConfig(
    {
      ...base,
      audit: {
        denials: { rate: 0.5, burst: 5, summaryInterval: '1m' },
        sinks: [{ type: 'file', path: 'a.log', denialsMaxSize: '1MiB', denialsMaxFiles: 2 }],
      },
    },
    'gw.yaml',
    '/x',
  )
  assert.equal(custom.audit.denials.rate, 0.5)
  assert.equal(custom.audit.denials.summaryIntervalMs, 60_000)
  assert.throws(
    () =>
      parseGatewayConfig(
        { ...base, audit: { denials: { rate: 0, burst: 0, bogus: 1 } } },
        'gw.yaml',
        '/x',
      ),
    (err: Error) =>
      /audit\.denials\.rate/.test(err.message) &&
      /audit\.denials\.burst/.test(err.message) &&
      /bogus/.test(err.message),
  )
})

/** config/gateway.yaml with another `audit` section. */
function withAudit(audit: unknown): GatewayConfig {
  const base = readYamlFile(`${root}config/gateway.yaml`) as Record<string, unknown>
  return parseGatewayConfig({ ...base, audit }, 'gw.yaml', '/srv/pfgate')
}

test('docs/audit.md gives each audit sink key the default the config applies', () => {
  const g = withAudit({
    sinks: [
      { type: 'file', path: 'a.log' },
      { type: 'webhook', url: 'https://collector.example', spoolDir: 'spool' },
    ],
  })
  const [file, webhook] = g.audit.sinks
  assert.ok(file?.type === 'file' && webhook?.type === 'webhook')
  // What the gateway applies, by the key an operator writes.
  const applied: Record<string, Record<string, string | number>> = {
    file: {
      fsync: file.fsync,
      fsyncInterval: file.fsyncIntervalMs,
      maxSize: file.maxSizeBytes,
      maxFiles: file.maxFiles,
      denialsMaxSize: file.denialsMaxSizeBytes,
      denialsMaxFiles: file.denialsMaxFiles,
    },
    webhook: {
      batchSize: webhook.batchSize,
      timeout: webhook.timeoutMs,
      maxSpoolSize: webhook.maxSpoolBytes,
    },
  }
  const doc = readFileSync(`${root}docs/audit.md`, 'utf8')
  const documented: Record<string, Record<string, string | number>> = { file: {}, webhook: {} }
  for (const m of doc.matchAll(/^\| `(file|webhook)` +\| `(\w+)` +\| `([^`]+)` +\|/gm)) {
    const [, sink, key, text] = m as unknown as [string, 'file' | 'webhook', string, string]
    const value = /Interval$|^timeout$/.test(key)
      ? parseDuration(text)
      : /Size$/.test(key)
        ? parseSize(text)
        : /^\d+$/.test(text)
          ? Number(text)
          : text
    documented[sink]![key] = value
  }
  assert.deepEqual(documented, applied)
})

test('maxFiles 0 (keep no rotated file) is accepted; a webhook flushInterval, which did nothing, is not', () => {
  const sinks = (s: unknown): unknown => ({ sinks: [s] })
  const g = withAudit(sinks({ type: 'file', path: 'a.log', maxFiles: 0 }))
  assert.equal(g.audit.sinks[0]?.type === 'file' && g.audit.sinks[0].maxFiles, 0)
  assert.throws(() => withAudit(sinks({ type: 'file', path: 'a.log', maxFiles: -1 })), /maxFiles/)
  assert.throws(
    () =>
      withAudit(
        sinks({ type: 'webhook', url: 'https://c.example', spoolDir: 's', flushInterval: '1s' }),
      ),
    /unknown field "flushInterval"/,
  )
})

test('a request deadline shorter than the stream-open timeout is refused, with the reason', () => {
  const base = MINIMAL
  assert.throws(
    () =>
      parseGatewayConfig(
        {
          ...base,
          limits: { streamOpenTimeout: '20s', requestTimeout: '10s', bufferBudget: '1MiB' },
        },
        'gw.yaml',
        '/tmp',
      ),
    (err: Error) => {
      assert.match(
        err.message,
        /limits\.requestTimeout \(10000 ms\) must be longer than limits\.streamOpenTimeout/,
      )
      assert.match(err.message, /limits\.bufferBudget must be at least 16MiB/)
      return (err as Error & { code?: string }).code === 'PFG_ERR_CONFIG_INVALID'
    },
  )
})

test('agents.mode and the agent endpoint; peers', () => {
  const g = loadGatewayConfig(`${root}config/gateway.yaml`)
  assert.equal(g.agents.mode, 'dial')
  assert.equal(g.agents.reverse, null, 'no agent endpoint in dial mode')
  assert.deepEqual(g.peers?.urls, ['https://gateway:8443', 'https://gateway-2:8443'])
  assert.equal(g.peers?.timeoutMs, 3000)
  const raw = readYamlFile(`${root}config/gateway.yaml`) as Record<string, unknown>
  const agents = raw.agents as Record<string, unknown>
  const r = parseGatewayConfig(
    { ...raw, agents: { ...agents, mode: 'reverse', reverse: { replicas: 3 } }, peers: null },
    'gateway.yaml',
    '/etc/pfgate',
  )
  assert.equal(r.peers, null)
  assert.deepEqual(
    [r.agents.reverse?.port, r.agents.reverse?.replicas, r.agents.reverse?.readyMinAgents],
    [8132, 3, 1],
  )
  // The endpoint's certificate defaults to the agent-hop one.
  assert.equal(r.agents.reverse?.cert, r.agents.cert)
  assert.throws(
    () =>
      parseGatewayConfig(
        { ...raw, agents: { ...agents, mode: 'sideways' } },
        'gateway.yaml',
        '/etc/pfgate',
      ),
    /agents\/mode|agents\.mode/,
  )
  assert.throws(
    () => parseGatewayConfig({ ...raw, peers: { urls: ['http://x:1'] } }, 'gateway.yaml', '/etc'),
    /peers/,
  )
})
