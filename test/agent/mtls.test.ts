/**
 * The gateway→agent hop is mutual TLS, and the agent serves only the gateway: a real
 * agent server on loopback, real certificates from two CAs, real HTTP/2 clients. A client
 * certificate from another CA (even one carrying the gateway's names) and no client
 * certificate fail the handshake; a certificate from the right CA with another identity
 * gets 403; no refused client ever reaches the pod. The other way round, the gateway's
 * agent pool refuses an "agent" whose certificate another CA issued.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:http2'
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2'
import { createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import { createAgentServer } from '../../src/agent/app.js'
import type { AgentServer } from '../../src/agent/app.js'
import { StaticDialer } from '../../src/agent/static-dialer.js'
import { createCa, issueCert } from '../../src/dev/pki.js'
import type { CertKeyPair } from '../../src/dev/pki.js'
import { AgentPool } from '../../src/gateway/relay/agent-pool.js'
import { GATEWAY_IDENTITY_CN, GATEWAY_IDENTITY_URI } from '../../src/protocol/constants.js'
import { isAppError } from '../../src/shared/errors.js'
import { silentLogger } from '../../src/shared/log.js'

let ca: CertKeyPair
let otherCa: CertKeyPair
let gatewayCert: CertKeyPair
let forgedGatewayCert: CertKeyPair
let intruderCert: CertKeyPair
let agent: AgentServer
let agentPort: number
let pod: Server
let podConnections = 0
const podSockets = new Set<Socket>()

before(async () => {
  ca = await createCa('pfgate test CA')
  otherCa = await createCa('some other CA')
  const gatewayIdentity = {
    commonName: GATEWAY_IDENTITY_CN,
    uris: [GATEWAY_IDENTITY_URI],
    serverAuth: false,
    clientAuth: true,
  }
  gatewayCert = await issueCert(ca, gatewayIdentity)
  // Another CA issues a certificate with exactly the gateway's names.
  forgedGatewayCert = await issueCert(otherCa, gatewayIdentity)
  // The right CA, another identity (e.g. a stolen agent serving certificate's CA).
  intruderCert = await issueCert(ca, {
    commonName: 'pfgate-agent-node-x',
    uris: ['spiffe://pfgate.local/agent/node-x'],
    clientAuth: true,
  })
  const serving = await issueCert(ca, {
    commonName: 'pfgate-agent-node-t',
    dnsNames: ['node-t'],
    ipAddresses: ['127.0.0.1'],
  })
  pod = createServer({ allowHalfOpen: true }, (s) => {
    podConnections++
    podSockets.add(s)
    s.on('close', () => podSockets.delete(s))
    s.on('error', () => undefined)
    s.pipe(s)
  })
  await new Promise<void>((r) => pod.listen(0, '127.0.0.1', r))
  agent = createAgentServer({
    nodeName: 'node-t',
    tls: { cert: serving.cert, key: serving.key, clientCa: ca.cert },
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
  agentPort = (await agent.listen(0, '127.0.0.1')).port
  agent.server.on('tlsClientError', (err: NodeJS.ErrnoException) =>
    refused.push(err.code ?? err.message),
  )
  agent.server.on('session', () => sessionsAccepted++)
})

after(async () => {
  await agent?.close(0)
  for (const s of podSockets) s.destroy()
  await new Promise((r) => pod?.close(r))
})

/** Connects with `client` (or no) certificate. */
function dialAgent(client: CertKeyPair | undefined): ClientHttp2Session {
  const session = connect(`https://127.0.0.1:${agentPort}`, {
    ca: ca.cert,
    servername: 'node-t',
    ...(client !== undefined ? { cert: client.cert, key: client.key } : {}),
  })
  session.on('error', () => undefined)
  return session
}

