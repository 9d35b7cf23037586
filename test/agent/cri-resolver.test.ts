/**
 * The agent's CRI path against a real containerd (src/dev/containerd-harness.ts): pods
 * made over CRI as the kubelet makes them, found by UID through ListPodSandbox and a
 * verbose PodSandboxStatus, dialled by the netns dialer inside their namespaces.
 * Recreated, stopped and unknown pods, the runtime stopped and its socket missing,
 * and the harness leaving nothing behind. Needs root and Debian's containerd, runc,
 * containernetworking-plugins and busybox-static: without them the suite FAILS with a
 * message saying so (the test set-up installs them).
 *
 * @module
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { sandboxNetwork } from '../../src/shared/cri/sandbox-network.js'
import type { Socket } from 'node:net'
import { CriNetnsResolver } from '../../src/agent/cri-resolver.js'
import { NetnsDialer } from '../../src/agent/netns-dialer.js'
import type { PodRef } from '../../src/agent/netns-resolver.js'
import { ContainerdHarness, containerdUnavailable } from '../../src/dev/containerd-harness.js'
import type { HarnessPod } from '../../src/dev/containerd-harness.js'
import { sha256 } from '../helpers/net.js'
import { exchange, rejectsWith } from '../helpers/netns.js'

const why = containerdUnavailable()
if (why !== undefined) throw new Error(`CRI tests need a real containerd: ${why}`)

const BB = '/bin/busybox'
/** A pod serving its name over HTTP on 8080 and an echo on 5000. */
const servers = (page: string): string[] => [
  BB,
  'sh',
  '-c',
  `echo '${page}' > /www/index.html\n${BB} httpd -f -p 8080 -h /www &\n${BB} nc -ll -p 5000 -e ${BB} cat &\nwait`,
]

const opts = () => ({ signal: new AbortController().signal, timeoutMs: 10_000 })
const ref = (p: HarnessPod): PodRef => ({ namespace: p.namespace, name: p.name, uid: p.uid })

/** GET / over a dialled socket; the page body. */
function httpGet(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = ''
    socket.setEncoding('utf8')
    socket.on('data', (d: string) => (text += d))
    socket.once('end', () => {
      socket.end()
      resolve(text.slice(text.indexOf('\r\n\r\n') + 4))
    })
    socket.once('error', reject)
    socket.write('GET / HTTP/1.0\r\n\r\n')
  })
}

