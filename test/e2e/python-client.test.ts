/**
 * The official Python client (`kubernetes.stream.portforward`, /usr/bin/python3 with
 * python3-kubernetes) port-forwarding through the gateway of a real dev cluster over
 * the WebSocket channel protocol `v4.channel.k8s.io`, with the dev kubeconfig as it is:
 * two ports at once with 16 MiB each way, a refused port reported on its error
 * channel (the other port unharmed), and the upgrade refusals the client reports
 * (forbidden namespace 403, pod not running 400, bad token 401). A missing python3 or
 * client library fails the tests.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startTestCluster } from '../helpers/cluster.js'
import { addPods, closedPort, readAudit, until } from '../helpers/kube-clients.js'
import type { DevCluster } from '../../src/dev/cluster.js'

const PYTHON = process.env.PFGATE_PYTHON ?? '/usr/bin/python3'
const MiB = 1024 * 1024

let cluster: DevCluster & { cleanup(): Promise<void> }
let script: string

/**
 * Forwards `ports` of `ns/pod`; for each port sends `size` random bytes and reads the
 * echo back; prints one JSON line. Upgrade failures print `{"upgradeError": ...}`.
 */
const CLIENT = String.raw`
import hashlib, json, os, sys, time
from kubernetes import client, config
from kubernetes.stream import portforward

kubeconfig, ns, pod, ports, size = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
token = sys.argv[6] if len(sys.argv) > 6 else None
config.load_kube_config(config_file=kubeconfig)
if token is not None:
    c = client.Configuration.get_default_copy()
    c.api_key = {'authorization': 'Bearer ' + token}
    client.Configuration.set_default(c)
api = client.CoreV1Api()
t0 = time.time()
try:
    pf = portforward(api.connect_get_namespaced_pod_portforward, pod, ns, ports=ports)
except Exception as e:
    print(json.dumps({'upgradeError': str(e)}))
    sys.exit(0)
out = {'ports': {}}
for port in [int(p) for p in ports.split(',')]:
    sock = pf.socket(port)
    sock.setblocking(True)
    data = os.urandom(size)
    got = bytearray()
    try:
        sock.sendall(data)
        while len(got) < len(data):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    except OSError as e:
        pass
    deadline = time.time() + 5
    while len(got) < len(data) and pf.error(port) is None and time.time() < deadline:
        time.sleep(0.02)
    out['ports'][str(port)] = {
        'ok': hashlib.sha256(data).hexdigest() == hashlib.sha256(bytes(got)).hexdigest(),
        'gotBytes': len(got),
        'error': pf.error(port),
        'seconds': time.time() - t0,
    }
pf.close()
print(json.dumps(out))
`

interface PortResult {
  ok: boolean
  gotBytes: number
  error: string | null
  seconds: number
}
interface ClientResult {
  upgradeError?: string
  ports?: Record<string, PortResult>
}

function runPython(args: string[]): Promise<ClientResult> {
  return new Promise((resolve, reject) => {
    execFile(
      PYTHON,
      [script, cluster.kubeconfig, ...args],
      { timeout: 120_000, env: { HOME: cluster.dir, PATH: process.env.PATH ?? '/usr/bin:/bin' } },
      (err, stdout, stderr) => {
        if (err !== null) {
          reject(new Error(`python client failed: ${err.message}\n${stderr}`))
          return
        }
        const last = stdout.trim().split('\n').at(-1) ?? ''
        try {
          resolve(JSON.parse(last) as ClientResult)
        } catch {
          reject(new Error(`unexpected python output:\n${stdout}\n${stderr}`))
        }
      },
    )
  })
}

before(async () => {
  cluster = await startTestCluster()
  script = join(cluster.dir, 'pf.py')
  await writeFile(script, CLIENT)
  await addPods(
    cluster,
    [
      { namespace: 'restricted', name: 'echo', node: 'node-a', phase: 'Running', ports: [] },
      { namespace: 'default', name: 'pending', node: 'node-a', phase: 'Pending', ports: [] },
    ],
    'pending',
  )
})