/** Opens a port-forward stream and collects the answer, or how it failed. */
function portForward(
  session: ClientHttp2Session,
  body: string,
): Promise<{ status: number; body: string; error?: string }> {
  return new Promise((resolve) => {
    let status = 0
    const chunks: Buffer[] = []
    let error: string | undefined
    let req: ClientHttp2Stream
    try {
      req = session.request({
        ':method': 'POST',
        ':path': '/portForward/default/echo',
        port: '5000',
      })
    } catch (err) {
      resolve({ status, body: '', error: (err as Error).message })
      return
    }
    req.on('response', (h) => (status = Number(h[':status'])))
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message))
    // 'close' comes last whatever happened (end, reset, session gone).
    req.on('close', () =>
      resolve({
        status,
        body: Buffer.concat(chunks).toString(),
        ...(error !== undefined ? { error } : {}),
      }),
    )
    req.end(body)
  })
}

/** TLS handshakes the agent refused, and sessions it accepted, since the last call. */
const refused: string[] = []
let sessionsAccepted = 0

test('the gateway certificate: streams and health are served', async () => {
  const session = dialAgent(gatewayCert)
  try {
    const before = podConnections
    assert.deepEqual(await portForward(session, 'hello pod'), { status: 200, body: 'hello pod' })
    assert.equal(podConnections, before + 1)
  } finally {
    session.close()
  }
})

for (const [what, cert, serverSaw] of [
  [
    'a client certificate from another CA (with the gateway’s own names)',
    () => forgedGatewayCert,
    // Node verifies the chain after the TLS 1.3 handshake and drops the socket at once.
    /ECONNRESET|UNKNOWN_CA|CERTIFICATE_VERIFY_FAILED|unable to verify/i,
  ],
  ['no client certificate', () => undefined, /PEER_DID_NOT_RETURN_A_CERTIFICATE/],
] as const) {
  test(`${what}: the agent drops the connection in TLS; no stream, no pod connection`, async () => {
    const before = podConnections
    const sessions = sessionsAccepted
    refused.length = 0
    const session = dialAgent(cert())
    const r = await portForward(session, 'let me in')
    session.destroy()
    assert.equal(r.status, 0, `no response at all, got ${JSON.stringify(r)}`)
    assert.equal(r.body, '')
    assert.equal(refused.length, 1, 'the agent refused one TLS handshake')
    assert.match(refused[0] ?? '', serverSaw)
    assert.equal(sessionsAccepted, sessions, 'no HTTP/2 session was ever accepted')
    assert.equal(podConnections, before, 'the pod was never dialled')
  })
}

test('a certificate from the right CA but not the gateway’s identity: 403, no pod connection', async () => {
  const before = podConnections
  const session = dialAgent(intruderCert)
  try {
    const r = await portForward(session, 'let me in')
    assert.equal(r.status, 403)
    const status = JSON.parse(r.body) as { kind: string; details: { causes: { reason: string }[] } }
    assert.equal(status.kind, 'Status')
    assert.equal(status.details.causes[0]?.reason, 'PFG_ERR_AGENT_FORBIDDEN')
    assert.equal(podConnections, before)
  } finally {
    session.destroy()
  }
})

test('the gateway refuses an agent whose certificate another CA issued', async () => {
  // A pool that trusts only `otherCa` sees the real agent as an impostor.
  const pool = new AgentPool({
    ca: otherCa.cert,
    cert: gatewayCert.cert,
    key: gatewayCert.key,
    connectTimeoutMs: 2000,
    keepaliveMs: 0,
    logger: silentLogger(),
  })
  const before = podConnections
  try {
    const err = await pool
      .get({ name: 'node-t', address: '127.0.0.1', port: agentPort, tlsServerName: 'node-t' })
      .open('/portForward/default/echo', { port: '5000' }, { timeoutMs: 2000 })
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    assert.ok(isAppError(err) && err.code === 'PFG_ERR_RELAY_AGENT_UNAVAILABLE', String(err))
    assert.match(err.message, /certificate|self-signed|issuer/i)
    assert.equal(podConnections, before)
  } finally {
    pool.close(true)
  }
})