/** Eventually true, polled (for server start-up inside a fresh container). */
async function until(fn: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await fn().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

describe('CRI resolver and netns dialer on a real containerd', () => {
  let h: ContainerdHarness
  let resolver: CriNetnsResolver
  let dialer: NetnsDialer
  let alpha: HarnessPod

  const page = async (pod: HarnessPod): Promise<string> =>
    httpGet(await dialer.dial(ref(pod), 8080, opts()))

  before(async () => {
    h = await ContainerdHarness.start({ name: 'cri-test' })
    alpha = await h.runPod({
      namespace: 'team-a',
      name: 'alpha',
      containers: [{ name: 'srv', command: servers('alpha') }],
    })
    // A long TTL: every stale entry below must be caught by the per-use check, not by age.
    resolver = new CriNetnsResolver({ endpoint: `unix://${h.socketPath}`, cacheTtlMs: 60_000 })
    dialer = new NetnsDialer({ resolver, checkIntervalMs: 200 })
    await until(async () => (await page(alpha)).trim() === 'alpha', 'alpha to serve')
  })

  after(async () => {
    await dialer?.close()
    await h?.close()
  })

  test('ready: the runtime answers Version', async () => {
    const r = await dialer.readiness()
    assert.equal(r.ready, true, r.detail)
    assert.match(r.detail, /^containerd \S+ \(CRI v1\) at unix:\/\//)
  })

  test('a pod is found by UID: its sandbox namespace and IPs; the answer is cached', async () => {
    resolver.invalidate(alpha.uid)
    const before = resolver.stats()
    const ns = await resolver.resolve(ref(alpha))
    assert.equal(ns.path, alpha.netnsPath)
    assert.ok(ns.podIps.includes(alpha.ip), `${ns.podIps.join()} has ${alpha.ip}`)
    const again = await resolver.resolve(ref(alpha))
    assert.equal(again.path, alpha.netnsPath)
    assert.deepEqual(again.identity, ns.identity)
    const s = resolver.stats()
    // After invalidate: one list (the verbose status of that sandbox is kept); then none.
    assert.equal(s.lists - before.lists, 1)
    assert.equal(s.statuses - before.statuses, 0)
    assert.equal(s.cacheHits - before.cacheHits, 1)
    // Concurrent lookups share one round trip.
    resolver.invalidate(alpha.uid)
    const all = await Promise.all([1, 2, 3, 4].map(() => resolver.resolve(ref(alpha))))
    assert.ok(all.every((x) => x.path === alpha.netnsPath))
    assert.equal(resolver.stats().lists - s.lists, 1)
  })

  test('1 MiB echoed through the pod; nothing listens on the host for it', async () => {
    const data = randomBytes(1024 * 1024)
    const back = await exchange(await dialer.dial(ref(alpha), 5000, opts()), data)
    assert.equal(sha256(back), sha256(data))
    const hostListeners = spawnSync('ss', ['-Hltn', 'sport = :5000'], { encoding: 'utf8' }).stdout
    const podListeners = spawnSync(
      'nsenter',
      [`--net=${alpha.netnsPath}`, 'ss', '-Hltn', 'sport = :5000'],
      {
        encoding: 'utf8',
      },
    ).stdout
    assert.match(podListeners, /:5000\b/, 'the pod listens on 5000 in its namespace')
    assert.doesNotMatch(hostListeners, /:5000\b/, 'nothing on the host listens on 5000')
  })

  test('a server bound only to the pod IP is reached (after loopback is refused)', async () => {
    const ipOnly = await h.runPod({
      namespace: 'team-a',
      name: 'ip-only',
      containers: [
        {
          name: 'srv',
          command: (ip) => [
            BB,
            'sh',
            '-c',
            `echo ip-only > /www/index.html\nexec ${BB} httpd -f -p ${ip}:9090 -h /www`,
          ],
        },
      ],
    })
    await until(
      async () =>
        (await httpGet(await dialer.dial(ref(ipOnly), 9090, opts()))).trim() === 'ip-only',
      'the pod-IP server',
    )
    const socket = await dialer.dial(ref(ipOnly), 9090, opts())
    assert.equal(socket.remoteAddress, ipOnly.ip)
    socket.destroy()
    await h.removePod(ipOnly)
  })

  test('unknown UID, or a UID of another pod name: not found, nothing dialled', async () => {
    const stranger = { namespace: 'team-a', name: 'alpha', uid: 'no-such-uid' }
    assert.match(
      await rejectsWith(dialer.dial(stranger, 8080, opts()), 'PFG_ERR_AGENT_POD_NOT_FOUND'),
      /^pod not found: team-a\/alpha \(uid no-such-uid\) has no ready sandbox in the container runtime on this node$/,
    )
    assert.match(
      await rejectsWith(
        dialer.dial({ ...ref(alpha), name: 'beta' }, 8080, opts()),
        'PFG_ERR_AGENT_POD_NOT_FOUND',
      ),
      /belongs to team-a\/alpha/,
    )
  })

  test('a recreated pod (new sandbox, new namespace) is reached at the new one at once', async () => {
    const old = alpha
    // The cache holds the old sandbox (and would for a minute).
    assert.equal((await page(alpha)).trim(), 'alpha')
    const hits = resolver.stats().cacheHits
    assert.equal((await page(alpha)).trim(), 'alpha')
    assert.equal(resolver.stats().cacheHits, hits + 1, 'served from the cache')
    const refused = resolver.stats().cacheRefused
    const statusesBefore = resolver.stats().statuses
    alpha = await h.recreatePod(alpha, {
      containers: [{ name: 'srv', command: servers('alpha-2') }],
    })
    assert.notEqual(alpha.netnsPath, old.netnsPath)
    assert.equal(alpha.uid, old.uid)
    // Wait for the new server without the dialer (busybox wget inside the namespace),
    // then the very first dial must reach the new sandbox: not the old namespace, not
    // an error about it.
    await until(async () => {
      const r = spawnSync(
        'nsenter',
        [`--net=${alpha.netnsPath}`, BB, 'wget', '-qO-', 'http://127.0.0.1:8080/'],
        {
          encoding: 'utf8',
        },
      )
      return r.status === 0 && r.stdout.trim() === 'alpha-2'
    }, 'the new pod to serve')
    assert.equal((await page(alpha)).trim(), 'alpha-2')
    assert.equal(resolver.stats().statuses, statusesBefore + 1, 'the new sandbox was looked up')
    assert.equal(resolver.stats().cacheRefused, refused + 1, 'the cached old sandbox was refused')
    assert.equal(existsSync(old.netnsPath), false, 'containerd removed the old namespace')
  })

  test('a sandbox whose process died, its namespace still there: refused at once, not from the cache', async () => {
    const gamma = await h.runPod({
      namespace: 'team-a',
      name: 'gamma',
      containers: [{ name: 'srv', command: servers('gamma') }],
    })
    await until(async () => (await page(gamma)).trim() === 'gamma', 'gamma to serve')
    assert.equal((await page(gamma)).trim(), 'gamma', 'cached')
    const pid = sandboxNetwork(await h.client.podSandboxStatus(gamma.sandboxId, true)).pid
    assert.ok(pid !== undefined, 'containerd reports the sandbox process')
    process.kill(pid, 'SIGKILL')
    await until(async () => !existsSync(`/proc/${pid}`), 'the sandbox process to go')
    // The runtime sees it NOTREADY; the kubelet has not stopped it yet, so its namespace,
    // and the pod's server in it, are still there: only the sandbox check tells.
    await until(
      async () =>
        (await h.client.listPodSandbox({ id: gamma.sandboxId }))[0]?.state === 'SANDBOX_NOTREADY',
      'the runtime to see the sandbox die',
    )
    assert.equal(existsSync(gamma.netnsPath), true, 'the namespace outlives the sandbox process')
    const before = resolver.stats()
    assert.match(
      await rejectsWith(dialer.dial(ref(gamma), 8080, opts()), 'PFG_ERR_AGENT_POD_NOT_FOUND'),
      /has no ready sandbox/,
    )
    const s = resolver.stats()
    assert.equal(s.cacheHits, before.cacheHits, 'not answered from the cache')
    assert.equal(s.cacheRefused, before.cacheRefused + 1)
    await h.removePod(gamma)
  })

  test('a stopped pod: not found (no ready sandbox)', async () => {
    const beta = await h.runPod({
      namespace: 'team-a',
      name: 'beta',
      containers: [{ name: 'srv', command: servers('beta') }],
    })
    await until(async () => (await page(beta)).trim() === 'beta', 'beta to serve')
    await h.stopPod(beta)
    assert.match(
      await rejectsWith(dialer.dial(ref(beta), 8080, opts()), 'PFG_ERR_AGENT_POD_NOT_FOUND'),
      /has no ready sandbox/,
    )
    await h.removePod(beta)
  })

  test('the runtime stopped: not ready and 503-class errors; back again: ready and dialling', async () => {
    await h.stopDaemon()
    await until(async () => !(await dialer.readiness()).ready, 'readiness to go false', 5_000)
    const r = await dialer.readiness()
    assert.match(r.detail, /^the container runtime( at unix:\/\/\S+)? is not available: /)
    const msg = await rejectsWith(
      dialer.dial(ref(alpha), 8080, opts()),
      'PFG_ERR_AGENT_RUNTIME_UNAVAILABLE',
    )
    assert.match(msg, /is not available/)
    await h.startDaemon()
    await until(async () => (await dialer.readiness()).ready, 'readiness to come back', 10_000)
    // The pod kept running in its shim while containerd was down.
    assert.equal((await page(alpha)).trim(), 'alpha-2')
  })

  test('the runtime socket missing: not ready, and a clear error', async () => {
    const missing = new CriNetnsResolver({ endpoint: `${h.dir}/no-such.sock` })
    const r = await missing.readiness()
    assert.equal(r.ready, false)
    assert.match(r.detail, /its socket \S+no-such\.sock does not exist/)
    await rejectsWith(missing.resolve(ref(alpha)), 'PFG_ERR_AGENT_RUNTIME_UNAVAILABLE')
    await missing.close()
  })

  test('close() leaves nothing: processes, mounts, namespaces, bridge, cgroups, files', async () => {
    await dialer.close()
    const { dir, socketPath, bridge, cgroupParent } = h
    const netns = alpha.netnsPath
    await h.close()
    assert.equal(existsSync(dir), false, 'the directory')
    assert.equal(existsSync(netns), false, 'the pod namespace')
    assert.equal(existsSync(`/sys/class/net/${bridge}`), false, 'the bridge')
    assert.doesNotMatch(readFileSync('/proc/self/mountinfo', 'utf8'), new RegExp(dir), 'mounts')
    for (const c of readdirSync('/sys/fs/cgroup')) {
      assert.equal(existsSync(`/sys/fs/cgroup/${c}${cgroupParent}`), false, `cgroup ${c}`)
    }
    const ours = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(socketPath)
        } catch {
          return false
        }
      })
    assert.deepEqual(ours, [], 'no containerd or shim process of this harness')
  })
})
