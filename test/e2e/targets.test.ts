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
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { startTestCluster } from '../helpers/cluster.js'
import { runCli, runCliToEnd } from '../helpers/cli.js'
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

/** Starts `pfgate port-forward ARGS` with the dev kubeconfig; resolves with its local port. */
async function cliForward(args: string[]): Promise<{ cli: CliProcess; port: number }> {
  const cli = runCli(['port-forward', ...args], {
    KUBECONFIG: cluster.kubeconfig,
    HOME: cluster.dir,
  })
  clis.add(cli)
  // A workload's named port is shown as asked (`-> http`): the pods resolve it.
  const lines = await cli.waitForLines(2)
  const port = Number(/^Forwarding from 127\.0\.0\.1:(\d+) -> /.exec(lines[0] ?? '')?.[1])
  assert.ok(port > 0, lines.join('\n'))
  return { cli, port }
}

/** The pod that served a page (`hello from NAME: ...`). */
function servedBy(page: string): string {
  return /^hello from (\S+):/.exec(page)?.[1] ?? `?${page}`
}

/** Waits until the gateway's view of `default/<pod>` is `present` (the registry reloads). */
async function podVisible(pod: string, present: boolean): Promise<void> {
  await eventually(
    async () =>
      (
        await gatewayGet(
          cluster.gatewayUrl,
          cluster.dir,
          `/api/v1/namespaces/default/pods/${pod}`,
          cluster.token,
        )
      ).status === (present ? 200 : 404),
    15_000,
    `the registry to ${present ? 'show' : 'drop'} ${pod}`,
  )
}

describe('pfgate port-forward TYPE/NAME', () => {
  test('svc/hello: a pod is picked per connection (both replicas serve), port 80 → named http', async () => {
    const { cli, port } = await cliForward(['svc/hello', ':80'])
    try {
      const seen = new Set<string>()
      for (let i = 0; i < 20 && seen.size < 2; i++) seen.add(servedBy(await httpGet(port)))
      assert.deepEqual([...seen].sort(), ['hello-6c7d9-q8x2m', 'hello-6c7d9-z4k7p'])
    } finally {
      await cli.stop()
    }
  })

  test('deploy/hello and rs/… by named port; unknown ones are refused before listening', async () => {
    for (const args of [
      ['deploy/hello', ':http'],
      ['rs/hello-6c7d9', ':8080'],
    ]) {
      const { cli, port } = await cliForward(args)
      try {
        assert.match(servedBy(await httpGet(port)), /^hello-6c7d9-/)
      } finally {
        await cli.stop()
      }
    }
    const env = { KUBECONFIG: cluster.kubeconfig, HOME: cluster.dir }
    const nosvc = await runCliToEnd(['port-forward', 'svc/nosuch', '80'], env)
    assert.equal(nosvc.code, 1)
    assert.match(nosvc.stderr, /services "nosuch" (is forbidden|not found)/)
    const noport = await runCliToEnd(['port-forward', 'svc/hello', '81'], env)
    assert.equal(noport.code, 1)
    assert.match(noport.stderr, /Service hello does not have a service port 81/)
    const badType = await runCliToEnd(['port-forward', 'cronjob/x', '80'], env)
    assert.equal(badType.code, 2)
    assert.match(badType.stderr, /doesn't have a resource type "cronjob"/)
  })

  test('svc/hello survives the deletion of the pod it was using; both connections audited', async (t) => {
    const { cli, port } = await cliForward(['svc/hello', ':80'])
    let removed: string | undefined
    let entry: Record<string, unknown> | undefined
    try {
      const first = servedBy(await httpGet(port))
      // The pod is deleted: its process killed and its registry entry removed.
      removed = first
      await cluster.kill(`pod:${first}`, 'SIGKILL', false)
      updateRegistry(cluster.dir, (pods) => {
        entry = pods.find((p) => p.name === first)
        return pods.filter((p) => p.name !== first)
      })
      await podVisible(first, false)
      const second = servedBy(await httpGet(port))
      assert.notEqual(second, first, 'the next connection reached the other replica')
      assert.equal(cli.proc.exitCode, null, 'the same CLI, never restarted')
      const recs = readAudit(cluster.dir).filter(
        (r) => r.type === 'stream.opened' && r.target === 'svc/hello:80',
      )
      const mine = recs.slice(-2)
      assert.deepEqual(
        mine.map((r) => [r.target, r.pod, r.port]),
        [
          ['svc/hello:80', first, 8080],
          ['svc/hello:80', second, 8080],
        ],
      )
      for (const r of mine) t.diagnostic(JSON.stringify(r))
    } finally {
      await cli.stop()
      if (removed !== undefined) {
        await cluster.restart(`pod:${removed}`)
        updateRegistry(cluster.dir, (pods) => [...pods, entry as never])
        await podVisible(removed, true)
      }
    }
  })

  test('no ready pod: each connection gets the error, the CLI keeps listening and recovers', async () => {
    const { cli, port } = await cliForward(['svc/hello', ':80'])
    let saved: Record<string, unknown>[] = []
    try {
      updateRegistry(cluster.dir, (pods) => {
        saved = pods.filter((p) => p.name.startsWith('hello-'))
        return pods.map((p) => (p.name.startsWith('hello-') ? { ...p, ready: false } : p))
      })
      await eventually(
        async () =>
          (await httpGet(port).then(
            () => false,
            () => true,
          )) && /no endpoints available for service "hello"/.test(cli.stderr()),
        15_000,
        'the 503 for a service without ready pods',
      )
      assert.equal(cli.proc.exitCode, null)
      updateRegistry(cluster.dir, (pods) => [
        ...pods.filter((p) => !p.name.startsWith('hello-')),
        ...(saved as never[]),
      ])
      await eventually(
        async () => /^hello from hello-/.test(await httpGet(port).catch(() => '')),
        15_000,
        'a ready pod again',
      )
    } finally {
      await cli.stop()
    }
  })
})

/** Occupies `port` on the given addresses (a busy local port); returns the closer. */
async function occupy(addresses: string[], port = 0): Promise<{ port: number; close: () => void }> {
  const servers: ReturnType<typeof createServer>[] = []
  for (const host of addresses) {
    const srv = createServer()
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject)
      srv.listen({ host, port, ipv6Only: host.includes(':'), exclusive: true }, () => resolve())
    })
    port = (srv.address() as AddressInfo).port
    servers.push(srv)
  }
  return { port, close: () => servers.forEach((x) => x.close()) }
}

