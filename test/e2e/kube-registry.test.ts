/**
 * The gateway learns placement from a Kubernetes API (a local fake that speaks the
 * real list/watch wire format): the whole system — CLI, gateway, agents, demo pods —
 * with `registry.source: kubernetes`. Pods appear, move to another node, stop
 * running and come back; each new stream goes where the cluster says.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startTestCluster } from '../helpers/cluster.js'
import { parseForwarding, runCli } from '../helpers/cli.js'
import type { CliProcess } from '../helpers/cli.js'
import { echoRoundTrip, eventually } from '../helpers/net.js'
import {
  FakeKubeApiServer,
  upsertDevNodes,
  writeFakeKubeconfig,
} from '../helpers/fake-kube-apiserver.js'
import type { FakePod } from '../helpers/fake-kube-apiserver.js'
import type { DevCluster } from '../../src/dev/cluster.js'

let api: FakeKubeApiServer
let cluster: DevCluster & { cleanup(): Promise<void> }
let cli: CliProcess
let port: number

const echoPod = (nodeName: string, phase = 'Running'): FakePod => ({
  namespace: 'default',
  name: 'echo',
  nodeName,
  phase,
  containers: [{ name: 'main', ports: [{ name: 'echo', containerPort: 5000 }] }],
})

function auditRecords(): { type: string; node?: string; pod?: string; error?: { code: string } }[] {
  return readFileSync(join(cluster.dir, 'audit', 'audit.log'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { type: string })
}

async function forwardWorks(): Promise<boolean> {
  try {
    const r = await echoRoundTrip(port, 4096, '127.0.0.1', 5000)
    return r.received === r.sent
  } catch {
    return false
  }
}

let dir: string | undefined

before(async () => {
  api = await FakeKubeApiServer.start({ tokens: ['gateway-sa-token'] })
  dir = mkdtempSync(join(tmpdir(), 'pfgate-kube-'))
  const kubeconfig = join(dir, 'kubeconfig')
  writeFakeKubeconfig(api, kubeconfig, 'gateway-sa-token')
  cluster = await startTestCluster({
    // `file: undefined` drops the static source's key from the generated config.
    registry: { source: 'kubernetes', file: undefined, kubeconfig, agentPort: 1, resyncPeriod: 0 },
  })
  upsertDevNodes(api, cluster.agentPorts)
  api.upsertPod(echoPod('node-a'))
  const env = { KUBECONFIG: cluster.kubeconfig, HOME: cluster.dir }
  cli = runCli(['port-forward', '--quiet', 'echo', ':5000'], env)
  const [fwd] = parseForwarding(await cli.waitForLines(2))
  port = fwd?.port as number
})
after(async () => {
  await cli?.stop()
  await cluster?.cleanup()
  await api?.close()
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
})

test('a pod listed by the API server is forwarded to its node', async () => {
  await eventually(forwardWorks, 10_000, 'forwarding through the kubernetes registry')
  const opened = auditRecords().filter((r) => r.type === 'stream.opened')
  assert.ok(opened.length > 0 && opened.every((r) => r.node === 'node-a'))
})

test('a pod that moves to another node is routed to the new node for new streams', async () => {
  // Re-created on node-b (whose agent does not serve it: its answer proves where we went).
  api.deletePod('default', 'echo')
  api.upsertPod(echoPod('node-b'))
  await eventually(
    async () => {
      await forwardWorks() // a new local connection: a new stream
      return auditRecords().some(
        (r) =>
          r.type === 'stream.failed' &&
          r.node === 'node-b' &&
          r.error?.code === 'PFG_ERR_AGENT_POD_NOT_FOUND',
      )
    },
    15_000,
    'a stream routed to node-b',
  )
  // And back to node-a: forwarding works again without restarting anything.
  api.deletePod('default', 'echo')
  api.upsertPod(echoPod('node-a'))
  await eventually(forwardWorks, 15_000, 'forwarding after the pod moved back')
})

test('a pod that is not Running gets a clear error', async () => {
  api.upsertPod(echoPod('node-a', 'Pending'))
  await eventually(
    async () =>
      !(await forwardWorks()) && /pod is not running\. Current status=Pending/.test(cli.stderr()),
    15_000,
    'the not-running error',
  )
  api.upsertPod(echoPod('node-a', 'Running'))
  await eventually(forwardWorks, 15_000, 'forwarding once the pod runs again')
})

test('a deleted pod is not found', async () => {
  api.deletePod('default', 'echo')
  await eventually(
    async () => !(await forwardWorks()) && /pods "echo" not found/.test(cli.stderr()),
    15_000,
    'the not-found error',
  )
})
