/**
 * Real pods that a real containerd runs, through the whole system: `pfgate port-forward`
 * and kubectl → gateway (registry from a Kubernetes API: a local fake speaking the real
 * list/watch format) → agent, which finds each pod by UID in its node's containerd over
 * CRI → the pod's network namespace. The dev cluster runs one containerd per node
 * (`runtime: 'containerd'`); the tests add pods to node-a's.
 *
 * Needs root and Debian's containerd, runc, containernetworking-plugins and
 * busybox-static (the test set-up installs them): without them this FAILS, never skips.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import type { ClientHttp2Session } from 'node:http2'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startTestCluster } from '../helpers/cluster.js'
import { parseForwarding, runCli } from '../helpers/cli.js'
import type { CliProcess } from '../helpers/cli.js'
import {
  FakeKubeApiServer,
  upsertDevNodes,
  writeFakeKubeconfig,
} from '../helpers/fake-kube-apiserver.js'
import type { FakePod } from '../helpers/fake-kube-apiserver.js'
import { openRaw, trailPath, waitForRecords } from '../helpers/gateway.js'
import { connectGateway, h2Request } from '../helpers/h2.js'
import { echoThrough, startKubectlForward } from '../helpers/kube-clients.js'
import { dial, echoRoundTrip, eventually } from '../helpers/net.js'
import { containerdUnavailable } from '../../src/dev/containerd-harness.js'
import { sandboxNetwork } from '../../src/shared/cri/sandbox-network.js'
import type { ContainerdHarness, HarnessPod } from '../../src/dev/containerd-harness.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import { parseStatus, statusErrorCode } from '../../src/protocol/status.js'

const why = containerdUnavailable()
if (why !== undefined) throw new Error(`containerd end-to-end tests need a real containerd: ${why}`)

const BB = '/bin/busybox'
/** httpd on `port` (bound to `host`, default all) serving `page`. */
const httpd = (page: string, port = 8080, host?: (ip: string) => string) => ({
  name: 'web',
  command: (ip: string) => [
    BB,
    'sh',
    '-c',
    `echo '${page}' > /www/index.html\nexec ${BB} httpd -f -p ${host !== undefined ? `${host(ip)}:` : ''}${port} -h /www`,
  ],
})

let api: FakeKubeApiServer
let cluster: DevCluster & { cleanup(): Promise<void> }
let rt: ContainerdHarness
let kubeDir: string | undefined
let session: ClientHttp2Session
const clis: CliProcess[] = []
const local = new Map<string, number>()
let alpha: HarnessPod
let beta: HarnessPod
let ipOnly: HarnessPod

const kubePod = (
  p: { namespace: string; name: string; uid: string },
  annotations?: Record<string, string>,
): FakePod => ({
  namespace: p.namespace,
  name: p.name,
  uid: p.uid,
  nodeName: 'node-a',
  phase: 'Running',
  ...(annotations !== undefined ? { annotations } : {}),
  containers: [{ name: 'main', ports: [{ containerPort: 8080 }] }],
})

/** `busybox wget` of a pod's page from inside its namespace (not through pfgate). */
function pageInside(pod: HarnessPod, port = 8080, host = '127.0.0.1'): string | undefined {
  const r = spawnSync(
    'nsenter',
    [`--net=${pod.netnsPath}`, BB, 'wget', '-qO-', `http://${host}:${port}/`],
    {
      encoding: 'utf8',
    },
  )
  return r.status === 0 ? r.stdout.trim() : undefined
}

/** GET / through a forwarded local port; the body, or undefined when the connection failed. */
async function pageThrough(port: number, timeoutMs = 10_000): Promise<string | undefined> {
  let s: Socket
  try {
    s = await dial(port)
  } catch {
    return undefined
  }
  return new Promise((resolve) => {
    let text = ''
    const timer = setTimeout(() => s.destroy(), timeoutMs)
    s.setEncoding('utf8')
    s.on('data', (d: string) => (text += d))
    // The server closes after its answer (HTTP/1.0); our half-open side follows.
    s.once('end', () => s.end())
    s.once('close', () => {
      clearTimeout(timer)
      const i = text.indexOf('\r\n\r\n')
      resolve(i < 0 ? undefined : text.slice(i + 4).trim())
    })
    s.once('error', () => undefined)
    s.write('GET / HTTP/1.0\r\n\r\n')
  })
}

async function forward(key: string, pod: string, remote: number): Promise<CliProcess> {
  const cli = runCli(['port-forward', '--quiet', pod, `:${remote}`], {
    KUBECONFIG: cluster.kubeconfig,
    HOME: cluster.dir,
  })
  clis.push(cli)
  const [f] = parseForwarding(await cli.waitForLines(2))
  local.set(key, f?.port as number)
  return cli
}

