/**
 * End to end through CLI → gateway → agent → pod, all real processes over real
 * TLS and TCP (the dev cluster on free ports): the seed's examples, bulk data with
 * half-close, concurrency on one connection, every error path, an agent killed
 * mid-transfer, a stalled reader beside a bulk stream, and SIGINT cleanup.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { connect as netConnect } from 'node:net'
import { startTestCluster } from '../helpers/cluster.js'
import { parseForwarding, runCli, runCliToEnd } from '../helpers/cli.js'
import { dial, echoRoundTrip, eventually, isRefused } from '../helpers/net.js'
import { connectGateway, h2Request } from '../helpers/h2.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import { RELAY_NODE_FLAGS } from '../../src/shared/node-flags.js'

let cluster: DevCluster & { cleanup(): Promise<void> }
let env: NodeJS.ProcessEnv

async function adminGet<T>(path: string): Promise<T> {
  const s = await connectGateway(cluster.gatewayUrl, cluster.dir)
  try {
    const r = await h2Request(s, {
      ':method': 'GET',
      ':path': path,
      authorization: `Bearer ${cluster.token}`,
    })
    assert.equal(r.status, 200, r.body)
    return JSON.parse(r.body) as T
  } finally {
    s.close()
  }
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? 0)
}

before(async () => {
  cluster = await startTestCluster()
  env = { KUBECONFIG: cluster.kubeconfig, HOME: cluster.dir }
})
after(async () => {
  await cluster?.cleanup()
})

describe('the seed examples print exactly the seed output', () => {
  test('port-forward echo 5000 6000', async (t) => {
    const cli = runCli(['port-forward', 'echo', '5000', '6000'], env)
    t.after(() => cli.stop())
    const lines = await cli.waitForLines(4)
    assert.deepEqual(lines, [
      'Forwarding from 127.0.0.1:5000 -> 5000',
      'Forwarding from [::1]:5000 -> 5000',
      'Forwarding from 127.0.0.1:6000 -> 6000',
      'Forwarding from [::1]:6000 -> 6000',
    ])
    for (const [port, host] of [
      [5000, '127.0.0.1'],
      [5000, '::1'],
      [6000, '127.0.0.1'],
      [6000, '::1'],
    ] as const) {
      const r = await echoRoundTrip(port, 64 * 1024, host)
      assert.equal(r.received, r.sent, `echo through ${host}:${port}`)
    }
    assert.equal(await cli.stop(), 0)
  })

  test('port-forward echo 8888:5000', async (t) => {
    const cli = runCli(['port-forward', 'echo', '8888:5000'], env)
    t.after(() => cli.stop())
    assert.deepEqual(await cli.waitForLines(2), [
      'Forwarding from 127.0.0.1:8888 -> 5000',
      'Forwarding from [::1]:8888 -> 5000',
    ])
    const r = await echoRoundTrip(8888, 1024)
    assert.equal(r.received, r.sent)
    assert.equal(await cli.stop(), 0)
  })

  for (const spec of [':5000', '0:5000']) {
    test(`port-forward echo ${spec} picks one free port for both addresses`, async (t) => {
      const cli = runCli(['port-forward', 'echo', spec], env)
      t.after(() => cli.stop())
      const fwd = parseForwarding(await cli.waitForLines(2))
      assert.equal(fwd.length, 2)
      assert.deepEqual(
        fwd.map((f) => f.address),
        ['127.0.0.1', '::1'],
      )
      assert.equal(fwd[0]?.port, fwd[1]?.port)
      assert.ok((fwd[0]?.port ?? 0) > 1024 && fwd[0]?.remote === 5000)
      assert.equal(
        cli.stdout(),
        `Forwarding from 127.0.0.1:${fwd[0]?.port} -> 5000\nForwarding from [::1]:${fwd[0]?.port} -> 5000\n`,
      )
      const r = await echoRoundTrip(fwd[0]?.port, 1024, '::1')
      assert.equal(r.received, r.sent)
      assert.equal(await cli.stop(), 0)
    })
  }
})

describe('the dev cluster', () => {
  test('runs the gateway and the agents with the relay node flags, the demo pods without', async () => {
    const cmdline = (name: string): string[] => {
      const pid = cluster.pid(name)
      assert.ok(pid !== undefined, `${name} is running`)
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    }
    for (const name of ['gateway', 'agent:node-a', 'agent:node-b']) {
      for (const f of RELAY_NODE_FLAGS) assert.ok(cmdline(name).includes(f), `${name} has ${f}`)
    }
    for (const f of RELAY_NODE_FLAGS) assert.ok(!cmdline('pod:echo').includes(f))
  })
})

describe('data path', () => {
  test('32 MiB of random bytes through the echo pod with a client half-close, sha256 equal both ways', async (t) => {
    const cli = runCli(['port-forward', 'echo', ':5000'], env)
    t.after(() => cli.stop())
    const [fwd] = parseForwarding(await cli.waitForLines(2))
    const r = await echoRoundTrip(fwd?.port as number, 32 * 1024 * 1024)
    assert.equal(r.receivedBytes, 32 * 1024 * 1024)
    assert.equal(r.received, r.sent)
  })

  test('200 concurrent connections on one CLI process share one gateway connection', async (t) => {
    const cli = runCli(['port-forward', '--quiet', 'echo', ':5000'], env)
    t.after(() => cli.stop())
    const [fwd] = parseForwarding(await cli.waitForLines(2))
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        echoRoundTrip(fwd?.port as number, 16 * 1024 + i, i % 2 ? '::1' : '127.0.0.1'),
      ),
    )
    for (const r of results) assert.equal(r.received, r.sent)
    const sessions = await adminGet<{ items: { protocol: string; userAgent?: string }[] }>(
      '/admin/v1/sessions',
    )
    const cliSessions = sessions.items.filter(
      (s) => s.protocol === 'native-h2' && s.userAgent?.startsWith('pfgate/') === true,
    )
    assert.equal(cliSessions.length, 1, JSON.stringify(sessions.items))
  })
})

describe('errors', () => {
  test('a refused pod port closes only that local connection; the listeners keep serving', async (t) => {
    const cli = runCli(['port-forward', 'echo', ':7', ':5000'], env)
    t.after(() => cli.stop())
    const fwd = parseForwarding(await cli.waitForLines(4))
    const refused = fwd.find((f) => f.remote === 7)?.port as number
    const good = fwd.find((f) => f.remote === 5000)?.port as number
    const s = await dial(refused)
    const ended = await new Promise<string>((resolve) => {
      s.on('data', () => undefined)
      s.once('end', () => resolve('end'))
      s.once('close', () => resolve('closed'))
      s.once('error', () => resolve('error'))
    })
    s.destroy()
    assert.ok(['end', 'closed', 'error'].includes(ended))
    await cli.waitForStderr(/an error occurred forwarding \d+ -> 7: .*connection refused/)
    // The same listener still accepts, and other ports still forward.
    const again = await dial(refused)
    again.destroy()
    const r = await echoRoundTrip(good, 4096)
    assert.equal(r.received, r.sent)
  })

  test('an unknown pod fails with a clear message and exit code 1', async () => {
    const r = await runCliToEnd(['port-forward', 'nosuchpod', '5000'], env)
    assert.equal(r.code, 1)
    assert.match(r.stderr, /NotFound.*pods "nosuchpod" not found/)
    assert.equal(r.stdout, '')
  })

  test('bad arguments fail with a clear message and exit code 2', async () => {
    for (const args of [
      ['echo', '0'],
      ['echo', '65536'],
      ['echo', 'ABC'],
      ['echo', '1:2:3'],
      ['echo', '-1'],
      ['echo'],
    ]) {
      const r = await runCliToEnd(['port-forward', ...args], env)
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, /^error: /m)
    }
  })

  test('no token and a bad token: 401 from the gateway, exit code 1 from the CLI', async () => {
    const bad = await runCliToEnd(['port-forward', '--token', 'not-a-jwt', 'echo', '5000'], env)
    assert.equal(bad.code, 1)
    assert.match(bad.stderr, /Unauthorized/)
    const s = await connectGateway(cluster.gatewayUrl, cluster.dir)
    try {
      const none = await h2Request(s, {
        ':method': 'POST',
        ':path': '/proxy/nodes/node-a/portForward/default/echo',
        port: '5000',
      })
      assert.equal(none.status, 401)
      const st = JSON.parse(none.body) as { kind: string; code: number; reason: string }
      assert.deepEqual([st.kind, st.code, st.reason], ['Status', 401, 'Unauthorized'])
      const forged = await h2Request(s, {
        ':method': 'POST',
        ':path': '/proxy/nodes/node-a/portForward/default/echo',
        port: '5000',
        authorization: `Bearer ${cluster.token.slice(0, -4)}AAAA`,
      })
      assert.equal(forged.status, 401)
      assert.doesNotMatch(forged.body, /signature|expired|kid/i, 'the client learns no reason')
    } finally {
      s.close()
    }
  })

  test('the gateway never routes to a node just because the client named it', async () => {
    const s = await connectGateway(cluster.gatewayUrl, cluster.dir)
    try {
      const r = await h2Request(s, {
        ':method': 'POST',
        ':path': '/proxy/nodes/node-b/portForward/default/echo',
        port: '5000',
        authorization: `Bearer ${cluster.token}`,
      })
      assert.equal(r.status, 404)
      assert.match(r.body, /pod default\/echo is not on node \\"node-b\\"/)
    } finally {
      s.close()
    }
  })

  test('names and ports are validated strictly (400 with a Status body)', async () => {
    const s = await connectGateway(cluster.gatewayUrl, cluster.dir)
    try {
      const cases: [string, string | undefined][] = [
        ['/proxy/nodes/node-a/portForward/Default/echo', '5000'],
        ['/proxy/nodes/node-a/portForward/default/ech_o', '5000'],
        ['/proxy/nodes/node-a/portForward/default/echo', '0'],
        ['/proxy/nodes/node-a/portForward/default/echo', '65536'],
        ['/proxy/nodes/node-a/portForward/default/echo', '05000'],
        ['/proxy/nodes/node-a/portForward/default/echo', undefined],
      ]
      for (const [path, port] of cases) {
        const r = await h2Request(s, {
          ':method': 'POST',
          ':path': path,
          ...(port !== undefined ? { port } : {}),
          authorization: `Bearer ${cluster.token}`,
        })
        assert.equal(r.status, 400, `${path} port=${port}: ${r.body}`)
        assert.equal((JSON.parse(r.body) as { reason: string }).reason, 'BadRequest')
      }
    } finally {
      s.close()
    }
  })
})

/** Does an 8 KiB round trip through `port` come back whole (false on any error)? */
async function echoes(port: number): Promise<boolean> {
  try {
    const r = await echoRoundTrip(port, 8192, '127.0.0.1', 5000)
    return r.received === r.sent
  } catch {
    return false
  }
}

