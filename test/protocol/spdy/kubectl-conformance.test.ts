/**
 * Conformance with the real clients: kubectl 1.33 (SPDY tunneled in WebSocket, and
 * its fallback to plain SPDY), kubectl 1.28 and kubectl 1.20 (plain SPDY), each
 * port-forwarding through test/helpers/kube-protocol-server.ts (our session and
 * port-forward layer) to a local TCP echo server. A missing kubectl fails the test.
 *
 * Binaries: $PFGATE_KUBECTL_1_33 / _1_28 / _1_20, else the gcloud bundle
 * (/usr/lib/google-cloud-sdk/bin/kubectl.1.NN) and /opt/kubectl-1.20.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { accessSync, constants } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { startKubeProtocolServer, writeKubeconfig } from '../../helpers/kube-protocol-server.js'
import type { KubeProtocolServer } from '../../helpers/kube-protocol-server.js'

const KUBECTL: Record<string, { env: string; paths: string[] }> = {
  '1.33': {
    env: 'PFGATE_KUBECTL_1_33',
    paths: ['/usr/lib/google-cloud-sdk/bin/kubectl.1.33'],
  },
  '1.28': {
    env: 'PFGATE_KUBECTL_1_28',
    paths: ['/usr/lib/google-cloud-sdk/bin/kubectl.1.28'],
  },
  '1.20': { env: 'PFGATE_KUBECTL_1_20', paths: ['/opt/kubectl-1.20/usr/bin/kubectl'] },
}

/** Finds a kubectl build, or throws a message saying what is missing (never skips). */
function kubectl(version: string): string {
  const spec = KUBECTL[version]!
  const candidates = [process.env[spec.env], ...spec.paths].filter(
    (p): p is string => p !== undefined && p !== '',
  )
  for (const p of candidates) {
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {
      // try the next one
    }
  }
  throw new Error(
    `kubectl ${version} not found: set ${spec.env} or install it at ${spec.paths.join(' or ')}`,
  )
}

let dir: string
const echoed: { received: string; bytes: number }[] = []
let echoServer: net.Server
let echoPort: number
const children = new Set<ChildProcess>()
const servers = new Set<KubeProtocolServer>()

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pfgate-kubectl-'))
  // The "pod": echoes everything, honours half-close, and hashes what it received.
  echoServer = net.createServer({ allowHalfOpen: true }, (sock) => {
    const h = createHash('sha256')
    let bytes = 0
    sock.on('data', (d: Buffer) => {
      h.update(d)
      bytes += d.length
    })
    sock.on('end', () => echoed.push({ received: h.digest('hex'), bytes }))
    sock.on('error', () => {})
    sock.pipe(sock)
  })
  echoServer.listen(0, '127.0.0.1')
  await once(echoServer, 'listening')
  echoPort = (echoServer.address() as net.AddressInfo).port
})

after(async () => {
  for (const c of children) c.kill('SIGKILL')
  for (const s of servers) await s.close()
  echoServer.close()
  await rm(dir, { recursive: true, force: true })
})

interface Forwarder {
  proc: ChildProcess
  local: Map<number, number>
  stderr: () => string
  exit: Promise<number | null>
}

async function startServer(name: string, tunnel = true): Promise<KubeProtocolServer> {
  const server = await startKubeProtocolServer({
    dir: join(dir, name),
    targets: { 5000: echoPort },
    tunnel,
    token: 'test-token',
  })
  servers.add(server)
  return server
}

