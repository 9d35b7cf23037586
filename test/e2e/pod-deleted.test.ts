/**
 * A pod deleted while connections are in flight (issue 11, item 8): the pod serves HTTP
 * requests in its own network namespace; between two requests on one connection it is
 * killed, its namespace deleted and its registry entry removed. Through the pfgate CLI,
 * kubectl 1.33 (WebSocket) and kubectl 1.32 over SPDY, five times each:
 *   - the open connection ends (EOF or reset) as soon as the pod's end reaches the
 *     client, never after the client's own timeout;
 *   - a new connection to the deleted pod fails at once (closed without a response);
 *   - every stream the gateway opened has its close record.
 * Needs root, `ip` and `nsenter` (CI runs as root: these run, never skip).
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Socket } from 'node:net'
import { startTestCluster } from '../helpers/cluster.js'
import { parseForwarding, runCli } from '../helpers/cli.js'
import {
  gatewayGet,
  readAudit,
  startKubectlForward,
  updateRegistry,
} from '../helpers/kube-clients.js'
import type { RegistryPod } from '../helpers/kube-clients.js'
import { dial, eventually } from '../helpers/net.js'
import { netnsUnavailable } from '../../src/dev/cluster.js'
import type { DevCluster } from '../../src/dev/cluster.js'

const why = netnsUnavailable()
if (why !== undefined) throw new Error(`pod-deletion tests need root, ip and nsenter: ${why}`)

/** How long an ending may take to reach the client (the clients gave up at 10 s). */
const PROMPT_MS = 4_000
const ROUNDS = 5

let cluster: DevCluster & { cleanup(): Promise<void> }
let home: string
let webEntry: RegistryPod
let webDeleted = false

before(async () => {
  cluster = await startTestCluster({}, { netns: true })
  home = mkdtempSync(join(tmpdir(), 'pfgate-i11-home-'))
  updateRegistry(cluster.dir, (pods) => {
    webEntry = pods.find((p) => p.name === 'web') as RegistryPod
    return pods
  })
})
after(async () => {
  await cluster?.cleanup()
  if (home !== undefined) rmSync(home, { recursive: true, force: true })
})

/** A client connection that remembers whether it ended, from the moment it is watched. */
interface Watched {
  socket: Socket
  ended: Promise<void>
  received: string
}

function watch(socket: Socket): Watched {
  const w: Watched = { socket, received: '', ended: Promise.resolve() }
  w.ended = new Promise<void>((resolve) => {
    socket.once('end', () => resolve())
    socket.once('close', () => resolve())
    socket.once('error', () => resolve())
  })
  socket.on('data', (d: Buffer) => (w.received += d.toString()))
  return w
}

/** Resolves once the connection ended or closed (then destroys it); rejects after `ms`. */
async function endedWithin(w: Watched, ms: number, what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      w.ended,
      new Promise((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new Error(
                `${what}: still open after ${ms} ms (received ${JSON.stringify(w.received)})`,
              ),
            ),
          ms,
        )
      }),
    ])
  } finally {
    clearTimeout(timer)
    w.socket.destroy()
  }
}