after(async () => {
  await cluster?.cleanup()
})

describe('the Python client over v4.channel.k8s.io', () => {
  test('two ports in one WebSocket, 16 MiB each way on each; audited as ws-v4', async (t) => {
    const before = readAudit(cluster.dir).length
    const r = await runPython(['default', 'echo', '5000,6000', String(16 * MiB)])
    assert.equal(r.upgradeError, undefined)
    for (const port of ['5000', '6000']) {
      const p = r.ports?.[port]
      assert.ok(p !== undefined, `port ${port} result`)
      assert.equal(p.gotBytes, 16 * MiB, `port ${port} bytes back`)
      assert.equal(p.ok, true, `port ${port} sha256`)
      assert.equal(p.error, null)
    }
    t.diagnostic(
      `python client: 2 × 16 MiB echoed in ${r.ports?.['6000']?.seconds.toFixed(2)} s (sequentially, one port after the other)`,
    )
    await until(
      () =>
        readAudit(cluster.dir)
          .slice(before)
          .filter((x) => x.type === 'stream.closed').length === 2,
      'the close records',
    )
    const recs = readAudit(cluster.dir).slice(before)
    const opened = recs.filter((x) => x.type === 'stream.opened')
    assert.deepEqual(opened.map((x) => x.port).sort(), [5000, 6000])
    for (const x of opened) {
      assert.equal(x.protocol, 'ws-v4')
      assert.equal(x.user, 'dev')
    }
    const closed = recs.filter((x) => x.type === 'stream.closed')
    for (const x of closed) {
      assert.equal(x.bytesClientToPod, 16 * MiB)
      assert.equal(x.bytesPodToClient, 16 * MiB)
    }
  })

  test('64 MiB in one sendall: frames as large as the client reads keep its loop from deadlocking', async (t) => {
    // The client reads up to 1 MiB from the application per loop, writes it with a
    // blocking TLS write, and reads one frame back: with the gateway's frames capped at
    // 256 KiB this hung every time (the echo filled every buffer on the way), at 1 MiB it
    // completes (src/gateway/edge/ws-channel-adapter.ts, CHANNEL_WRITE_HWM).
    const r = await runPython(['default', 'echo', '5000', String(64 * MiB)])
    const p = r.ports?.['5000']
    assert.equal(p?.gotBytes, 64 * MiB)
    assert.equal(p?.ok, true, 'sha256 of the echo')
    t.diagnostic(`python client: 64 MiB echoed in ${p?.seconds.toFixed(2)} s`)
  })

  test('a refused port: its error channel says so, the other port works', async () => {
    const refused = await closedPort()
    const r = await runPython(['default', 'echo', `5000,${refused}`, String(MiB)])
    assert.equal(r.ports?.['5000']?.ok, true)
    assert.equal(r.ports?.['5000']?.gotBytes, MiB)
    assert.match(
      r.ports?.[String(refused)]?.error ?? '',
      new RegExp(
        `^error forwarding port ${refused} to pod default/echo: dial tcp 127\\.0\\.0\\.1:${refused}: connect: connection refused`,
      ),
    )
  })

  test('a forbidden namespace is refused with 403 before the upgrade', async () => {
    const r = await runPython(['restricted', 'echo', '5000', '10'])
    assert.match(r.upgradeError ?? '', /403/)
    // Records other than stream.opened may linger a few ms before they are written.
    await until(
      () =>
        readAudit(cluster.dir).some(
          (x) =>
            x.type === 'stream.denied' &&
            x.namespace === 'restricted' &&
            x.protocol === 'ws-v4' &&
            x.reason === 'forbidden',
        ),
      'the stream.denied record',
    )
  })

  test('a pod that is not running is refused with 400', async () => {
    const r = await runPython(['default', 'pending', '5000', '10'])
    assert.match(r.upgradeError ?? '', /400/)
  })

  test('a bad token is refused with 401', async () => {
    const r = await runPython(['default', 'echo', '5000', '10', 'not-a-token'])
    assert.match(r.upgradeError ?? '', /401/)
  })
})
