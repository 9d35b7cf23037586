/**
 * UDP flows end to end: the real CLI (`pfgate port-forward dns 5353:53/udp`), the
 * gateway, the agents and the dev cluster's UDP demo pod, with the pods in network
 * namespaces (netns dialer) and on host ports (static dialer). Checks: `dig` through the
 * forward, datagrams of 1, 1,200 and 65,507 bytes with boundaries intact, 1,000 datagrams
 * without loss at a moderate rate, two local clients as two flows, a reply from another
 * port of the pod not delivered, TCP and UDP in one command, idle expiry with its audit
 * record, a UDP port the rules do not allow refused and audited, an unbound pod port.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createSocket } from 'node:dgram'
import type { Socket as UdpSocket } from 'node:dgram'
import { promisify } from 'node:util'
import { startTestCluster } from '../helpers/cluster.js'
import { parseForwarding, runCli, runCliToEnd } from '../helpers/cli.js'
import type { CliProcess } from '../helpers/cli.js'
import { trailPath, waitForRecords } from '../helpers/gateway.js'
import { startServerInNetns } from '../helpers/netns.js'
import type { NetnsServer } from '../helpers/netns.js'
import { echoRoundTrip } from '../helpers/net.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import { MAX_DATAGRAM_SIZE } from '../../src/protocol/udp-frames.js'
import type { AuditRecord } from '../../src/protocol/audit-record.js'

const run = promisify(execFile)

/** The rules: UDP ports apart from TCP ones; 7008/udp is not granted. */
const overrides = {
  authorization: {
    rules: [
      {
        groups: ['pfgate:developers'],
        namespaces: ['default'],
        pods: ['*'],
        ports: ['1-65535'],
        udpPorts: ['53', '7007', '7009', '20000-65535'],
      },
    ],
  },
  limits: { udp: { idleTimeout: '1500ms', dnsIdleTimeout: '1500ms' } },
}

/** A local UDP client: sends datagrams, collects replies. */
class Client {
  readonly socket: UdpSocket
  readonly got: Buffer[] = []
  #waiters: (() => void)[] = []