before(async () => {
  api = await FakeKubeApiServer.start({ tokens: ['gateway-sa-token'] })
  kubeDir = mkdtempSync(join(tmpdir(), 'pfgate-kube-'))
  const kubeconfig = join(kubeDir, 'kubeconfig')
  writeFakeKubeconfig(api, kubeconfig, 'gateway-sa-token')
  cluster = await startTestCluster(
    {
      registry: {
        source: 'kubernetes',
        file: undefined,
        kubeconfig,
        agentPort: 1,
        resyncPeriod: 0,
      },
    },
    { runtime: 'containerd' },
  )
  rt = cluster.runtimes?.['node-a'] as ContainerdHarness
  upsertDevNodes(api, cluster.agentPorts)
  api.upsertPod({
    namespace: 'default',
    name: 'echo',
    uid: cluster.podUids.echo,
    nodeName: 'node-a',
    phase: 'Running',
    containers: [{ name: 'main', ports: [{ containerPort: 5000 }, { containerPort: 6000 }] }],
  })
  // Two pods on one node serving the same port; alpha's annotation names beta's
  // namespace (what used to decide where its bytes went), and must change nothing.
  alpha = await rt.runPod({ namespace: 'default', name: 'alpha', containers: [httpd('alpha')] })
  beta = await rt.runPod({ namespace: 'default', name: 'beta', containers: [httpd('beta')] })
  ipOnly = await rt.runPod({
    namespace: 'default',
    name: 'ip-only',
    containers: [httpd('ip-only', 9090, (ip) => ip)],
  })
  api.upsertPod(kubePod(alpha, { 'pfgate.io/netns': beta.netnsPath }))
  api.upsertPod(kubePod(beta))
  api.upsertPod(kubePod(ipOnly))
  await eventually(
    () =>
      pageInside(alpha) === 'alpha' &&
      pageInside(beta) === 'beta' &&
      pageInside(ipOnly, 9090, ipOnly.ip) === 'ip-only',
    15_000,
    'the pods to serve',
  )
  await forward('echo', 'echo', 5000)
  await forward('alpha', 'alpha', 8080)
  await forward('beta', 'beta', 8080)
  await forward('ip-only', 'ip-only', 9090)
  session = await connectGateway(cluster.gatewayUrl, cluster.dir)
})

after(async () => {
  session?.close()
  for (const c of clis) await c.stop()
  await cluster?.cleanup()
  await api?.close()
  if (kubeDir !== undefined) rmSync(kubeDir, { recursive: true, force: true })
})

test('16 MiB echoed intact through CLI → gateway → agent (CRI) → containerd pod; the port is only inside the pod', async () => {
  const echoNetns = cluster.podNetns?.echo as string
  await eventually(
    async () => {
      const r = await echoRoundTrip(local.get('echo') as number, 1024).catch(() => undefined)
      return r !== undefined && r.received === r.sent
    },
    15_000,
    'the echo pod',
  )
  const r = await echoRoundTrip(local.get('echo') as number, 16 * 1024 * 1024)
  assert.equal(r.receivedBytes, 16 * 1024 * 1024)
  assert.equal(r.received, r.sent)
  const inPod = spawnSync('nsenter', [`--net=${echoNetns}`, 'ss', '-Hltn', 'sport = :5000'], {
    encoding: 'utf8',
  }).stdout
  const onHost = spawnSync('ss', ['-Hltn', 'sport = :5000'], { encoding: 'utf8' }).stdout
  assert.match(inPod, /:5000\b/, 'the echo pod listens on 5000 in its namespace')
  assert.doesNotMatch(onHost, /:5000\b/, 'nothing listens on 5000 in the host namespace')
  const opened = await waitForRecords(
    trailPath(cluster),
    (rs) => rs.find((x) => x.type === 'stream.opened' && x.pod === 'echo'),
    'the echo stream opened',
  )
  assert.equal(opened.podUid, cluster.podUids.echo)
})

test('unmodified kubectl reaches the containerd pod too', async () => {
  const kf = await startKubectlForward('1.33', ['echo', ':5000'], 1, {
    kubeconfig: cluster.kubeconfig,
    home: join(cluster.dir, 'kubectl-home'),
  })
  try {
    const r = await echoThrough(kf.local[0]?.port as number, 1024 * 1024)
    assert.equal(r.gotSha, r.sentSha)
  } finally {
    await kf.stop()
  }
})

test('two pods serving the same port each reach only themselves, whatever an annotation says', async () => {
  for (let i = 0; i < 3; i++) {
    assert.equal(await pageThrough(local.get('alpha') as number), 'alpha')
    assert.equal(await pageThrough(local.get('beta') as number), 'beta')
  }
})

test('a server bound only to the pod IP is reachable', async () => {
  assert.equal(await pageThrough(local.get('ip-only') as number), 'ip-only')
})

test('a pod recreated in a new sandbox (new namespace): the next connection reaches the new one', async () => {
  const old = alpha
  alpha = await rt.recreatePod(alpha, { containers: [httpd('alpha-2')] })
  assert.notEqual(alpha.netnsPath, old.netnsPath)
  await eventually(() => pageInside(alpha) === 'alpha-2', 15_000, 'the new alpha to serve')
  // The first connection after the replacement, with no retry.
  assert.equal(await pageThrough(local.get('alpha') as number), 'alpha-2')
})

