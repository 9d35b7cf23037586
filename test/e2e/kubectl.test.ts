/**
 * Unmodified kubectl port-forwarding through the gateway of a real dev cluster
 * (gateway, agents, demo pods as processes; TLS; the dev kubeconfig as it is):
 * - kubectl 1.33 (SPDY tunneled in WebSocket), 1.28 and 1.20 (SPDY; 1.20 sends no
 *   pings): one port with 16 MiB of random bytes each way (sha256 equal) and 50
 *   concurrent local connections; two ports by name and a refused third; a forbidden
 *   namespace; a pod that is not Running;
 * - kubectl 1.32 with KUBECTL_PORT_FORWARD_WEBSOCKETS=false (forced SPDY), and with the
 *   WebSocket upgrade refused by the gateway (`kubernetes.websocketTunnel: false`: the
 *   fallback);
 * - checks that happen per stream, not only per upgrade (a pod that stops running, a
 *   port the user may not use);
 * - the audit trail names the client protocol and user agent.
 * A missing kubectl build fails its tests (see test/helpers/kube-clients.ts).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { once } from 'node:events'
import { join } from 'node:path'
import { startTestCluster } from '../helpers/cluster.js'
import {
  addPods,
  closedPort,
  echoThrough,
  gatewayGet,
  readAudit,
  refusedThrough,
  runKubectl,
  startKubectlForward,
  until,
  updateRegistry,
} from '../helpers/kube-clients.js'
import type { KubectlForward, TransferResult } from '../helpers/kube-clients.js'
import type { DevCluster } from '../../src/dev/cluster.js'

type Cluster = DevCluster & { cleanup(): Promise<void> }

const MiB = 1024 * 1024
let cluster: Cluster
let refused: number
const forwards = new Set<KubectlForward>()
let homeSeq = 0

/** The dev rule plus a namespace where only port 5000 may be used. */
const AUTHZ = {
  authorization: {
    rules: [
      { groups: ['pfgate:developers'], namespaces: ['default'], pods: ['*'], ports: ['1-65535'] },
      { groups: ['pfgate:developers'], namespaces: ['limited'], pods: ['*'], ports: [5000] },
    ],
    admins: { groups: ['pfgate:admins'] },
  },
}

function opts(c: Cluster = cluster): { kubeconfig: string; home: string } {
  return { kubeconfig: c.kubeconfig, home: join(c.dir, `home-${++homeSeq}`) }
}

async function forward(
  version: string,
  args: string[],
  ports: number,
  extra: { env?: NodeJS.ProcessEnv; c?: Cluster } = {},
): Promise<KubectlForward> {
  const f = await startKubectlForward(version, args, ports, {
    ...opts(extra.c),
    ...(extra.env !== undefined ? { env: extra.env } : {}),
  })
  forwards.add(f)
  void f.exited.then(() => forwards.delete(f))
  return f
}

function assertEchoed(r: TransferResult, size: number, what: string): void {
  assert.equal(r.gotBytes, size, `${what}: bytes back`)
  assert.equal(r.gotSha, r.sentSha, `${what}: sha256 of the echo`)
}

/** Adds kubectl's stderr and the last audit records to a failure (for CI logs). */
function explain(f: KubectlForward): (err: unknown) => never {
  return (err) => {
    const tail = readAudit(cluster.dir)
      .slice(-6)
      .map((r) => JSON.stringify(r))
      .join('\n')
    throw new Error(
      `${err instanceof Error ? err.message : String(err)}\nkubectl stderr:\n${f.stderr()}\naudit tail:\n${tail}`,
      { cause: err },
    )
  }
}

function mibps(bytes: number, ms: number): string {
  return ((bytes / MiB / ms) * 1000).toFixed(0)
}