/** One HTTP request on an open socket; resolves with the response once its body is in. */
function request(w: Watched, path: string): Promise<string> {
  const s = w.socket
  const from = w.received.length
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no response to ${path}: ${w.received.slice(from)}`)),
      10_000,
    )
    s.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    const onData = (): void => {
      const got = w.received.slice(from)
      if (/hello from web: POST/.test(got) && got.endsWith('\n')) {
        clearTimeout(timer)
        s.off('data', onData)
        resolve(got)
      }
    }
    s.on('data', onData)
    s.write(`POST ${path} HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\n\r\nhi`)
  })
}

/** The web pod back: a fresh namespace, its process, its registry entry. */
async function restoreWeb(): Promise<void> {
  const ns = cluster.podNetns?.web as string
  try {
    execFileSync('ip', ['netns', 'add', ns], { stdio: 'ignore' })
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up'], { stdio: 'ignore' })
  } catch {
    // still there
  }
  if (webDeleted) await cluster.restart('pod:web')
  webDeleted = false
  updateRegistry(cluster.dir, (pods) =>
    pods.some((p) => p.name === 'web') ? pods : [...pods, webEntry],
  )
  await eventually(
    async () =>
      (
        await gatewayGet(
          cluster.gatewayUrl,
          cluster.dir,
          '/api/v1/namespaces/default/pods/web',
          cluster.token,
        )
      ).status === 200,
    10_000,
    'the gateway to serve the web pod again',
  )
}

/** Kills the web pod the way a node does when the pod is deleted. */
async function deleteWeb(): Promise<void> {
  webDeleted = true
  await cluster.kill('pod:web', 'SIGKILL', false)
  execFileSync('ip', ['netns', 'del', cluster.podNetns?.web as string], { stdio: 'ignore' })
  updateRegistry(cluster.dir, (pods) => pods.filter((p) => p.name !== 'web'))
}

/** One round against a forwarded local port. */
async function round(port: number, label: string): Promise<void> {
  const s = watch(await dial(port))
  assert.match(await request(s, '/one'), /200 OK/, `${label}: the first request`)
  const mark = s.received.length
  await deleteWeb()
  const t0 = Date.now()
  await endedWithin(s, PROMPT_MS, `${label}: the connection to the deleted pod`)
  assert.equal(s.received.slice(mark), '', `${label}: nothing more from the pod`)
  const sock2 = await dial(port).catch(() => undefined)
  if (sock2 !== undefined) {
    const s2 = watch(sock2)
    sock2.write('POST /two HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\n\r\nhi')
    await endedWithin(s2, PROMPT_MS, `${label}: a new connection to the deleted pod`)
    assert.ok(!/200 OK/.test(s2.received), `${label}: no answer from a deleted pod`)
  }
  assert.ok(Date.now() - t0 < 2 * PROMPT_MS)
}

/**
 * Every stream.opened for the web pod has its close: a stream.closed, or the stream.failed
 * of a dial that failed while its open record was written (docs/audit.md).
 */
async function everyStreamClosed(label: string): Promise<void> {
  await eventually(
    () => {
      const recs = readAudit(cluster.dir).filter((r) => r.pod === 'web')
      const closed = new Set(
        recs
          .filter((r) => r.type === 'stream.closed' || r.type === 'stream.failed')
          .map((r) => r.streamId),
      )
      return recs.filter((r) => r.type === 'stream.opened').every((r) => closed.has(r.streamId))
    },
    10_000,
    `${label}: a close record for every stream of the deleted pod`,
  )
}

test('pfgate port-forward: a deleted pod ends its connections at once, five times', async () => {
  for (let i = 0; i < ROUNDS; i++) {
    await restoreWeb()
    const cli = runCli(['port-forward', '--quiet', 'web', ':8080'], {
      KUBECONFIG: cluster.kubeconfig,
      HOME: cluster.dir,
    })
    try {
      const [fwd] = parseForwarding(await cli.waitForLines(2))
      await eventually(async () => {
        const s = watch(await dial(fwd?.port as number))
        return request(s, '/ready').then(
          () => (s.socket.destroy(), true),
          () => (s.socket.destroy(), false),
        )
      }, 15_000)
      await round(fwd?.port as number, `cli round ${i}`)
      assert.equal(cli.proc.exitCode, null, 'the CLI keeps listening')
    } finally {
      await cli.stop()
    }
    await everyStreamClosed(`cli round ${i}`)
  }
})

for (const [version, env] of [
  ['1.33', {}],
  ['1.32', { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' }],
] as const) {
  test(`kubectl ${version}${version === '1.32' ? ' over SPDY' : ''}: the same, five times`, async () => {
    for (let i = 0; i < ROUNDS; i++) {
      await restoreWeb()
      await eventually(async () => {
        const probe = await startKubectlForward(version, ['web', ':8080'], 1, {
          kubeconfig: cluster.kubeconfig,
          home,
          env,
        }).catch(() => undefined)
        if (probe === undefined) return false
        const s = watch(await dial(probe.local[0]?.port as number))
        const ok = await request(s, '/ready').then(
          () => true,
          () => false,
        )
        s.socket.destroy()
        await probe.stop()
        return ok
      }, 20_000)
      const fwd = await startKubectlForward(version, ['web', ':8080'], 1, {
        kubeconfig: cluster.kubeconfig,
        home,
        env,
      })
      try {
        await round(fwd.local[0]?.port as number, `kubectl ${version} round ${i}`)
      } finally {
        await fwd.stop()
      }
      await everyStreamClosed(`kubectl ${version} round ${i}`)
    }
  })
}

test('a pod that resets every connection at once: each client connection ends, each stream is recorded', async () => {
  await restoreWeb()
  const ns = cluster.podNetns?.web as string
  // Accepts and resets at once: the reset races the gateway's open of the stream.
  const rst = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      process.execPath,
      '-e',
      `require('net').createServer(s=>s.resetAndDestroy()).listen(7100,'127.0.0.1',()=>console.log('up'))`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  try {
    await new Promise((resolve) => rst.stdout.once('data', resolve))
    const clients: [string, () => Promise<{ port: number; stop: () => Promise<unknown> }>][] = [
      [
        'cli',
        async () => {
          const cli = runCli(['port-forward', '--quiet', 'web', ':7100'], {
            KUBECONFIG: cluster.kubeconfig,
            HOME: cluster.dir,
          })
          const [fwd] = parseForwarding(await cli.waitForLines(2))
          return { port: fwd?.port as number, stop: () => cli.stop() }
        },
      ],
      ...(['1.33', '1.32'] as const).map(
        (v) =>
          [
            `kubectl ${v}`,
            async () => {
              const f = await startKubectlForward(v, ['web', ':7100'], 1, {
                kubeconfig: cluster.kubeconfig,
                home,
                env: v === '1.32' ? { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' } : {},
              })
              return { port: f.local[0]?.port as number, stop: () => f.stop() }
            },
          ] as [string, () => Promise<{ port: number; stop: () => Promise<unknown> }>],
      ),
    ]
    for (const [label, start] of clients) {
      const fwd = await start()
      try {
        for (let i = 0; i < 10; i++) {
          const sock = await dial(fwd.port).catch(() => undefined)
          if (sock === undefined) break // kubectl may give up the port after a pod error
          const w = watch(sock)
          sock.write('hello')
          await endedWithin(w, PROMPT_MS, `${label} connection ${i} to a resetting pod`)
        }
      } finally {
        await fwd.stop()
      }
    }
    await eventually(
      () => {
        const recs = readAudit(cluster.dir).filter((r) => r.pod === 'web' && r.port === 7100)
        const closed = new Set(
          recs
            .filter((r) => r.type === 'stream.closed' || r.type === 'stream.failed')
            .map((r) => r.streamId),
        )
        return recs.filter((r) => r.type === 'stream.opened').every((r) => closed.has(r.streamId))
      },
      10_000,
      'a close record for every stream to the resetting pod',
    )
  } finally {
    rst.kill()
  }
})