/** Runs `kubectl port-forward pod/demo :5000 [:5001]` and waits for its "Forwarding from" lines. */
async function portForward(
  bin: string,
  server: KubeProtocolServer,
  name: string,
  remotePorts: number[],
): Promise<Forwarder> {
  const home = join(dir, name)
  const kubeconfig = await writeKubeconfig(home, server)
  const proc = spawn(
    bin,
    ['--kubeconfig', kubeconfig, 'port-forward', 'pod/demo', ...remotePorts.map((p) => `:${p}`)],
    { env: { HOME: home, PATH: process.env.PATH ?? '/usr/bin:/bin' }, stdio: 'pipe' },
  )
  children.add(proc)
  let out = ''
  let err = ''
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const exit = new Promise<number | null>((resolve) =>
    proc.on('exit', (code) => {
      children.delete(proc)
      resolve(code)
    }),
  )
  const local = new Map<number, number>()
  const deadline = Date.now() + 30_000
  while (local.size < remotePorts.length) {
    for (const m of out.matchAll(/Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)/g)) {
      local.set(Number(m[2]), Number(m[1]))
    }
    if (proc.exitCode !== null || Date.now() > deadline) {
      throw new Error(`kubectl did not start forwarding.\nstdout: ${out}\nstderr: ${err}`)
    }
    await sleep(20)
  }
  return { proc, local, stderr: () => err, exit }
}

/** Sends `size` random bytes through a local port, half-closes, reads the echo to EOF. */
async function transfer(
  localPort: number,
  size: number,
): Promise<{ sent: string; got: string; gotBytes: number }> {
  const data = randomBytes(size)
  const sock = net.connect(localPort, '127.0.0.1')
  await once(sock, 'connect')
  const h = createHash('sha256')
  let gotBytes = 0
  sock.on('data', (d: Buffer) => {
    h.update(d)
    gotBytes += d.length
  })
  const ended = once(sock, 'end')
  sock.end(data)
  await ended
  sock.destroy()
  return { sent: createHash('sha256').update(data).digest('hex'), got: h.digest('hex'), gotBytes }
}

/** Checks what went through both ways: client→pod (the echo server's hash) and back. */
function assertEchoed(r: { sent: string; got: string; gotBytes: number }, size: number): void {
  assert.equal(r.gotBytes, size)
  assert.equal(r.got, r.sent, 'pod→client bytes differ')
  assert.ok(
    echoed.some((e) => e.received === r.sent && e.bytes === size),
    'client→pod bytes differ (echo server never saw them)',
  )
}

/** Connects to a forwarded port whose pod port refuses, and waits for kubectl to close it. */
async function refusedConnection(localPort: number): Promise<void> {
  const sock = net.connect(localPort, '127.0.0.1')
  // kubectl may close with a reset (we wrote bytes it never read): not a failure here.
  sock.on('error', () => {})
  const closed = new Promise((resolve) => sock.once('close', resolve))
  await once(sock, 'connect')
  sock.write('hello?')
  sock.resume()
  await closed
}

const MiB = 1024 * 1024

test('kubectl 1.33: SPDY tunneled in WebSocket, several MiB both ways, concurrent connections', async (t) => {
  const bin = kubectl('1.33')
  const server = await startServer('k133')
  const pf = await portForward(bin, server, 'k133', [5000])
  const local = pf.local.get(5000)!
  const started = performance.now()
  const results = await Promise.all([transfer(local, 4 * MiB + 1), transfer(local, 3 * MiB)])
  const ms = performance.now() - started
  assertEchoed(results[0], 4 * MiB + 1)
  assertEchoed(results[1], 3 * MiB)
  assertEchoed(await transfer(local, 1), 1)
  assertEchoed(await transfer(local, 0), 0)
  t.diagnostic(`kubectl 1.33 tunnel: 14 MiB echoed over two connections in ${ms.toFixed(0)} ms`)
  assert.deepEqual(
    server.upgrades.map((u) => u.protocol),
    ['ws-spdy'],
  )
  assert.equal(server.upgrades[0]!.authorization, 'Bearer test-token')
  assert.equal(server.upgrades[0]!.method, 'GET')
  assert.deepEqual(server.issues, [])
  pf.proc.kill('SIGINT')
  assert.equal(await pf.exit, 0)
  // The session ends cleanly when kubectl goes away.
  const deadline = Date.now() + 5000
  while (server.sessions.size > 0 && Date.now() < deadline) await sleep(20)
  assert.equal(server.sessions.size, 0)
  assert.deepEqual(server.sessionEnds, [undefined])
})

