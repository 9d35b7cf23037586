/**
 * A real agent process (`pfgate agent`) and its stop signals: the first SIGTERM starts the
 * bounded drain, and a second signal during the drain (Ctrl-C of `npm start` delivers SIGINT
 * and SIGTERM) is logged and ignored instead of killing the agent the default way; the open
 * stream keeps carrying bytes until it ends, then the agent exits 0.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:http2'
import type { ClientHttp2Session } from 'node:http2'
import { createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PFGATE_BIN } from '../../src/dev/cluster.js'
import { createCa, issueCert } from '../../src/dev/pki.js'
import type { CertKeyPair } from '../../src/dev/pki.js'
import { GATEWAY_IDENTITY_CN, GATEWAY_IDENTITY_URI } from '../../src/protocol/constants.js'

let dir: string
let ca: CertKeyPair
let gatewayCert: CertKeyPair
let pod: Server
const podSockets = new Set<Socket>()
let agent: ChildProcess | undefined
let session: ClientHttp2Session | undefined

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pfgate-i13c-agent-signals-'))
  ca = await createCa('agent signals test CA')
  gatewayCert = await issueCert(ca, {
    commonName: GATEWAY_IDENTITY_CN,
    uris: [GATEWAY_IDENTITY_URI],
    serverAuth: false,
    clientAuth: true,
  })
  const serving = await issueCert(ca, { commonName: 'node-sig', ipAddresses: ['127.0.0.1'] })
  writeFileSync(join(dir, 'ca.crt'), ca.cert)
  writeFileSync(join(dir, 'agent.crt'), serving.cert)
  writeFileSync(join(dir, 'agent.key'), serving.key)
  pod = createServer({ allowHalfOpen: true }, (s) => {
    podSockets.add(s)
    s.on('close', () => podSockets.delete(s))
    s.on('error', () => undefined)
    s.pipe(s)
  })
  await new Promise<void>((r) => pod.listen(0, '127.0.0.1', r))
  const config = {
    nodeName: 'node-sig',
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: 'agent.crt', key: 'agent.key', clientCa: 'ca.crt' },
    allowedClients: [GATEWAY_IDENTITY_URI],
    dialer: { type: 'static' },
    pods: [
      {
        namespace: 'default',
        name: 'echo',
        host: '127.0.0.1',
        ports: { '5000': (pod.address() as AddressInfo).port },
      },
    ],
    shutdownGrace: '20s',
    logLevel: 'info',
  }
  writeFileSync(join(dir, 'agent.yaml'), JSON.stringify(config))
})

after(async () => {
  session?.destroy()
  if (agent !== undefined && agent.exitCode === null && agent.signalCode === null) {
    agent.kill('SIGKILL')
  }
  for (const s of podSockets) s.destroy()
  await new Promise((r) => pod.close(r))
  rmSync(dir, { recursive: true, force: true })
})

test('a second signal during the drain is ignored; the open stream finishes; exit 0', async () => {
  const p = fork(PFGATE_BIN, ['agent', '--config', join(dir, 'agent.yaml')], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  })
  agent = p
  let log = ''
  p.stdout?.on('data', (d: Buffer) => (log += d.toString()))
  p.stderr?.on('data', (d: Buffer) => (log += d.toString()))
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    p.once('exit', (code, signal) => resolve({ code, signal })),
  )
  const port = await new Promise<number>((resolve, reject) => {
    p.on('message', (m: { type?: string; port?: number }) => {
      if (m.type === 'listening' && m.port !== undefined) resolve(m.port)
    })
    p.once('exit', () => reject(new Error(`agent exited early: ${log}`)))
  })

  const s = connect(`https://127.0.0.1:${port}`, {
    ca: ca.cert,
    cert: gatewayCert.cert,
    key: gatewayCert.key,
  })
  session = s
  s.on('error', () => undefined)
  const req = s.request(
    { ':method': 'POST', ':path': '/portForward/default/echo', port: '5000' },
    { endStream: false },
  )
  req.on('error', () => undefined)
  const status = await new Promise<number>((resolve) =>
    req.once('response', (h) => resolve(Number(h[':status']))),
  )
  assert.equal(status, 200)
  const echo = async (text: string): Promise<string> => {
    req.write(text)
    return new Promise((resolve) => req.once('data', (d: Buffer) => resolve(d.toString())))
  }
  assert.equal(await echo('before'), 'before')

  p.kill('SIGTERM')
  await waitFor(() => log.includes('agent stopping'), 'the drain to start', log)
  p.kill('SIGINT')
  await waitFor(() => log.includes('already stopping'), 'the second signal to be logged', log)
  // Still draining: alive, and the stream still carries bytes.
  await new Promise((r) => setTimeout(r, 200))
  assert.equal(p.exitCode, null)
  assert.equal(p.signalCode, null)
  assert.equal(await echo('during the drain'), 'during the drain')

  req.end()
  assert.deepEqual(await exited, { code: 0, signal: null })
  assert.match(log, /agent stopped/)
})

async function waitFor(cond: () => boolean, what: string, log: string): Promise<void> {
  const deadline = Date.now() + 10_000
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}: ${log}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