describe('resilience', () => {
  test('agent killed mid-transfer: the stream ends with an error, the CLI survives and works again', async (t) => {
    const cli = runCli(['port-forward', 'echo', ':5000'], env)
    t.after(() => cli.stop())
    const [fwd] = parseForwarding(await cli.waitForLines(2))
    const port = fwd?.port as number
    const s = await dial(port)
    let received = 0
    const ended = new Promise<string>((resolve) => {
      s.on('data', (c: Buffer) => (received += c.length))
      s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'))
      s.once('close', () => resolve('close'))
    })
    const chunk = Buffer.alloc(64 * 1024, 7)
    const pump = setInterval(() => s.write(chunk), 5)
    await eventually(() => received > 1024 * 1024, 10_000, 'data flowing')
    await cluster.kill('agent:node-a', 'SIGKILL')
    const how = await ended
    clearInterval(pump)
    assert.ok(['ECONNRESET', 'close', 'error', 'EPIPE'].includes(how), how)
    // The supervisor restarts the agent on the same port; new connections work again.
    await eventually(() => echoes(port), 20_000, 'forwarding to work again after the agent restart')
    assert.equal(cli.proc.exitCode, null, 'the CLI is still running')
  })

  test('the gateway connection drops: the CLI reconnects and new local connections work again', async (t) => {
    const cli = runCli(['port-forward', '--quiet', 'echo', ':5000'], env)
    t.after(() => cli.stop())
    const [fwd] = parseForwarding(await cli.waitForLines(2))
    const port = fwd?.port as number
    assert.equal((await echoRoundTrip(port, 4096)).receivedBytes, 4096)
    // The supervisor restarts the gateway on the same port.
    await cluster.kill('gateway', 'SIGKILL')
    await cli.waitForStderr(/lost connection to the gateway; reconnecting/)
    await eventually(() => echoes(port), 30_000, 'forwarding through the restarted gateway')
    assert.equal(cli.proc.exitCode, null, 'the CLI is still running')
  })

  test('a stalled reader does not slow a bulk stream, and gateway memory stays bounded', async (t) => {
    const cli = runCli(['port-forward', '--quiet', 'echo', ':5000'], env)
    t.after(() => cli.stop())
    const [fwd] = parseForwarding(await cli.waitForLines(2))
    const port = fwd?.port as number
    const gwPid = cluster.pid('gateway') as number
    const rssBefore = rssKiB(gwPid)
    // The stalled client writes as fast as the path lets it and never reads the echo.
    const stalled = await dial(port)
    stalled.pause()
    let pushed = 0
    const block = Buffer.alloc(256 * 1024, 1)
    await new Promise<void>((resolve) => {
      const push = (): void => {
        while (stalled.write(block)) pushed += block.length
        pushed += block.length
        stalled.once('drain', push)
      }
      push()
      setTimeout(resolve, 2000)
    })
    const pushedAfterStall = pushed
    // Meanwhile a bulk stream moves 64 MiB both ways.
    const bulk = await echoRoundTrip(port, 64 * 1024 * 1024, '127.0.0.1', 60_000)
    assert.equal(bulk.received, bulk.sent)
    // Backpressure held end to end: the stalled writer got stuck at a bounded amount.
    assert.ok(
      pushedAfterStall < 256 * 1024 * 1024,
      `stalled client pushed ${pushedAfterStall} bytes`,
    )
    assert.ok(pushed - pushedAfterStall < 64 * 1024 * 1024, 'the stalled writer stayed stuck')
    const rssAfter = rssKiB(gwPid)
    assert.ok(rssAfter - rssBefore < 200 * 1024, `gateway RSS grew by ${rssAfter - rssBefore} KiB`)
    stalled.destroy()
  })

  test('SIGINT closes every stream, the connection and the listeners, exit code 0', async () => {
    const cli = runCli(['port-forward', 'echo', ':5000', ':6000'], env)
    const fwd = parseForwarding(await cli.waitForLines(4))
    const open = await Promise.all(fwd.map((f) => dial(f.port, f.address)))
    for (const s of open) {
      s.on('end', () => s.end())
      s.on('error', () => undefined) // the CLI resets open connections on exit
    }
    // A round trip on each so their streams are up.
    for (const s of open) {
      s.write('x')
      await new Promise((r) => s.once('data', r))
    }
    const streamsBefore = await adminGet<{ items: unknown[] }>('/admin/v1/streams')
    assert.ok(streamsBefore.items.length >= 4)
    const closed = open.map((s) => new Promise((r) => s.once('close', r)))
    assert.equal(await cli.stop('SIGINT'), 0)
    await Promise.all(closed)
    for (const f of fwd)
      assert.ok(await isRefused(f.port, f.address), `${f.address}:${f.port} still listening`)
    await eventually(
      async () => (await adminGet<{ items: unknown[] }>('/admin/v1/streams')).items.length === 0,
      5000,
      'gateway streams to end',
    )
    const sessions = await adminGet<{ items: { userAgent?: string }[] }>('/admin/v1/sessions')
    assert.equal(
      sessions.items.filter((s) => s.userAgent?.startsWith('pfgate/') === true).length,
      0,
    )
    void netConnect
  })
})