before(async () => {
  cluster = await startTestCluster(AUTHZ)
  refused = await closedPort()
  // A pod in a namespace the dev user may not use, one that is not running, and one in
  // the port-limited namespace (on node-a; only refusals are tested with them).
  await addPods(
    cluster,
    [
      { namespace: 'restricted', name: 'echo', node: 'node-a', phase: 'Running', ports: [] },
      { namespace: 'default', name: 'pending', node: 'node-a', phase: 'Pending', ports: [] },
      { namespace: 'limited', name: 'echo', node: 'node-a', phase: 'Running', ports: [] },
    ],
    'pending',
  )
})

after(async () => {
  for (const f of forwards) f.proc.kill('SIGKILL')
  await cluster?.cleanup()
})

const VERSIONS = [
  { version: '1.33', protocol: 'ws-spdy', ua: /^kubectl(\.1\.33)?\/v1\.33\./, fatalErrors: true },
  { version: '1.28', protocol: 'spdy', ua: /^kubectl(\.1\.28)?\/v1\.28\./, fatalErrors: true },
  { version: '1.20', protocol: 'spdy', ua: /^kubectl\/v1\.20\./, fatalErrors: false },
] as const

for (const v of VERSIONS) {
  describe(`kubectl ${v.version} (${v.protocol})`, () => {
    test('one port: 16 MiB each way, then 50 concurrent connections; audited with protocol and user agent', async (t) => {
      const before = readAudit(cluster.dir).length
      const f = await forward(v.version, ['echo', ':5000'], 1)
      const port = f.local[0]!.port
      const big = await echoThrough(port, 16 * MiB).catch(explain(f))
      assertEchoed(big, 16 * MiB, '16 MiB')
      t.diagnostic(
        `kubectl ${v.version}: 16 MiB echoed in ${big.ms.toFixed(0)} ms (${mibps(16 * MiB, big.ms)} MiB/s each way)`,
      )
      const t0 = performance.now()
      const many = await Promise.all(
        Array.from({ length: 50 }, () => echoThrough(port, 256 * 1024)),
      ).catch(explain(f))
      const ms = performance.now() - t0
      many.forEach((r, i) => assertEchoed(r, 256 * 1024, `connection ${i}`))
      t.diagnostic(
        `kubectl ${v.version}: 50 concurrent connections × 256 KiB in ${ms.toFixed(0)} ms`,
      )
      assert.equal(await f.stop(), 0, f.stderr())

      const recs = readAudit(cluster.dir).slice(before)
      const opened = recs.filter((r) => r.type === 'stream.opened')
      assert.equal(opened.length, 51)
      for (const r of opened) {
        assert.equal(r.protocol, v.protocol)
        assert.match(r.userAgent ?? '', v.ua)
        assert.equal(r.user, 'dev')
        assert.equal(r.port, 5000)
      }
      await until(
        () =>
          readAudit(cluster.dir)
            .slice(before)
            .filter((r) => r.type === 'stream.closed').length === 51,
        'the close records',
      )
      const closed = readAudit(cluster.dir)
        .slice(before)
        .filter((r) => r.type === 'stream.closed')
      const bigClose = closed.find((r) => r.bytesClientToPod === 16 * MiB)
      assert.ok(bigClose !== undefined, 'a close record with 16 MiB client→pod')
      assert.equal(bigClose.bytesPodToClient, 16 * MiB)
      await until(
        () =>
          readAudit(cluster.dir)
            .slice(before)
            .some((r) => r.type === 'session.closed'),
        'the session close record',
      )
    })

    test('two ports by name, and a refused third', async () => {
      const f = await forward(v.version, ['pod/echo', ':echo', ':echo-alt', `:${refused}`], 3)
      assert.deepEqual(
        f.local.map((l) => l.remote),
        [5000, 6000, refused],
      )
      const [a, b] = await Promise.all([
        echoThrough(f.local[0]!.port, MiB + 7),
        echoThrough(f.local[1]!.port, MiB),
      ]).catch(explain(f))
      assertEchoed(a, MiB + 7, 'port 5000')
      assertEchoed(b, MiB, 'port 6000')
      await refusedThrough(f.local[2]!.port)
      const line = new RegExp(
        `an error occurred forwarding ${f.local[2]!.port} -> ${refused}: error forwarding port ${refused} to pod default/echo: dial tcp 127\\.0\\.0\\.1:${refused}: connect: connection refused`,
      )
      if (v.fatalErrors) {
        // kubectl ≥ 1.23 ends its whole session on error-stream text
        // (docs/kubernetes-protocols.md#the-error-stream).
        assert.equal(await f.exited, 1)
        assert.match(f.stderr(), line)
        assert.match(f.stderr(), /lost connection to pod/)
      } else {
        await until(() => line.test(f.stderr()), 'kubectl 1.20 to log the error')
        // 1.20 keeps its session: the next connection still works.
        assertEchoed(await echoThrough(f.local[0]!.port, 64 * 1024), 64 * 1024, 'after the error')
        assert.equal(f.proc.exitCode, null)
        await f.stop()
      }
      // Records other than stream.opened may linger a few ms before they are written.
      await until(
        () =>
          readAudit(cluster.dir).some(
            (r) =>
              r.type === 'stream.failed' &&
              r.port === refused &&
              r.reason === 'connect-refused' &&
              r.status === 502,
          ),
        'the stream.failed record of the refused port',
      )
    })

    test('a forbidden namespace', async () => {
      const r = await runKubectl(
        v.version,
        ['-n', 'restricted', 'port-forward', 'echo', ':5000'],
        opts(),
      )
      assert.equal(r.code, 1)
      assert.match(r.stderr, /Forbidden|forbidden/)
      assert.match(r.stderr, /restricted/)
    })

    test('a pod that is not Running', async () => {
      const r = await runKubectl(v.version, ['port-forward', 'pending', ':5000'], opts())
      assert.equal(r.code, 1)
      assert.match(
        r.stderr,
        /unable to forward port because pod is not running\. Current status=Pending/,
      )
    })
  })
}