test('kubectl 1.33: a refused pod port ends the session with kubectl\u2019s error', async () => {
  const bin = kubectl('1.33')
  const server = await startServer('k133-refused')
  const pf = await portForward(bin, server, 'k133-refused', [5000, 5001])
  assertEchoed(await transfer(pf.local.get(5000)!, 256 * 1024), 256 * 1024)
  await refusedConnection(pf.local.get(5001)!)
  // kubectl ≥ 1.23 treats error-stream text as fatal for the whole session
  // (docs/kubernetes-protocols.md#the-error-stream).
  assert.equal(await pf.exit, 1)
  assert.match(
    pf.stderr(),
    /an error occurred forwarding \d+ -> 5001: error forwarding port 5001 to pod demo, uid : connect ECONNREFUSED/,
  )
  assert.match(pf.stderr(), /lost connection to pod/)
  assert.ok(server.forwards.some((f) => f.port === 5001 && f.outcome === 'failed'))
})

test('kubectl 1.33 falls back to plain SPDY when the tunnel is refused', async () => {
  const bin = kubectl('1.33')
  const server = await startServer('k133-fallback', false)
  const pf = await portForward(bin, server, 'k133-fallback', [5000])
  assertEchoed(await transfer(pf.local.get(5000)!, 4 * MiB), 4 * MiB)
  assert.deepEqual(
    server.upgrades.map((u) => `${u.method} ${u.protocol}`),
    ['GET refused', 'POST spdy'],
  )
  pf.proc.kill('SIGINT')
  assert.equal(await pf.exit, 0)
})

test('kubectl 1.28: plain SPDY upgrade, several MiB both ways, refused port is fatal', async () => {
  const bin = kubectl('1.28')
  const server = await startServer('k128')
  const pf = await portForward(bin, server, 'k128', [5000, 5001])
  const results = await Promise.all([
    transfer(pf.local.get(5000)!, 4 * MiB),
    transfer(pf.local.get(5000)!, 2 * MiB + 5),
  ])
  assertEchoed(results[0], 4 * MiB)
  assertEchoed(results[1], 2 * MiB + 5)
  assert.deepEqual(
    server.upgrades.map((u) => `${u.method} ${u.protocol}`),
    ['POST spdy'],
  )
  await refusedConnection(pf.local.get(5001)!)
  assert.equal(await pf.exit, 1)
  assert.match(pf.stderr(), /an error occurred forwarding \d+ -> 5001: error forwarding port 5001/)
})

test('kubectl 1.20: plain SPDY, no pings; a refused port is logged and the session goes on', async () => {
  const bin = kubectl('1.20')
  const server = await startServer('k120')
  const pf = await portForward(bin, server, 'k120', [5000, 5001])
  assertEchoed(await transfer(pf.local.get(5000)!, 4 * MiB), 4 * MiB)
  assert.deepEqual(
    server.upgrades.map((u) => `${u.method} ${u.protocol}`),
    ['POST spdy'],
  )
  assert.match(server.upgrades[0]!.userAgent ?? '', /^kubectl\/v1\.20/)
  await refusedConnection(pf.local.get(5001)!)
  const deadline = Date.now() + 5000
  while (!/an error occurred forwarding/.test(pf.stderr()) && Date.now() < deadline) {
    await sleep(20)
  }
  assert.match(pf.stderr(), /an error occurred forwarding \d+ -> 5001: error forwarding port 5001/)
  // 1.20 keeps the session: the next connection still works.
  assert.equal(pf.proc.exitCode, null)
  assertEchoed(await transfer(pf.local.get(5000)!, 2 * MiB), 2 * MiB)
  pf.proc.kill('SIGINT')
  await pf.exit
})