test('a sandbox whose process died while the agent had it cached: the next connection is refused, not sent into its namespace', async () => {
  const cli = clis[1] as CliProcess
  // Warm: the agent's cache has alpha's sandbox (2 s TTL) from this connection.
  assert.equal(await pageThrough(local.get('alpha') as number), 'alpha-2')
  const pid = sandboxNetwork(await rt.client.podSandboxStatus(alpha.sandboxId, true)).pid
  assert.ok(pid !== undefined, 'containerd reports the sandbox process')
  process.kill(pid, 'SIGKILL')
  await eventually(
    async () =>
      (await rt.client.listPodSandbox({ id: alpha.sandboxId }))[0]?.state === 'SANDBOX_NOTREADY',
    10_000,
    'the runtime to see the sandbox die',
  )
  // Its namespace and the pod's server in it are still there (the kubelet has not
  // stopped the sandbox yet): a cache checking only the path would reach it.
  assert.equal(pageInside(alpha), 'alpha-2')
  assert.equal(await pageThrough(local.get('alpha') as number), undefined, 'refused')
  await cli.waitForStderr(/pod not found: default\/alpha \(uid [^)]+\) has no ready sandbox/)
  // What the kubelet does next: a new sandbox, reached at once.
  alpha = await rt.recreatePod(alpha, { containers: [httpd('alpha-3')] })
  await eventually(() => pageInside(alpha) === 'alpha-3', 15_000, 'the new alpha to serve')
  assert.equal(await pageThrough(local.get('alpha') as number), 'alpha-3')
})

test('a pod recreated under its name with a new UID is refused until the registry has that UID', async () => {
  const cli = clis[2] as CliProcess
  const oldUid = beta.uid
  beta = await rt.recreatePod(beta, { uid: randomUUID(), attempt: 0 })
  await eventually(() => pageInside(beta) === 'beta', 15_000, 'the new beta to serve')
  assert.equal(await pageThrough(local.get('beta') as number), undefined, 'refused')
  await cli.waitForStderr(
    new RegExp(`pod not found: default/beta \\(uid ${oldUid}\\) has no ready sandbox`),
  )
  const failed = await waitForRecords(
    trailPath(cluster),
    (rs) => rs.find((x) => x.type === 'stream.failed' && x.pod === 'beta' && x.podUid === oldUid),
    'the refused stream in the audit trail',
  )
  assert.equal(failed.error?.code, 'PFG_ERR_AGENT_POD_NOT_FOUND')
  assert.equal(failed.reason, 'pod-not-found')
  api.deletePod('default', 'beta')
  api.upsertPod(kubePod(beta))
  await eventually(
    async () => (await pageThrough(local.get('beta') as number)) === 'beta',
    15_000,
    'beta under its new UID',
  )
  assert.equal(cli.proc.exitCode, null, 'the CLI kept running')
})

test('a stopped pod: a clear error, and the CLI stays up', async () => {
  const cli = clis[1] as CliProcess
  await rt.stopPod(alpha)
  assert.equal(await pageThrough(local.get('alpha') as number), undefined)
  await cli.waitForStderr(
    /pod not found: default\/alpha \(uid [^)]+\) has no ready sandbox in the container runtime on this node/,
  )
  assert.equal(cli.proc.exitCode, null, 'the CLI kept running')
  // Its other pods are unaffected.
  assert.equal(await pageThrough(local.get('ip-only') as number), 'ip-only')
})

test('containerd stopped: the agent is not ready and new streams get 503; it recovers', async () => {
  const readyz = async (node: string) =>
    h2Request(session, {
      ':method': 'GET',
      ':path': `/proxy/nodes/${node}/readyz`,
      authorization: `Bearer ${cluster.token}`,
    })
  assert.equal((await readyz('node-a')).status, 200)
  await rt.stopDaemon()
  try {
    await eventually(
      async () => (await readyz('node-a')).status === 503,
      10_000,
      'node-a not ready',
    )
    const st = parseStatus((await readyz('node-a')).body)
    assert.equal(
      st !== undefined ? statusErrorCode(st) : undefined,
      'PFG_ERR_AGENT_RUNTIME_UNAVAILABLE',
    )
    assert.match(st?.message ?? '', /the container runtime( at unix:\/\/\S+)? is not available/)
    assert.equal((await readyz('node-b')).status, 200, 'node-b has its own runtime')
    const raw = await openRaw(session, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token)
    assert.equal(raw.status, 503)
    raw.req.close()
    const failed = await waitForRecords(
      trailPath(cluster),
      (rs) => rs.find((x) => x.type === 'stream.failed' && x.reason === 'runtime-unavailable'),
      'the 503 in the audit trail',
    )
    assert.equal(failed.error?.code, 'PFG_ERR_AGENT_RUNTIME_UNAVAILABLE')
  } finally {
    await rt.startDaemon()
  }
  await eventually(
    async () => (await readyz('node-a')).status === 200,
    15_000,
    'node-a ready again',
  )
  const r = await echoRoundTrip(local.get('echo') as number, 64 * 1024)
  assert.equal(r.received, r.sent)
})
