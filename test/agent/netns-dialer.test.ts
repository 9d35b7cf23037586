/**
 * NetnsDialer against real network namespaces (`ip netns`), real helper processes
 * (`nsenter`) and real servers inside the namespaces. Needs root, `ip` and
 * `nsenter`: without them the suite FAILS with a message saying so (CI runs as root).
 *
 * @module
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { isAppError } from '../../src/shared/errors.js'
import { NetnsDialer } from '../../src/agent/netns-dialer.js'
import type { NetnsDialerOptions } from '../../src/agent/netns-dialer.js'
import { connectError } from '../../src/agent/netns-connect-error.js'
import { resolveNetnsHandle } from '../../src/agent/netns-handle.js'
import { isHelperMessage, isHelperRequest } from '../../src/agent/netns-helper.js'
import { StaticNetnsResolver } from '../../src/agent/netns-resolver.js'
import type { PodNetns, PodNetnsResolver } from '../../src/agent/netns-resolver.js'
import type { DialOptions } from '../../src/agent/pod-dialer.js'
import {
  assertNetnsPrerequisites,
  childPidsOf,
  createNetns,
  exchange,
  fdCounts,
  isPidAlive,
  rejectsWith,
  startServerInNetns,
  waitFor,
} from '../helpers/netns.js'
import type { NetnsServer, TestNetns } from '../helpers/netns.js'

const opts = (timeoutMs = 5000, signal = new AbortController().signal): DialOptions => ({
  signal,
  timeoutMs,
})

/** Reads until `n` bytes arrived (or the end). */
function readBytes(socket: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let got = 0
    const done = (): void => {
      socket.off('data', onData)
      socket.off('end', done)
      resolve(Buffer.concat(chunks))
    }
    const onData = (d: Buffer): void => {
      chunks.push(d)
      got += d.length
      if (got >= n) done()
    }
    socket.on('data', onData)
    socket.once('end', done)
    socket.once('error', reject)
  })
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** Asserts a rejection is an AppError with `code`; returns its message. */
describe('netns handles and helper messages (pure)', () => {
  test('resolveNetnsHandle (agent config): names under /run/netns and absolute paths', () => {
    const ok: [string, string][] = [
      ['pfgate-echo', '/run/netns/pfgate-echo'],
      ['cni-1234_a.b', '/run/netns/cni-1234_a.b'],
      ['/run/netns/x', '/run/netns/x'],
      ['/var/run/netns/x', '/var/run/netns/x'],
      ['/proc/42/ns/net', '/proc/42/ns/net'],
      ['/var/run/docker/netns/abc', '/var/run/docker/netns/abc'],
    ]
    for (const [handle, path] of ok) {
      assert.equal(resolveNetnsHandle(handle), path, handle)
    }
    for (const handle of [
      '',
      '..',
      '.',
      '../etc/passwd',
      '/run/netns/../../etc/passwd',
      'a b',
      'name\n',
      'relative/path',
      '/trailing/',
    ]) {
      assert.throws(
        () => resolveNetnsHandle(handle),
        (err: unknown) => isAppError(err) && err.code === 'PFG_ERR_AGENT_NETNS',
        JSON.stringify(handle),
      )
    }
  })

  test('helper requests and messages are validated strictly', () => {
    assert.ok(isHelperRequest({ id: 1, port: 80, timeoutMs: 100, podIps: [] }))
    assert.ok(isHelperRequest({ id: 1, port: 80, timeoutMs: 100, podIps: ['10.1.2.3', 'fd00::3'] }))
    for (const bad of [
      null,
      [],
      'x',
      { id: 1, port: 80, timeoutMs: 1 },
      { id: 1, port: 0, timeoutMs: 1, podIps: [] },
      { id: 1, port: 65536, timeoutMs: 1, podIps: [] },
      { id: 1.5, port: 80, timeoutMs: 1, podIps: [] },
      { id: -1, port: 80, timeoutMs: 1, podIps: [] },
      { id: 1, port: '80', timeoutMs: 1, podIps: [] },
      { id: 1, port: 80, timeoutMs: 0, podIps: [] },
      { id: 1, port: 80, timeoutMs: 1, podIps: ['pod.example'] },
      { id: 1, port: 80, timeoutMs: 1, podIps: '10.0.0.1' },
      { id: 1, port: 80, timeoutMs: 1, podIps: Array.from({ length: 9 }, (_, i) => `10.0.0.${i}`) },
      { id: 1, port: 80, timeoutMs: 1, podIps: [], host: '10.0.0.1' },
    ]) {
      assert.equal(isHelperRequest(bad), false, JSON.stringify(bad))
    }
    assert.ok(isHelperMessage({ type: 'ready', pid: 5, dev: 4, ino: 4026532177 }))
    assert.ok(isHelperMessage({ type: 'connected', id: 3, address: '::1' }))
    assert.ok(
      isHelperMessage({
        type: 'failed',
        id: 3,
        errors: [{ address: '127.0.0.1', code: 'ECONNREFUSED' }],
      }),
    )
    for (const bad of [
      { type: 'connected', id: 3, address: 'localhost' },
      { type: 'connected', id: 3, family: 6 },
      { type: 'failed', id: 3, errors: [] },
      { type: 'failed', id: 3, errors: [{ address: '::1', code: 'not an errno' }] },
      { type: 'failed', id: 3, errors: [{ family: 4, code: 'ECONNREFUSED' }] },
      { type: 'ready', pid: 0, dev: 4, ino: 1 },
      { type: 'other' },
    ]) {
      assert.equal(isHelperMessage(bad), false, JSON.stringify(bad))
    }
  })

  test('connectError picks the code: timeout, then refused, then failed', () => {
    const e = connectError('/run/netns/x', 5000, [
      { address: '127.0.0.1', code: 'ECONNREFUSED' },
      { address: '::1', code: 'ENETUNREACH' },
    ])
    assert.equal(e.code, 'PFG_ERR_AGENT_CONNECT_REFUSED')
    assert.equal(
      e.message,
      'failed to connect to localhost:5000 inside namespace "/run/netns/x", IPv4: dial tcp4 127.0.0.1:5000: connect: connection refused IPv6 dial tcp6 [::1]:5000: connect: network is unreachable',
    )
    assert.equal(
      connectError('/p', 1, [
        { address: '127.0.0.1', code: 'ETIMEDOUT' },
        { address: '::1', code: 'ECONNREFUSED' },
      ]).code,
      'PFG_ERR_AGENT_CONNECT_TIMEOUT',
    )
    assert.equal(
      connectError('/p', 1, [
        { address: '127.0.0.1', code: 'ENETUNREACH' },
        { address: '::1', code: 'EADDRNOTAVAIL' },
      ]).code,
      'PFG_ERR_AGENT_CONNECT_FAILED',
    )
    // The pod's own addresses, tried after loopback, are listed after it.
    assert.equal(
      connectError('/p', 80, [
        { address: '127.0.0.1', code: 'ECONNREFUSED' },
        { address: '::1', code: 'ECONNREFUSED' },
        { address: '10.1.2.3', code: 'ECONNREFUSED' },
        { address: 'fd00::3', code: 'EADDRNOTAVAIL' },
      ]).message,
      'failed to connect to localhost:80 inside namespace "/p", IPv4: dial tcp4 127.0.0.1:80: connect: connection refused IPv6 dial tcp6 [::1]:80: connect: connection refused, pod IPs: dial tcp4 10.1.2.3:80: connect: connection refused, dial tcp6 [fd00::3]:80: connect: cannot assign requested address',
    )
  })
})

