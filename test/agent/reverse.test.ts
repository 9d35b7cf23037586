/**
 * Reverse mode on loopback with real TLS and HTTP/2: the agent dials the gateway's
 * agent endpoint, the gateway opens forwarded streams over the connection the agent
 * opened (the agent pool finds it by node name), the agent reconnects after the
 * gateway drops it, and keeps one connection per replica when two replicas share one
 * address (a TCP round-robin in front, as a load balancer). Refusals: an agent whose
 * certificate is not issued for the node it names, a certificate from another CA, and
 * an "endpoint" that is not the gateway.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { connect as netConnect, createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import { createAgentServer } from '../../src/agent/app.js'
import type { AgentServer } from '../../src/agent/app.js'
import { ReverseConnector } from '../../src/agent/reverse-connector.js'
import type { ReverseConfig } from '../../src/agent/config.js'
import { StaticDialer } from '../../src/agent/static-dialer.js'
import { createCa, issueCert } from '../../src/dev/pki.js'
import type { CertKeyPair } from '../../src/dev/pki.js'
import { AgentPool } from '../../src/gateway/relay/agent-pool.js'
import { ReverseAgents } from '../../src/gateway/relay/reverse-agents.js'
import { GATEWAY_IDENTITY_CN, GATEWAY_IDENTITY_URI } from '../../src/protocol/constants.js'
import { silentLogger } from '../../src/shared/log.js'
import { rejectsWith, waitFor } from '../helpers/netns.js'

let ca: CertKeyPair
let otherCa: CertKeyPair
let gatewayCert: CertKeyPair
let agentCert: CertKeyPair
let pod: Server
const cleanups: (() => Promise<void> | void)[] = []

before(async () => {
  ca = await createCa('pfgate reverse test CA')
  otherCa = await createCa('another CA')
  gatewayCert = await issueCert(ca, {
    commonName: GATEWAY_IDENTITY_CN,
    uris: [GATEWAY_IDENTITY_URI],
    clientAuth: true,
  })
  agentCert = await issueCert(ca, {
    commonName: 'pfgate-agent-node-r',
    dnsNames: ['node-r'],
    clientAuth: true,
  })
  pod = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined)
    s.pipe(s)
  })
  await new Promise<void>((r) => pod.listen(0, '127.0.0.1', r))
})

after(async () => {
  for (const c of cleanups.reverse()) await c()
  await new Promise<void>((r) => pod.close(() => r()))
})

function agentServer(nodeName: string, cert: CertKeyPair): AgentServer {
  return createAgentServer({
    nodeName,
    tls: { cert: cert.cert, key: cert.key, clientCa: ca.cert },
    allowedClients: [GATEWAY_IDENTITY_URI],
    dialer: new StaticDialer([
      {
        namespace: 'default',
        name: 'echo',
        host: '127.0.0.1',
        ports: { '5000': (pod.address() as AddressInfo).port },
      },
    ]),
    connectTimeoutMs: 2000,
    logger: silentLogger(),
  })
}

async function endpoint(
  replicaId: string,
  replicas = 1,
): Promise<ReverseAgents & { port: number }> {
  const r = new ReverseAgents({
    replicaId,
    replicas,
    tls: { cert: gatewayCert.cert, key: gatewayCert.key, ca: ca.cert },
    keepaliveMs: 1000,
    handshakeTimeoutMs: 3000,
    logger: silentLogger(),
  })
  const { port } = await r.listen(0, '127.0.0.1')
  cleanups.push(() => r.close(true))
  return Object.assign(r, { port })
}

function reverseConfig(port: number): ReverseConfig {
  return {
    host: '127.0.0.1',
    port,
    serverName: undefined,
    keepaliveMs: 1000,
    backoffInitialMs: 20,
    backoffMaxMs: 200,
    resyncMs: 60_000,
  }
}

function connector(
  agent: AgentServer,
  port: number,
  cert: CertKeyPair,
  trust = ca.cert,
): ReverseConnector {
  const c = new ReverseConnector({
    agent,
    config: reverseConfig(port),
    tls: { cert: cert.cert, key: cert.key, ca: trust },
    allowedServers: [GATEWAY_IDENTITY_URI],
    logger: silentLogger(),
  })
  c.start()
  cleanups.push(async () => {
    await c.close()
    await agent.close(0)
  })
  return c
}

function pool(reverse: ReverseAgents): AgentPool {
  const p = new AgentPool({
    ca: ca.cert,
    cert: gatewayCert.cert,
    key: gatewayCert.key,
    connectTimeoutMs: 1000,
    keepaliveMs: 0,
    logger: silentLogger(),
    reverse,
    reverseOnly: true,
  })
  cleanups.push(() => p.close(true))
  return p
}

// An address nothing listens on: the pool must never dial it in reverse-only mode.
const NODE = { name: 'node-r', address: '127.0.0.1', port: 9, tlsServerName: 'node-r' }

async function echoThrough(p: AgentPool, payload: Buffer): Promise<Buffer> {
  const stream = await p
    .get(NODE)
    .open('/portForward/default/echo', { port: '5000' }, { timeoutMs: 3000 })
  const chunks: Buffer[] = []
  stream.on('data', (c: Buffer) => chunks.push(c))
  await new Promise<void>((resolve, reject) => {
    stream.once('end', resolve)
    stream.once('error', reject)
    stream.end(payload)
  })
  return Buffer.concat(chunks)
}

test('the gateway opens streams over the connection the agent dialed, and the agent reconnects', async () => {
  const gw = await endpoint('replica-1')
  const p = pool(gw)
  // Before the agent connects: a clear 502, no dial to the registry's address.
  const msg = await rejectsWith(
    p.get(NODE).open('/portForward/default/echo', { port: '5000' }, { timeoutMs: 1000 }),
    'PFG_ERR_RELAY_AGENT_UNAVAILABLE',
  )
  assert.match(msg, /not connected to this gateway replica/)
  const agent = agentServer('node-r', agentCert)
  const c = connector(agent, gw.port, agentCert)
  await waitFor(() => gw.session('node-r') !== undefined, 5000, 'the agent to connect')
  assert.deepEqual(
    gw.list().map((a) => a.node),
    ['node-r'],
  )
  const payload = Buffer.alloc(3 * 1024 * 1024, 7)
  const back = await echoThrough(p, payload)
  assert.equal(back.length, payload.length)
  assert.ok(back.equals(payload))
  // The gateway drops the agent's session: the agent dials again (backoff ms, not s).
  const first = gw.session('node-r')
  first?.destroy()
  await waitFor(
    () => gw.session('node-r') !== undefined && gw.session('node-r') !== first,
    5000,
    'the agent to reconnect',
  )
  assert.equal(c.links().length, 1)
  assert.equal((await echoThrough(p, Buffer.from('again'))).toString(), 'again')
})

test('two replicas behind one address: the agent holds one connection to each', async () => {
  const a = await endpoint('replica-a', 2)
  const b = await endpoint('replica-b', 2)
  // A TCP round-robin to both, like a load balancer in TCP mode.
  let next = 0
  const lb = createServer((client: Socket) => {
    const port = next++ % 2 === 0 ? a.port : b.port
    const upstream = netConnect(port, '127.0.0.1')
    client.pipe(upstream).pipe(client)
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
  })
  await new Promise<void>((r) => lb.listen(0, '127.0.0.1', r))
  cleanups.push(() => new Promise<void>((r) => lb.close(() => r())))
  const lbPort = (lb.address() as AddressInfo).port
  const agent = agentServer('node-r', agentCert)
  const c = connector(agent, lbPort, agentCert)
  await waitFor(
    () => a.session('node-r') !== undefined && b.session('node-r') !== undefined,
    5000,
    'the agent on both replicas',
  )
  assert.equal(c.target, 2)
  assert.deepEqual(
    c
      .links()
      .map((l) => l.replicaId)
      .sort(),
    ['replica-a', 'replica-b'],
  )
  for (const r of [a, b]) {
    assert.equal((await echoThrough(pool(r), Buffer.from('hi'))).toString(), 'hi')
  }
  // More dials only land on replicas it holds: still one link each.
  await new Promise((r) => setTimeout(r, 200))
  assert.equal(c.links().length, 2)
})

test('an agent certificate not issued for the node it names is refused', async () => {
  const gw = await endpoint('replica-x')
  // A valid agent certificate for node-r, but the agent says it is node-s.
  const agent = agentServer('node-s', agentCert)
  connector(agent, gw.port, agentCert)
  await new Promise((r) => setTimeout(r, 500))
  assert.equal(gw.session('node-s'), undefined)
  assert.equal(gw.session('node-r'), undefined)
  assert.equal(gw.size, 0)
})

test('a client certificate from another CA fails the handshake; an endpoint that is not the gateway is not served', async () => {
  const gw = await endpoint('replica-y')
  const foreign = await issueCert(otherCa, {
    commonName: 'pfgate-agent-node-r',
    dnsNames: ['node-r'],
    clientAuth: true,
  })
  connector(agentServer('node-r', foreign), gw.port, foreign)
  await new Promise((r) => setTimeout(r, 400))
  assert.equal(gw.size, 0)
  // An endpoint with a certificate from the agent's CA but another identity: the agent
  // does not serve it (it would otherwise open streams into the node).
  const impostorCert = await issueCert(ca, { commonName: 'not-the-gateway', dnsNames: ['x'] })
  const impostor = new ReverseAgents({
    replicaId: 'impostor',
    replicas: 1,
    tls: { cert: impostorCert.cert, key: impostorCert.key, ca: ca.cert },
    keepaliveMs: 0,
    handshakeTimeoutMs: 3000,
    logger: silentLogger(),
  })
  const { port } = await impostor.listen(0, '127.0.0.1')
  cleanups.push(() => impostor.close(true))
  const c = connector(agentServer('node-r', agentCert), port, agentCert)
  await new Promise((r) => setTimeout(r, 400))
  assert.equal(impostor.size, 0)
  assert.equal(c.links().length, 0)
})