  constructor(family: 4 | 6 = 4) {
    this.socket = createSocket(family === 6 ? 'udp6' : 'udp4')
    this.socket.on('message', (m) => {
      this.got.push(m)
      for (const w of this.#waiters.splice(0)) w()
    })
  }

  send(d: Buffer | string, port: number, host = '127.0.0.1'): Promise<void> {
    return new Promise((resolve, reject) =>
      this.socket.send(d, port, host, (err) => (err ? reject(err) : resolve())),
    )
  }

  async waitFor(n: number, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (this.got.length < n) {
      if (Date.now() > deadline) throw new Error(`got ${this.got.length} of ${n} datagrams`)
      await new Promise<void>((r) => {
        this.#waiters.push(r)
        setTimeout(r, 50)
      })
    }
  }

  close(): void {
    this.socket.close()
  }
}

function suite(mode: 'netns' | 'static'): void {
  describe(`UDP flows (${mode} dialer)`, () => {
    let cluster: DevCluster & { cleanup(): Promise<void> }
    let cli: CliProcess
    let wrongPort: NetnsServer | undefined
    const local = new Map<string, number>()
    const env = (): NodeJS.ProcessEnv => ({ KUBECONFIG: cluster.kubeconfig, HOME: cluster.dir })

    before(async () => {
      cluster = await startTestCluster(overrides, mode === 'netns' ? { netns: true } : {})
      const specs = [':53/udp', ':7007/udp', '5000:5000']
      if (mode === 'netns') {
        wrongPort = await startServerInNetns(cluster.podNetns?.dns as string, 'udp-echo')
        specs.push(`:${wrongPort.port}/udp`)
      }
      cli = runCli(['port-forward', 'dns', ...specs.filter((s) => s !== '5000:5000')], env())
      const fwd = parseForwarding(await cli.waitForLines(2 * (specs.length - 1)))
      for (const f of fwd)
        if (f.address === '127.0.0.1') local.set(`${f.remote}/${f.protocol}`, f.port)
    })

    after(async () => {
      await cli?.stop()
      await wrongPort?.stop()
      await cluster?.cleanup()
    })

    test('the output names the protocol, on both loopback addresses', () => {
      const port = local.get('53/udp') as number
      assert.match(
        cli.stdout(),
        new RegExp(`^Forwarding from 127\\.0\\.0\\.1:${port} -> 53/udp$`, 'm'),
      )
      assert.match(cli.stdout(), new RegExp(`^Forwarding from \\[::1\\]:${port} -> 53/udp$`, 'm'))
    })

    test('dig resolves through the forward (IPv4 and IPv6 listeners)', async () => {
      const port = String(local.get('53/udp'))
      for (const server of ['127.0.0.1', '::1']) {
        const { stdout } = await run('dig', [
          `@${server}`,
          '-p',
          port,
          'api.internal',
          'A',
          '+short',
          '+tries=1',
          '+time=3',
        ])
        assert.equal(stdout.trim(), '192.0.2.10')
      }
      const nx = await run('dig', ['@127.0.0.1', '-p', port, 'example.com', '+tries=1', '+time=3'])
      assert.match(nx.stdout, /status: NXDOMAIN/)
    })

    test('datagrams of 1, 1,200 and 65,507 bytes come back whole', async () => {
      const c = new Client()
      try {
        const sent = [1, 1200, MAX_DATAGRAM_SIZE].map((n) => randomBytes(n))
        for (const d of sent) await c.send(d, local.get('7007/udp') as number)
        await c.waitFor(3)
        assert.deepEqual(
          c.got.map((d) => d.length),
          [1, 1200, MAX_DATAGRAM_SIZE],
        )
        c.got.forEach((d, i) => assert.ok(d.equals(sent[i]!)))
      } finally {
        c.close()
      }
    })

    test('1,000 datagrams at a moderate rate: none lost', async () => {
      const c = new Client()
      try {
        for (let i = 0; i < 1000; i += 50) {
          for (let j = i; j < i + 50; j++) await c.send(`n${j}`, local.get('7007/udp') as number)
          await c.waitFor(i + 50)
        }
        assert.equal(c.got.length, 1000)
        assert.deepEqual(
          c.got.map(String),
          Array.from({ length: 1000 }, (_, i) => `n${i}`),
        )
      } finally {
        c.close()
      }
    })

    test("two local clients are two flows that never see each other's replies", async () => {
      const a = new Client()
      const b = new Client(6)
      try {
        const port = local.get('7007/udp') as number
        for (let i = 0; i < 20; i++) {
          await a.send(`a${i}`, port)
          await b.send(`b${i}`, port, '::1')
        }
        await a.waitFor(20)
        await b.waitFor(20)
        assert.ok(a.got.every((d) => String(d).startsWith('a')))
        assert.ok(b.got.every((d) => String(d).startsWith('b')))
      } finally {
        a.close()
        b.close()
      }
    })

    if (mode === 'netns') {
      test('a reply from another port of the pod is not delivered', async () => {
        const c = new Client()
        try {
          const port = local.get(`${wrongPort?.port}/udp`) as number
          await c.send('wrong-port:right', port)
          await c.waitFor(1)
          await c.send('after', port)
          await c.waitFor(2)
          assert.deepEqual(c.got.map(String), ['right', 'after'])
        } finally {
          c.close()
        }
      })
    }

    test('an idle flow ends after the idle timeout, with its audit record', async () => {
      const c = new Client()
      try {
        await c.send('idle-me', local.get('7007/udp') as number)
        await c.waitFor(1)
        const rec = await waitForRecords(
          trailPath(cluster),
          (rs: AuditRecord[]) =>
            rs.find(
              (r) =>
                r.type === 'stream.closed' &&
                r.transport === 'udp' &&
                r.port === 7007 &&
                r.reason === 'limit:idle-timeout' &&
                r.datagramsClientToPod === 1,
            ),
          'the idle flow closed',
        )
        assert.equal(rec.endedBy, 'limit')
        assert.equal(rec.datagramsPodToClient, 1)
        assert.equal(rec.bytesClientToPod, 7)
        assert.deepEqual(rec.datagramsDropped, { gateway: 0, agent: 0 })
        // A new datagram opens a new flow.
        await c.send('again', local.get('7007/udp') as number)
        await c.waitFor(2)
      } finally {
        c.close()
      }
    })

    test('an admin lists a live flow and kills it; the record says admin', async (t) => {
      const c = new Client()
      try {
        const port = local.get('7007/udp') as number
        await c.send('listed', port)
        await c.waitFor(1)
        // This cluster's idle timeout is 1.5 s: keep the flow busy while the admin looks.
        const keep = setInterval(() => void c.send('keep', port), 200)
        t.after(() => clearInterval(keep))
        const list = await runCliToEnd(['admin', 'streams', '-o', 'json'], env())
        assert.equal(list.code, 0, list.stderr)
        const flow = (
          JSON.parse(list.stdout) as {
            id: string
            port: number
            transport?: string
            openedAt: string
            datagramsClientToPod?: number
          }[]
        )
          .filter((f) => f.transport === 'udp' && f.port === 7007)
          .sort((a, b) => b.openedAt.localeCompare(a.openedAt))[0]
        assert.ok((flow?.datagramsClientToPod ?? 0) >= 1, list.stdout)
        assert.ok(flow !== undefined, list.stdout)
        const table = await runCliToEnd(['admin', 'streams'], env())
        assert.match(table.stdout, /default\/dns:7007\/udp/)
        const kill = await runCliToEnd(['admin', 'kill', 'stream', flow.id], env())
        assert.equal(kill.code, 0, kill.stderr)
        const rec = await waitForRecords(
          trailPath(cluster),
          (rs: AuditRecord[]) =>
            rs.find((r) => r.type === 'stream.closed' && r.streamId === flow.id),
          'the killed flow',
        )
        assert.deepEqual([rec.endedBy, rec.reason, rec.transport], ['admin', 'admin:stream', 'udp'])
        // The next datagrams from the same client open a new flow.
        const before = c.got.length
        await c.send('again', port)
        await c.waitFor(before + 1)
      } finally {
        c.close()
      }
    })

    test('a UDP port the rules do not grant is refused (403) and audited', async () => {
      const denied = runCli(['port-forward', 'dns', ':7008/udp'], env())
      try {
        const [f] = parseForwarding(await denied.waitForLines(1))
        const c = new Client()
        await c.send('x', f!.port)
        await denied.waitForStderr(/cannot forward to port 7008\/udp/)
        c.close()
        const rec = await waitForRecords(
          trailPath(cluster),
          (rs: AuditRecord[]) =>
            rs.find((r) => r.type === 'stream.denied' && r.port === 7008 && r.transport === 'udp'),
          'the denied flow',
        )
        assert.equal(rec.status, 403)
      } finally {
        await denied.stop()
      }
    })

    if (mode === 'netns') {
      test('a pod port with nothing bound is reported (connection refused)', async () => {
        const cli2 = runCli(['port-forward', 'dns', ':7009/udp'], env())
        try {
          const [f] = parseForwarding(await cli2.waitForLines(1))
          const c = new Client()
          await c.send('x', f!.port)
          await cli2.waitForStderr(/7009\/udp.*connection refused/)
          c.close()
        } finally {
          await cli2.stop()
        }
      })
    }

    test("TCP and UDP in one command (the echo pod's TCP 5000 and a UDP echo)", async (t) => {
      // A UDP echo where the agent dials it: inside the echo pod's namespace, or on the
      // host for the static dialer (an undeclared port is dialled as itself).
      let udpPort: number
      if (mode === 'netns') {
        const srv = await startServerInNetns(cluster.podNetns?.echo as string, 'udp-echo')
        t.after(() => srv.stop())
        udpPort = srv.port
      } else {
        const srv = createSocket('udp4')
        srv.on('message', (m, r) => srv.send(m, r.port, r.address))
        await new Promise<void>((r) => srv.bind(0, '127.0.0.1', r))
        t.after(() => srv.close())
        udpPort = srv.address().port
      }
      const both = runCli(['port-forward', 'echo', ':5000', `:${udpPort}/udp`], env())
      t.after(() => both.stop())
      const fwd = parseForwarding(await both.waitForLines(4))
      const tcp = fwd.find((f) => f.protocol === 'tcp' && f.address === '127.0.0.1')
      const udp = fwd.find((f) => f.protocol === 'udp' && f.address === '127.0.0.1')
      assert.equal(tcp?.remote, 5000)
      assert.equal(udp?.remote, udpPort)
      const r = await echoRoundTrip(tcp.port, 64 * 1024)
      assert.equal(r.received, r.sent)
      const c = new Client()
      try {
        await c.send('both', udp.port)
        await c.waitFor(1)
        assert.equal(String(c.got[0]), 'both')
      } finally {
        c.close()
      }
    })
  })
}

suite('netns')
suite('static')