describe('NetnsDialer in real network namespaces', () => {
  const namespaces: TestNetns[] = []
  const servers: NetnsServer[] = []
  const dialers: NetnsDialer[] = []
  const tmp = mkdtempSync(join(tmpdir(), 'pfgate-netns-'))
  let baseline: { total: number; sockets: number }
  let nsA: TestNetns
  let nsB: TestNetns
  let echoA: NetnsServer
  let bannerA: NetnsServer
  let bannerB: NetnsServer
  let halfA: NetnsServer
  let v6A: NetnsServer

  const newNetns = (o?: { loopbackUp?: boolean }): TestNetns => {
    const ns = createNetns(o)
    namespaces.push(ns)
    return ns
  }
  const newServer = async (
    ...args: Parameters<typeof startServerInNetns>
  ): Promise<NetnsServer> => {
    const s = await startServerInNetns(...args)
    servers.push(s)
    return s
  }
  /** A dialer whose agent config maps pods `t/<name>` (uid `uid-<name>`) to namespaces. */
  const newDialer = (
    o: Partial<NetnsDialerOptions> & { pods?: [string, string][] } = {},
  ): NetnsDialer => {
    const { pods = [], ...rest } = o
    const resolver = new StaticNetnsResolver(
      pods.map(([key, netns]) => {
        const [namespace, name] = key.split('/') as [string, string]
        return { namespace, name, uid: `uid-${name}`, netns }
      }),
    )
    const d = new NetnsDialer({ checkIntervalMs: 200, resolver, ...rest })
    dialers.push(d)
    return d
  }
  const pod = (name: string) => ({ namespace: 't', name, uid: `uid-${name}` })

  before(async () => {
    assertNetnsPrerequisites()
    baseline = fdCounts()
    nsA = newNetns()
    nsB = newNetns()
    ;[echoA, bannerA, bannerB, halfA, v6A] = await Promise.all([
      newServer(nsA.name, 'echo'),
      newServer(nsA.name, 'echo', { banner: 'pod-a\n' }),
      newServer(nsB.name, 'echo', { banner: 'pod-b\n' }),
      newServer(nsA.name, 'halfclose', { banner: 'bye' }),
      newServer(nsA.name, 'echo', { host: '::1', banner: 'v6\n' }),
    ])
  })

  after(async () => {
    await Promise.all(dialers.map((d) => d.close()))
    await Promise.all(servers.map((s) => s.stop()))
    for (const ns of namespaces) ns.destroy()
    rmSync(tmp, { recursive: true, force: true })
  })

  test('the pod port is not reachable from the host namespace', async () => {
    const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: echoA.port })
      s.once('connect', () => {
        s.destroy()
        resolve(undefined)
      })
      s.once('error', resolve)
    })
    assert.equal(err?.code, 'ECONNREFUSED', `port ${echoA.port} answered on the host loopback`)
  })

  test('16 MiB random each way through the helper, sha256 equal; client half-closes', async () => {
    const d = newDialer({ pods: [['t/echo', nsA.name]] })
    const data = randomBytes(16 * 1024 * 1024)
    const t0 = performance.now()
    const socket = await d.dial(pod('echo'), echoA.port, opts())
    const dialMs = performance.now() - t0
    assert.equal(socket.allowHalfOpen, true)
    const t1 = performance.now()
    const back = await exchange(socket, data)
    const ms = performance.now() - t1
    assert.equal(back.length, data.length)
    assert.equal(sha(back), sha(data))
    const t2 = performance.now()
    const warm = await d.dial(pod('echo'), echoA.port, opts())
    const warmMs = performance.now() - t2
    warm.destroy()
    console.log(
      `# first dial (helper start) ${dialMs.toFixed(1)} ms, warm dial ${warmMs.toFixed(2)} ms; 2×16 MiB echoed in ${ms.toFixed(0)} ms (${((32 / ms) * 1000).toFixed(0)} MiB/s)`,
    )
    assert.equal(d.helpers().length, 1)
    assert.equal(d.stats().helperStarts, 1)
  })

  test('a pod that speaks first: its banner is not swallowed by the helper', async () => {
    const d = newDialer({ pods: [['t/banner', nsA.name]] })
    for (let i = 0; i < 5; i++) {
      const socket = await d.dial(pod('banner'), bannerA.port, opts())
      const back = await exchange(socket, Buffer.from(`ping ${i}`))
      assert.equal(back.toString(), `pod-a\nping ${i}`)
    }
  })

  test('the pod half-closes first: the agent can still write until it ends (allowHalfOpen)', async () => {
    const d = newDialer({ pods: [['t/half', nsA.name]] })
    const socket = await d.dial(pod('half'), halfA.port, opts())
    const got = await readBytes(socket, Infinity)
    assert.equal(got.toString(), 'bye')
    assert.equal(socket.readableEnded, true)
    // The pod's FIN has arrived; our side must still be writable.
    assert.equal(socket.writable, true, 'the received socket ended its side on the pod FIN')
    const payload = randomBytes(1024 * 1024)
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      socket.end(payload, () => resolve())
    })
    const line = await halfA.waitForLine(/^RECEIVED /)
    assert.equal(line, `RECEIVED ${payload.length} ${sha(payload)}`)
  })

  test('an IPv6-only listener ([::1]) is reached through the fallback', async () => {
    const d = newDialer({ pods: [['t/v6', nsA.name]] })
    const socket = await d.dial(pod('v6'), v6A.port, opts())
    assert.equal(socket.remoteAddress, '::1')
    assert.equal((await exchange(socket, Buffer.from('x'))).toString(), 'v6\nx')
  })

  test('a refused port gives the kubelet-style text and PFG_ERR_AGENT_CONNECT_REFUSED', async () => {
    const d = newDialer({ pods: [['t/echo', nsA.name]] })
    // Port 1 in a fresh namespace: nothing listens there.
    const msg = await rejectsWith(d.dial(pod('echo'), 1, opts()), 'PFG_ERR_AGENT_CONNECT_REFUSED')
    assert.equal(
      msg,
      `failed to connect to localhost:1 inside namespace "${nsA.path}", IPv4: dial tcp4 127.0.0.1:1: connect: connection refused IPv6 dial tcp6 [::1]:1: connect: connection refused`,
    )
  })

  test('loopback down in the pod: PFG_ERR_AGENT_CONNECT_FAILED', async () => {
    const nsDown = newNetns({ loopbackUp: false })
    const d = newDialer({ pods: [['t/down', nsDown.name]] })
    const msg = await rejectsWith(d.dial(pod('down'), 80, opts()), 'PFG_ERR_AGENT_CONNECT_FAILED')
    assert.match(msg, /IPv4: dial tcp4 127\.0\.0\.1:80: connect: network is unreachable IPv6 /)
  })

  test('a connect that hangs: PFG_ERR_AGENT_CONNECT_TIMEOUT within the timeout', async () => {
    const hole = await newServer(nsA.name, 'blackhole')
    const d = newDialer({ pods: [['t/hole', nsA.name]] })
    await d.dial(pod('hole'), echoA.port, opts()).then((s) => s.destroy()) // helper warm
    const t0 = performance.now()
    await rejectsWith(d.dial(pod('hole'), hole.port, opts(300)), 'PFG_ERR_AGENT_CONNECT_TIMEOUT')
    const ms = performance.now() - t0
    assert.ok(ms >= 290 && ms < 1000, `timed out after ${ms} ms`)
  })

  test('a dial cancelled while connecting closes the socket that arrives later', async () => {
    const hole = await newServer(nsA.name, 'blackhole')
    const d = newDialer({ pods: [['t/hole', nsA.name]] })
    await d.dial(pod('hole'), echoA.port, opts()).then((s) => s.destroy()) // helper warm
    const ac = new AbortController()
    const p = d.dial(pod('hole'), hole.port, opts(8000, ac.signal))
    await new Promise((r) => setTimeout(r, 150))
    ac.abort()
    const msg = await rejectsWith(p, 'PFG_ERR_AGENT_CONNECT_FAILED')
    assert.match(msg, /dial cancelled/)
    // Let the backlog drain: the helper's retransmitted SYN now completes (~1 s after the
    // dial) and its socket reaches the agent after the dial was given up.
    hole.send('accept')
    await waitFor(() => d.stats().lateSocketsClosed === 1, 6000, 'the late socket to be closed')
    // The server sees that connection end: the agent closed it rather than leaking it.
    await hole.waitForLine(/^EOF$/, 3000)
  })

  test('many dials aborted at random moments leak no sockets', async () => {
    const d = newDialer({ pods: [['t/echo', nsA.name]], idleTimeoutMs: 300 })
    await d.dial(pod('echo'), echoA.port, opts()).then((s) => s.destroy())
    const settled = (): boolean =>
      echoA.lines.filter((l) => l.startsWith('OPEN')).length ===
      echoA.lines.filter((l) => l.startsWith('CLOSE')).length
    await waitFor(settled, 3000, 'earlier connections to close')
    const opensBefore = echoA.lines.filter((l) => l.startsWith('OPEN')).length
    let rejected = 0
    await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const ac = new AbortController()
        const p = d.dial(pod('echo'), echoA.port, opts(5000, ac.signal))
        if (i % 4 === 0) ac.abort()
        else setTimeout(() => ac.abort(), i % 8)
        try {
          ;(await p).destroy()
        } catch (err) {
          assert.ok(isAppError(err) && err.code === 'PFG_ERR_AGENT_CONNECT_FAILED', String(err))
          rejected++
        }
      }),
    )
    const count = (prefix: string): number =>
      echoA.lines.filter((l) => l.startsWith(prefix)).length - opensBefore
    await waitFor(
      () => count('CLOSE') === count('OPEN'),
      3000,
      'every pod-side connection to close',
    )
    console.log(
      `# 40 aborted dials: ${rejected} rejected, ${count('OPEN')} reached the pod, ${d.stats().lateSocketsClosed} late sockets closed`,
    )
    assert.ok(rejected > 0)
    // Cancelled dials are not counted as in flight forever: the helper still goes idle.
    await waitFor(() => d.helpers().length === 0, 3000, 'the helper to stop when idle')
  })

  test('pods are found by UID only: unknown, missing or mismatched UIDs are refused', async () => {
    const d = newDialer({ pods: [['t/cfg', nsA.name]] })
    let s = await d.dial(pod('cfg'), bannerA.port, opts())
    assert.equal((await exchange(s, Buffer.alloc(0))).toString(), 'pod-a\n')
    // Another pod's name with this pod's UID, a UID the config lacks, no UID at all.
    assert.match(
      await rejectsWith(
        d.dial({ namespace: 't', name: 'other', uid: 'uid-cfg' }, 80, opts()),
        'PFG_ERR_AGENT_POD_NOT_FOUND',
      ),
      /the agent config has t\/cfg for this uid/,
    )
    await rejectsWith(
      d.dial({ namespace: 't', name: 'cfg', uid: 'uid-new' }, 80, opts()),
      'PFG_ERR_AGENT_POD_NOT_FOUND',
    )
    assert.match(
      await rejectsWith(
        d.dial({ namespace: 't', name: 'cfg' }, 80, opts()),
        'PFG_ERR_AGENT_POD_NOT_FOUND',
      ),
      /no pod UID/,
    )
    assert.equal(d.helpers().length, 1, 'no helper for a refused pod')
    s = await d.dial(pod('cfg'), bannerA.port, opts())
    s.destroy()
  })

  test('config handles are verified to be network namespaces', async () => {
    const notANamespace = join(tmp, 'file')
    writeFileSync(notANamespace, 'x')
    const cfg = newDialer({
      pods: [
        ['t/file', notANamespace],
        ['t/uts', `/proc/${process.pid}/ns/uts`],
        ['t/gone', 'pfgate-t-does-not-exist'],
      ],
    })
    assert.match(
      await rejectsWith(cfg.dial(pod('file'), 80, opts()), 'PFG_ERR_AGENT_NETNS'),
      /not a namespace file/,
    )
    assert.match(
      await rejectsWith(cfg.dial(pod('uts'), 80, opts()), 'PFG_ERR_AGENT_NETNS'),
      /reassociate to namespace 'ns\/net' failed/,
    )
    assert.match(
      await rejectsWith(cfg.dial(pod('gone'), 80, opts()), 'PFG_ERR_AGENT_NETNS'),
      /does not exist/,
    )
    assert.throws(
      () => new StaticNetnsResolver([{ namespace: 't', name: 'bad', uid: 'u', netns: '../x' }]),
      (err: unknown) => isAppError(err) && err.code === 'PFG_ERR_CONFIG_INVALID',
    )
    assert.throws(
      () =>
        new StaticNetnsResolver([
          { namespace: 't', name: 'a', uid: 'u', netns: 'x' },
          { namespace: 't', name: 'b', uid: 'u', netns: 'y' },
        ]),
      /listed twice/,
    )
  })

  test('after loopback the pod IPs are dialled, only those the namespace has', async () => {
    // A pod IP on an interface of namespace A (TEST-NET-1: never routed anywhere here;
    // on lo, as a veth's address would be, since this kernel may lack the dummy driver).
    const podIp = '192.0.2.10'
    const add = spawnSync('ip', ['-n', nsA.name, 'addr', 'add', `${podIp}/32`, 'dev', 'lo'])
    assert.equal(add.status, 0, `ip addr add: ${String(add.stderr)}`)
    const ipOnly = await newServer(nsA.name, 'echo', { host: podIp, banner: 'pod-ip\n' })
    const ips: string[] = [podIp]
    const resolver: PodNetnsResolver = {
      resolve: (): Promise<PodNetns> =>
        Promise.resolve({ path: nsA.path, podIps: [...ips], source: 'test' }),
      invalidate: () => undefined,
      readiness: () => Promise.resolve({ ready: true, detail: 'test' }),
      close: () => Promise.resolve(),
    }
    const d = newDialer({ resolver })
    const socket = await d.dial(pod('ip'), ipOnly.port, opts())
    assert.equal((await exchange(socket, Buffer.from('x'))).toString(), 'pod-ip\nx')
    // An address no interface of the namespace has is never dialled (it would leave the pod).
    ips.splice(0, 1, '192.0.2.99')
    const msg = await rejectsWith(
      d.dial(pod('ip'), ipOnly.port, opts()),
      'PFG_ERR_AGENT_CONNECT_REFUSED',
    )
    assert.match(
      msg,
      /pod IPs: dial tcp4 192\.0\.2\.99:\d+: connect: cannot assign requested address$/,
    )
  })

  test('a helper SIGKILLed mid-run is restarted; open relays and the next dials work', async () => {
    const d = newDialer({
      pods: [['t/echo', nsA.name]],
      restartBackoff: { initialMs: 50, maxMs: 500 },
    })
    const open = await d.dial(pod('echo'), echoA.port, opts())
    const pid1 = d.helpers()[0]!.pid!
    process.kill(pid1, 'SIGKILL')
    const next = await d.dial(pod('echo'), echoA.port, opts())
    assert.equal((await exchange(next, Buffer.from('after kill'))).toString(), 'after kill')
    const pid2 = d.helpers()[0]!.pid!
    assert.notEqual(pid2, pid1)
    assert.equal(isPidAlive(pid1), false)
    // The connection opened before the kill is the agent's own socket: unaffected.
    assert.equal((await exchange(open, Buffer.from('still here'))).toString(), 'still here')
    assert.equal(d.stats().helperCrashes, 1)
    assert.equal(d.stats().helperStarts, 2)
    // The eager restart: after another kill, a helper is back without any dial.
    process.kill(pid2, 'SIGKILL')
    await waitFor(
      () => d.helpers()[0]?.state === 'ready' && d.helpers()[0]?.pid !== pid2,
      3000,
      'the helper to be restarted',
    )
  })

  test('a dial in flight on a helper that dies is retried once on the restarted helper', async () => {
    const hole = await newServer(nsA.name, 'blackhole')
    const d = newDialer({
      pods: [['t/hole', nsA.name]],
      restartBackoff: { initialMs: 20, maxMs: 50 },
    })
    ;(await d.dial(pod('hole'), echoA.port, opts())).destroy()
    const pid1 = d.helpers()[0]!.pid!
    // The helper is stuck connecting (full backlog) when it is killed.
    const p = d.dial(pod('hole'), hole.port, opts(8000))
    await new Promise((r) => setTimeout(r, 150))
    process.kill(pid1, 'SIGKILL')
    await waitFor(() => d.stats().retries === 1, 3000, 'the dial to be retried')
    hole.send('accept')
    const socket = await p
    assert.notEqual(d.helpers()[0]!.pid, pid1)
    socket.destroy()
    // A second death of the same request's helper is not retried again: it fails cleanly.
    const q = d.dial(pod('hole'), 1, opts(8000))
    await rejectsWith(q, 'PFG_ERR_AGENT_CONNECT_REFUSED')
    assert.equal(d.stats().retries, 1)
  })

  test('namespace deleted: the helper ends and dials fail with PFG_ERR_AGENT_NETNS', async () => {
    const nsD = newNetns()
    const server = await newServer(nsD.name, 'echo')
    const d = newDialer({ pods: [['t/d', nsD.name]] })
    ;(await d.dial(pod('d'), server.port, opts())).destroy()
    const pid = d.helpers()[0]!.pid!
    // The server process keeps the namespace alive: deleting only unmounts its name.
    nsD.destroy()
    await waitFor(() => !isPidAlive(pid), 3000, 'the helper to end after the namespace was deleted')
    assert.equal(d.helpers().length, 0)
    const msg = await rejectsWith(d.dial(pod('d'), server.port, opts()), 'PFG_ERR_AGENT_NETNS')
    assert.match(msg, /does not exist/)
    // A dial that races the deletion (before the periodic check) fails cleanly as well.
    const nsE = newNetns()
    const serverE = await newServer(nsE.name, 'echo')
    const slow = newDialer({ pods: [['t/e', nsE.name]], checkIntervalMs: 60_000 })
    ;(await slow.dial(pod('e'), serverE.port, opts())).destroy()
    const pidE = slow.helpers()[0]!.pid!
    nsE.destroy()
    await rejectsWith(slow.dial(pod('e'), serverE.port, opts()), 'PFG_ERR_AGENT_NETNS')
    await waitFor(() => !isPidAlive(pidE), 3000, 'the helper to end')
  })

  test('the idle timeout ends helpers', async () => {
    const d = newDialer({ pods: [['t/a', nsA.name]], idleTimeoutMs: 300 })
    ;(await d.dial(pod('a'), echoA.port, opts())).destroy()
    const pa = d.helpers()[0]!.pid!
    await waitFor(() => !isPidAlive(pa), 3000, 'the idle helper to end')
    assert.equal(d.helpers().length, 0)
    // The next dial starts a helper again.
    ;(await d.dial(pod('a'), echoA.port, opts())).destroy()
    assert.equal(d.helpers().length, 1)
  })

  test('helpers exit when the agent process dies', async () => {
    const script = join(tmp, 'agent.mjs')
    const dialerUrl = new URL('../../src/agent/netns-dialer.js', import.meta.url).href
    const resolverUrl = new URL('../../src/agent/netns-resolver.js', import.meta.url).href
    writeFileSync(
      script,
      `import { NetnsDialer } from ${JSON.stringify(dialerUrl)}
import { StaticNetnsResolver } from ${JSON.stringify(resolverUrl)}
const resolver = new StaticNetnsResolver([{ namespace: 't', name: 'a', uid: 'u', netns: process.argv[2] }])
const d = new NetnsDialer({ resolver })
const s = await d.dial({ namespace: 't', name: 'a', uid: 'u' }, Number(process.argv[3]), { signal: new AbortController().signal, timeoutMs: 5000 })
console.log('HELPER ' + d.helpers()[0].pid)
setInterval(() => s.write('.'), 1000)
`,
    )
    const agent = spawn(process.execPath, [script, nsA.name, String(echoA.port)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: agent.stdout }).once('line', resolve)
      agent.once('exit', (code) => reject(new Error(`agent stand-in exited (${code})`)))
    })
    const helperPid = Number(line.split(' ')[1])
    assert.equal(isPidAlive(helperPid), true)
    const exited = new Promise((r) => agent.once('exit', r))
    agent.kill('SIGKILL')
    await exited
    await waitFor(() => !isPidAlive(helperPid), 3000, 'the orphaned helper to exit')
  })

  test('close() ends every helper; later dials fail', async () => {
    const d = newDialer({
      pods: [
        ['t/a', nsA.name],
        ['t/b', nsB.name],
      ],
    })
    const s = await d.dial(pod('a'), echoA.port, opts())
    ;(await d.dial(pod('b'), bannerB.port, opts())).destroy()
    const pids = d.helpers().map((h) => h.pid!)
    assert.equal(pids.length, 2)
    await d.close()
    assert.deepEqual(pids.filter(isPidAlive), [])
    assert.equal(s.destroyed, true, 'close() closes the sockets it handed out')
    await rejectsWith(d.dial(pod('a'), echoA.port, opts()), 'PFG_ERR_AGENT_CONNECT_FAILED')
    await d.close() // idempotent
  })

  test('nothing leaks: no child processes or sockets left once dialers and servers stop', async () => {
    await Promise.all(dialers.map((d) => d.close()))
    await Promise.all(servers.map((s) => s.stop()))
    await waitFor(() => childPidsOf(process.pid).length === 0, 3000, 'children to be reaped')
    // Sockets close asynchronously after their handles are released.
    await waitFor(() => fdCounts().sockets <= baseline.sockets, 3000, 'sockets to close')
    const now = fdCounts()
    console.log(
      `# fds: ${baseline.total} → ${now.total}; sockets ${baseline.sockets} → ${now.sockets}`,
    )
  })
})