async function freePort(): Promise<number> {
  const o = await occupy(['127.0.0.1', '::1'])
  o.close()
  return o.port
}

describe('kubectl parity (items 5, 6, 7, 9): the same behaviour as kubectl 1.33', () => {
  const env = (): NodeJS.ProcessEnv => ({ KUBECONFIG: cluster.kubeconfig, HOME: cluster.dir })

  test('a busy local port is reported and skipped; the others are forwarded (pfgate and kubectl)', async () => {
    const busy = await occupy(['127.0.0.1', '::1'])
    try {
      for (const who of ['pfgate', 'kubectl'] as const) {
        const free = await freePort()
        const args = ['echo', `${free}:5000`, `${busy.port}:6000`]
        let out: () => string
        let errText: () => string
        let stop: () => Promise<unknown>
        if (who === 'pfgate') {
          const cli = runCli(['port-forward', ...args], env())
          clis.add(cli)
          await cli.waitForStderr(new RegExp(`Unable to listen on port ${busy.port}:`))
          await cli.waitForLines(2)
          out = () => cli.stdout()
          errText = () => cli.stderr()
          stop = () => cli.stop()
          assert.equal(cli.proc.exitCode, null, 'pfgate keeps forwarding the other port')
        } else {
          const f = await startKubectlForward('1.33', args, 1, opts())
          forwards.add(f)
          await eventually(() => /Unable to listen on port/.test(f.stderr()), 10_000, 'kubectl')
          out = f.stdout
          errText = f.stderr
          stop = () => f.stop()
        }
        try {
          assert.match(out(), new RegExp(`Forwarding from 127\\.0\\.0\\.1:${free} -> 5000`), who)
          assert.match(
            errText(),
            new RegExp(`Unable to listen on port ${busy.port}: Listeners failed to create`),
            who,
          )
          const r = await echoThrough(free, 1024)
          assert.equal(r.gotSha, r.sentSha, who)
        } finally {
          await stop()
        }
      }
    } finally {
      busy.close()
    }
    // Every port busy: exit 1.
    const all = await occupy(['127.0.0.1', '::1'])
    try {
      const r = await runCliToEnd(['port-forward', 'echo', `${all.port}:5000`], env())
      assert.equal(r.code, 1)
      assert.match(r.stderr, /error: unable to listen on any of the requested ports/)
    } finally {
      all.close()
    }
  })

  test('--address: an explicit list fails the port when one address fails, localhost tolerates it; repeated flags all apply', async () => {
    const v6busy = await occupy(['::1'])
    try {
      const explicit = runCli(
        ['port-forward', '--address', '127.0.0.1,::1', 'echo', `${v6busy.port}:5000`, ':6000'],
        env(),
      )
      clis.add(explicit)
      await explicit.waitForStderr(new RegExp(`Unable to listen on port ${v6busy.port}:`))
      await explicit.waitForLines(2)
      assert.doesNotMatch(explicit.stdout(), new RegExp(`:${v6busy.port} ->`))
      await explicit.stop()
      const lh = runCli(['port-forward', 'echo', `${v6busy.port}:5000`], env())
      clis.add(lh)
      const lines = await lh.waitForLines(1)
      assert.match(
        lines[0] ?? '',
        new RegExp(`^Forwarding from 127\\.0\\.0\\.1:${v6busy.port} -> 5000$`),
      )
      await lh.stop()
    } finally {
      v6busy.close()
    }
    const both = runCli(
      ['port-forward', '--address', '127.0.0.1', '--address', '::1', 'echo', ':5000'],
      env(),
    )
    clis.add(both)
    const lines = await both.waitForLines(2)
    assert.match(lines.join('\n'), /127\.0\.0\.1:\d+ -> 5000\nForwarding from \[::1\]:\d+ -> 5000/)
    await both.stop()
  })

  test('a bare named port: the local port is the container port; an unknown name is kubectl’s error', async () => {
    const cli = runCli(['port-forward', 'echo', 'echo-alt'], env())
    clis.add(cli)
    const [line] = await cli.waitForLines(1)
    assert.equal(line, 'Forwarding from 127.0.0.1:6000 -> 6000')
    await cli.stop()
    const bad = await runCliToEnd(['port-forward', 'echo', 'nosuch'], env())
    assert.equal(bad.code, 1)
    assert.match(bad.stderr, /error: Pod 'echo' does not have a named port 'nosuch'/)
    const k = await runKubectl('1.33', ['port-forward', 'echo', 'nosuch'], {
      ...opts(),
      timeoutMs: 20_000,
    })
    assert.match(k.stderr, /Pod 'echo' does not have a named port 'nosuch'/)
  })

  test('--pod-running-timeout: a Pending pod is waited for; invalid values exit 2', async () => {
    // The echo pod goes Pending (as while its containers start), then Running again.
    const setPhase = (phase: string): void =>
      updateRegistry(cluster.dir, (pods) =>
        pods.map((p) => (p.name === 'echo' ? { ...p, phase } : p)),
      )
    setPhase('Pending')
    await eventually(
      async () =>
        /"phase":"Pending"/.test(
          (
            await gatewayGet(
              cluster.gatewayUrl,
              cluster.dir,
              '/api/v1/namespaces/default/pods/echo',
              cluster.token,
            )
          ).body,
        ),
      15_000,
      'the echo pod to be Pending',
    )
    const short = await runCliToEnd(
      ['port-forward', '--pod-running-timeout', '1s', 'echo', ':5000'],
      env(),
    )
    assert.equal(short.code, 1)
    assert.match(short.stderr, /pod is not running. Current status=Pending/)
    const cli = runCli(['port-forward', '--pod-running-timeout', '30s', 'echo', ':5000'], env())
    clis.add(cli)
    await new Promise((r) => setTimeout(r, 1500))
    assert.equal(cli.stdout(), '', 'still waiting')
    setPhase('Running')
    const [line] = await cli.waitForLines(1, 20_000)
    const port = Number(/:(\d+) -> 5000$/.exec(line ?? '')?.[1])
    const r = await echoThrough(port, 1024)
    assert.equal(r.gotSha, r.sentSha)
    await cli.stop()
    for (const v of ['0s', 'soon', '-1m']) {
      const bad = await runCliToEnd(
        ['port-forward', `--pod-running-timeout=${v}`, 'echo', '5000'],
        env(),
      )
      assert.equal(bad.code, 2, v)
      assert.match(bad.stderr, /^error: invalid --pod-running-timeout/m)
    }
  })

  test('errors: the ref the gateway sends is shown; every invalid argument exits 2', async () => {
    const unauth = await runCliToEnd(['port-forward', '--token', 'bogus', 'echo', '5000'], env())
    assert.equal(unauth.code, 1)
    assert.match(
      unauth.stderr,
      /^error: You must be logged in to the server \(Unauthorized \(ref [0-9a-f]+\)\)/m,
    )
    for (const args of [
      ['-n', 'Bad_NS', 'echo', '5000'],
      ['echo', '0'],
      ['cronjob/x', '5000'],
      ['--address', 'nowhere', 'echo', '5000'],
      ['echo'],
    ]) {
      const r = await runCliToEnd(['port-forward', ...args], env())
      assert.equal(r.code, 2, args.join(' '))
      assert.match(r.stderr, /^error: /m, args.join(' '))
    }
  })
})