describe('the kubectl on PATH with the dev kubeconfig as it is', () => {
  test('KUBECONFIG=<dev kubeconfig> kubectl port-forward echo 5000', async () => {
    const f = await startKubectlForward('dispatcher', ['echo', '5000'], 1, {
      ...opts(),
      kubeconfigEnv: true,
    })
    forwards.add(f)
    assert.deepEqual(f.local, [{ port: 5000, remote: 5000 }])
    assert.match(f.stdout(), /^Forwarding from 127\.0\.0\.1:5000 -> 5000$/m)
    assertEchoed(await echoThrough(5000, 1024 * 1024).catch(explain(f)), 1024 * 1024, 'port 5000')
    assert.equal(await f.stop(), 0)
  })
})

describe('kubectl get pods: the pods the user may forward to', () => {
  test('what a list does not serve is a Status: watch 405, field selectors 400', async () => {
    const get = (query: string) =>
      gatewayGet(
        cluster.gatewayUrl,
        cluster.dir,
        `/api/v1/namespaces/default/pods?${query}`,
        cluster.token,
      )
    const cases: [string, number, string, RegExp][] = [
      ['watch=true', 405, 'PFG_ERR_ROUTE_METHOD_NOT_ALLOWED', /watch pods/],
      ['fieldSelector=status.phase%3DRunning', 400, 'PFG_ERR_ROUTE_BAD_QUERY', /field selectors/],
      ['labelSelector=app%20in%20(echo)', 400, 'PFG_ERR_ROUTE_BAD_QUERY', /set-based/],
    ]
    for (const [query, status, code, message] of cases) {
      const r = await get(query)
      assert.equal(r.status, status, query)
      const body = JSON.parse(r.body) as {
        kind: string
        message: string
        details?: { causes?: { reason: string }[] }
      }
      assert.equal(body.kind, 'Status')
      assert.match(body.message, message)
      assert.equal(body.details?.causes?.[0]?.reason, code)
    }
    assert.equal((await get('limit=500')).status, 200, 'chunking is answered with everything')
  })

  for (const version of ['1.33', '1.20']) {
    test(`kubectl ${version}: tables, all namespaces, selectors, JSON, and nothing hidden leaks`, async () => {
      const get = async (
        ...args: string[]
      ): Promise<{ code: number; stdout: string; stderr: string }> =>
        runKubectl(version, ['get', ...args], opts())
      const rows = (out: string): string[][] =>
        out
          .trim()
          .split('\n')
          .map((l) => l.trim().split(/\s+/))
      const all = await get('pods', '-A')
      assert.equal(all.code, 0, all.stderr)
      const table = rows(all.stdout)
      assert.deepEqual(table[0], ['NAMESPACE', 'NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE'])
      assert.deepEqual(
        table.slice(1).map((r) => `${r[0]}/${r[1]} ${r[2]} ${r[3]}`),
        [
          'default/dns 1/1 Running',
          'default/echo 1/1 Running',
          'default/hello-6c7d9-q8x2m 1/1 Running',
          'default/hello-6c7d9-z4k7p 1/1 Running',
          'default/pending 0/1 Pending',
          'default/web 1/1 Running',
          'limited/echo 1/1 Running',
        ],
        'restricted/echo is not listed: the user may not forward to it',
      )
      const selected = await get('pods', '-l', 'app=echo')
      assert.equal(selected.code, 0, selected.stderr)
      assert.deepEqual(
        rows(selected.stdout)
          .slice(1)
          .map((r) => r[0]),
        ['echo'],
      )
      const json = await get('pods', '-o', 'json')
      const list = JSON.parse(json.stdout) as { items: { metadata: { name: string } }[] }
      assert.deepEqual(
        list.items.map((i) => i.metadata.name),
        ['dns', 'echo', 'hello-6c7d9-q8x2m', 'hello-6c7d9-z4k7p', 'pending', 'web'],
      )
      const hidden = await get('pods', '-n', 'restricted')
      assert.equal(hidden.code, 0, hidden.stderr)
      assert.match(hidden.stderr, /No resources found in restricted namespace/)
      const forbidden = await get('pod', 'echo', '-n', 'restricted')
      assert.equal(forbidden.code, 1)
      assert.match(forbidden.stderr, /Forbidden|forbidden/)
      const setBased = await get('pods', '-l', 'app in (echo)')
      assert.equal(setBased.code, 1)
      assert.match(setBased.stderr, /set-based selectors are not supported/)
    })
  }
})

describe('kubectl 1.32: forced SPDY and the fallback', () => {
  test('KUBECTL_PORT_FORWARD_WEBSOCKETS=false speaks SPDY', async () => {
    const before = readAudit(cluster.dir).length
    const f = await forward('1.32', ['echo', ':5000'], 1, {
      env: { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' },
    })
    assertEchoed(await echoThrough(f.local[0]!.port, 4 * MiB), 4 * MiB, '4 MiB')
    assert.equal(await f.stop(), 0)
    const opened = readAudit(cluster.dir)
      .slice(before)
      .filter((r) => r.type === 'stream.opened')
    assert.equal(opened.length, 1)
    assert.equal(opened[0]!.protocol, 'spdy')
    assert.match(opened[0]!.userAgent ?? '', /\/v1\.32\./)
  })

  test('with the WebSocket tunnel refused by the gateway, kubectl falls back to SPDY', async () => {
    const c = await startTestCluster({ kubernetes: { websocketTunnel: false } })
    try {
      const f = await forward('1.32', ['echo', ':5000', '-v=6'], 1, { c })
      assertEchoed(await echoThrough(f.local[0]!.port, 4 * MiB), 4 * MiB, '4 MiB')
      assert.equal(await f.stop(), 0)
      // The tunnel's GET got a non-101 (its Status message is logged), then the SPDY POST
      // got the 101.
      assert.match(
        f.stderr(),
        /fallback to secondary dialer from primary dialer err: unable to upgrade streaming request: the SPDY\/3\.1\+portforward\.k8s\.io WebSocket tunnel is disabled/,
      )
      assert.match(
        f.stderr(),
        /POST https:\/\/\S+\/pods\/echo\/portforward 101 Switching Protocols/,
      )
      const opened = readAudit(c.dir).filter((r) => r.type === 'stream.opened')
      assert.equal(opened.length, 1)
      assert.equal(opened[0]!.protocol, 'spdy')
    } finally {
      await c.cleanup()
    }
  })
})

/**
 * Sends `bytes` to the echo pod through `port` and hangs up as soon as the echo starts
 * coming back: the pod keeps sending to a local connection that is gone.
 */
async function hangUpWhileSending(port: number, bytes: number): Promise<void> {
  const sock = net.connect({ host: '127.0.0.1', port })
  await once(sock, 'connect')
  sock.write(Buffer.alloc(bytes, 7))
  await once(sock, 'data')
  sock.destroy()
}

describe('a local client that hangs up while the pod still sends', () => {
  // kubectl before 1.32 wedges its whole SPDY connection here, whatever the server does
  // (kubernetes/kubernetes#128681): see docs/kubernetes-clients.md, Known limits.
  for (const [version, env, what] of [
    ['1.33', {}, 'the WebSocket tunnel'],
    ['1.32', { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' }, 'SPDY'],
  ] as const) {
    test(`kubectl ${version} over ${what} keeps forwarding new connections`, async () => {
      const f = await forward(version, ['echo', ':5000'], 1, { env })
      const port = f.local[0]!.port
      for (let i = 0; i < 4; i++) await hangUpWhileSending(port, 8 * MiB)
      assertEchoed(
        await echoThrough(port, MiB, 20_000).catch(explain(f)),
        MiB,
        'after the hang-ups',
      )
      assert.equal(await f.stop(), 0)
    })
  }
})

describe('checks per stream, not only per upgrade', () => {
  test('a port the user may not use is refused on its stream (kubectl 1.33 prints it)', async () => {
    const f = await forward('1.33', ['-n', 'limited', 'echo', `:6000`], 1)
    await refusedThrough(f.local[0]!.port)
    assert.equal(await f.exited, 1)
    assert.match(
      f.stderr(),
      /an error occurred forwarding \d+ -> 6000: user \\?"dev\\?" cannot forward to port 6000 of pod limited\/echo/,
    )
  })

  test('a pod that stops running mid-session: the next stream is refused', async () => {
    const f = await forward('1.33', ['echo', ':5000'], 1)
    assertEchoed(await echoThrough(f.local[0]!.port, 1000), 1000, 'before')
    const setPhase = (phase: string): void =>
      updateRegistry(cluster.dir, (pods) =>
        pods.map((p) => (p.namespace === 'default' && p.name === 'echo' ? { ...p, phase } : p)),
      )
    const phaseIs = async (phase: string): Promise<boolean> => {
      const r = await gatewayGet(
        cluster.gatewayUrl,
        cluster.dir,
        '/api/v1/namespaces/default/pods/echo',
        cluster.token,
      )
      return (JSON.parse(r.body) as { status?: { phase?: string } }).status?.phase === phase
    }
    setPhase('Failed')
    try {
      await until(() => phaseIs('Failed'), 'the registry change')
      await refusedThrough(f.local[0]!.port)
      assert.equal(await f.exited, 1)
      assert.match(
        f.stderr(),
        /an error occurred forwarding \d+ -> 5000: unable to forward port because pod is not running\. Current status=Failed/,
      )
    } finally {
      setPhase('Running')
      await until(() => phaseIs('Running'), 'the registry change back')
    }
  })
})
