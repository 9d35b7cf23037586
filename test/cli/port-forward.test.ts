/**
 * `pfgate port-forward` in process: the whole command (`runPortForward`) against a small
 * HTTP/2 TLS server on loopback that answers the two requests the CLI makes (the pod
 * lookup and the native forwarding stream, which echoes), with real listeners and real TCP
 * clients. Pins what a user sees: exit codes and messages for bad arguments, the
 * `Forwarding from` lines for 127.0.0.1 and [::1], `:PORT` picking one free port for both,
 * named ports, the error lines of a refused stream, and the retry when the pod moved.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createSecureServer } from 'node:http2'
import type { Http2SecureServer, ServerHttp2Session, ServerHttp2Stream } from 'node:http2'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { PassThrough } from 'node:stream'
import { createCa, issueCert } from '../../src/dev/pki.js'
import { runPortForward } from '../../src/cli/port-forward.js'
import type { CliIo } from '../../src/cli/port-forward.js'
import { buildStatus } from '../../src/protocol/status.js'
import { dial, echoRoundTrip } from '../helpers/net.js'

let gateway: Http2SecureServer
let gatewayUrl: string
const sessions = new Set<ServerHttp2Session>()
/** Each forwarding request the gateway saw: `node port`. */
const opened: string[] = []
/** The node the gateway says the pod `moving` is on. */
let movingNode = 'node-old'

const PODS: Record<string, unknown> = {
  echo: {
    kind: 'Pod',
    spec: {
      nodeName: 'node-a',
      containers: [
        {
          ports: [
            { name: 'http', containerPort: 5000 },
            { name: 'dns', containerPort: 53, protocol: 'UDP' },
          ],
        },
      ],
    },
    status: { phase: 'Running' },
  },
  pending: { kind: 'Pod', spec: { nodeName: 'node-a' }, status: { phase: 'Pending' } },
}

function answer(stream: ServerHttp2Stream, code: number, message: string, errorCode?: string) {
  stream.respond({ ':status': code, 'content-type': 'application/json' })
  stream.end(JSON.stringify(buildStatus(code, message, errorCode)))
}

before(async () => {
  const ca = await createCa('port-forward test CA')
  const leaf = await issueCert(ca, { commonName: 'gateway', ipAddresses: ['127.0.0.1'] })
  gateway = createSecureServer({ cert: leaf.cert, key: leaf.key })
  gateway.on('session', (s: ServerHttp2Session) => {
    sessions.add(s)
    s.once('close', () => sessions.delete(s))
  })
  gateway.on('stream', (stream, headers) => {
    stream.on('error', () => undefined)
    const path = String(headers[':path'])
    if (headers.authorization !== 'Bearer t0ken') return answer(stream, 401, 'Unauthorized')
    const pod = /^\/api\/v1\/namespaces\/default\/pods\/([^/]+)$/.exec(path)
    if (pod !== null) {
      const name = pod[1] as string
      if (name === 'moving') {
        const doc = { ...(PODS.echo as object), spec: { nodeName: movingNode } }
        stream.respond({ ':status': 200 })
        return void stream.end(JSON.stringify(doc))
      }
      const doc = PODS[name]
      if (doc === undefined) return answer(stream, 404, `pods "${name}" not found`)
      stream.respond({ ':status': 200, 'content-type': 'application/json' })
      return void stream.end(JSON.stringify(doc))
    }
    const fwd = /^\/proxy\/nodes\/([^/]+)\/portForward\/default\/([^/]+)$/.exec(path)
    if (fwd !== null && headers[':method'] === 'POST') {
      const node = fwd[1] as string
      const port = String(headers.port)
      opened.push(`${node} ${port}`)
      if (node === 'node-old') {
        movingNode = 'node-b'
        return answer(stream, 404, 'the pod is not on node node-old', 'PFG_ERR_ROUTE_WRONG_NODE')
      }
      if (port === '6')
        return answer(stream, 502, 'connection refused by the pod', 'PFG_ERR_RELAY_CONNECT_REFUSED')
      stream.respond({ ':status': 200 })
      stream.pipe(stream)
      return
    }
    answer(stream, 404, 'not found')
  })
  await new Promise<void>((r) => gateway.listen(0, '127.0.0.1', r))
  gatewayUrl = `https://127.0.0.1:${(gateway.address() as AddressInfo).port}`
})

after(async () => {
  await Promise.all(runs.map((r) => r.stop()))
  for (const s of sessions) s.destroy()
  await new Promise((r) => gateway.close(r))
})

const runs: Run[] = []

interface Run {
  stdout: () => string
  stderr: () => string
  /** Resolves with the `Forwarding from` lines once `n` are printed. */
  forwarding(n: number): Promise<string[]>
  stop(): Promise<number>
  code: Promise<number>
}

function start(args: string[], withGateway = true): Run {
  const out = new PassThrough()
  const err = new PassThrough()
  let stdout = ''
  let stderr = ''
  out.on('data', (d: Buffer) => (stdout += d.toString()))
  err.on('data', (d: Buffer) => (stderr += d.toString()))
  let stop: (s: string) => void = () => undefined
  const io: CliIo = {
    stdout: out,
    stderr: err,
    env: { KUBECONFIG: '/nonexistent/kubeconfig' },
    stopSignal: new Promise((r) => (stop = r)),
  }
  const argv = withGateway
    ? ['--server', gatewayUrl, '--token', 't0ken', '--insecure-skip-tls-verify', ...args]
    : args
  const code = runPortForward(argv, io)
  const run: Run = {
    stdout: () => stdout,
    stderr: () => stderr,
    code,
    async forwarding(n) {
      for (let i = 0; i < 500; i++) {
        const lines = stdout.split('\n').filter((l) => l.startsWith('Forwarding from'))
        if (lines.length >= n) return lines
        const done = await Promise.race([code, new Promise((r) => setTimeout(r, 10))])
        if (typeof done === 'number') assert.fail(`exited ${done}: ${stderr}`)
      }
      return assert.fail(`no ${n} Forwarding lines: ${stdout} ${stderr}`)
    },
    stop() {
      stop('SIGINT')
      return code
    },
  }
  runs.push(run)
  return run
}

async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const { port } = s.address() as AddressInfo
  await new Promise((r) => s.close(r))
  return port
}

describe('arguments (checked before any I/O)', () => {
  const cases: [string[], number, string][] = [
    [['--bogus'], 2, "error: Unknown option '--bogus'"],
    [['echo'], 2, 'error: TYPE/NAME and list of ports are required for port-forward\n'],
    [['cronjob/echo', '80'], 2, 'error: the server doesn\'t have a resource type "cronjob"\n'],
    [['Echo_', '80'], 2, 'error: '],
    [['echo', '70000'], 2, 'error: '],
    [['echo', '80', '--address', 'example.com'], 2, 'error: invalid --address "example.com"'],
    [['echo', '80', '-n', 'Bad_NS'], 2, 'error: '],
  ]
  for (const [args, code, message] of cases) {
    test(`${args.join(' ')} → exit ${code}`, async () => {
      const r = start(args, false)
      assert.equal(await r.code, code)
      assert.ok(r.stderr().startsWith(message), r.stderr())
      assert.equal(r.stdout(), '')
    })
  }
  test('--help prints the usage on stdout, exit 0', async () => {
    const r = start(['--help'], false)
    assert.equal(await r.code, 0)
    assert.match(r.stdout(), /^Forward one or more local ports to a pod/)
  })
})

describe('the pod lookup', () => {
  test('an unknown pod: the server error, exit 1, nothing listens', async () => {
    const r = start(['missing', '5000'])
    assert.equal(await r.code, 1)
    assert.equal(r.stderr(), 'Error from server (NotFound): pods "missing" not found\n')
  })
  test('a bad token: Unauthorized, exit 1', async () => {
    const r = start(['echo', '5000', '--token', 'nope'])
    assert.equal(await r.code, 1)
    assert.equal(r.stderr(), 'error: You must be logged in to the server (Unauthorized)\n')
  })
  test('a pod that is not running, exit 1', async () => {
    const r = start(['pending', '5000'])
    assert.equal(await r.code, 1)
    assert.equal(
      r.stderr(),
      'error: unable to forward port because pod is not running. Current status=Pending\n',
    )
  })
  test('an unknown named port and a UDP-only port, exit 1', async () => {
    const a = start(['echo', ':nope'])
    assert.equal(await a.code, 1)
    assert.equal(a.stderr(), "error: Pod 'echo' does not have a named port 'nope'\n")
    const b = start(['pod/echo', ':53'])
    assert.equal(await b.code, 1)
    assert.equal(b.stderr(), 'error: UDP protocol is not supported for 53\n')
  })
})

describe('listen and serve', () => {
  test('LOCAL:REMOTE listens on 127.0.0.1 and [::1]; both echo; SIGINT exits 0', async () => {
    const port = await freePort()
    const r = start(['echo', `${port}:5000`])
    assert.deepEqual(await r.forwarding(2), [
      `Forwarding from 127.0.0.1:${port} -> 5000`,
      `Forwarding from [::1]:${port} -> 5000`,
    ])
    for (const host of ['127.0.0.1', '::1']) {
      const e = await echoRoundTrip(port, 100_000, host)
      assert.equal(e.received, e.sent)
    }
    assert.equal(await r.stop(), 0)
    assert.equal(r.stderr(), `Handling connection for ${port}\nHandling connection for ${port}\n`)
  })

  test(':http picks one free port for both addresses and resolves the named port', async () => {
    const r = start(['pod/echo', ':http', '-q'])
    const lines = await r.forwarding(2)
    const m = /^Forwarding from 127\.0\.0\.1:(\d+) -> 5000$/.exec(lines[0] as string)
    assert.ok(m !== null, lines[0])
    const port = Number(m[1])
    assert.notEqual(port, 0)
    assert.equal(lines[1], `Forwarding from [::1]:${port} -> 5000`)
    const before = opened.length
    const e = await echoRoundTrip(port, 1000)
    assert.equal(e.received, e.sent)
    assert.deepEqual(opened.slice(before), ['node-a 5000'])
    assert.equal(await r.stop(), 0)
    assert.equal(r.stderr(), '') // -q
  })

  test('--address 127.0.0.1 listens there only', async () => {
    const r = start(['echo', ':5000', '--address', '127.0.0.1', '-q'])
    const lines = await r.forwarding(1)
    await new Promise((res) => setTimeout(res, 50))
    assert.equal(
      r
        .stdout()
        .split('\n')
        .filter((l) => l !== '').length,
      1,
    )
    assert.match(lines[0] as string, /^Forwarding from 127\.0\.0\.1:\d+ -> 5000$/)
    assert.equal(await r.stop(), 0)
  })

  test('a busy local port: exit 1 with the listen error', async () => {
    const busy = createServer()
    await new Promise<void>((res) => busy.listen(0, '127.0.0.1', res))
    const port = (busy.address() as AddressInfo).port
    try {
      const r = start(['echo', `${port}:5000`, '--address', '127.0.0.1'])
      assert.equal(await r.code, 1)
      // kubectl's words: the port's listeners, then that no port at all could be bound.
      assert.match(
        r.stderr(),
        new RegExp(
          `^Unable to listen on port ${port}: Listeners failed to create with the following errors: \\[unable to create listener: Error listen 127\\.0\\.0\\.1:${port}: .*EADDRINUSE.*\\]\nerror: unable to listen on any of the requested ports: ${port}:5000\n$`,
        ),
      )
    } finally {
      await new Promise((res) => busy.close(res))
    }
  })

  test('a refused stream ends that local connection with a message; the listener keeps serving', async () => {
    const r = start(['echo', ':6', ':5000', '--address', '127.0.0.1', '-q'])
    const lines = await r.forwarding(2)
    const refusedPort = Number(/:(\d+) -> 6$/.exec(lines[0] as string)?.[1])
    const goodPort = Number(/:(\d+) -> 5000$/.exec(lines[1] as string)?.[1])
    const s = await dial(refusedPort)
    s.on('error', () => undefined)
    s.write('x')
    await new Promise((res) => s.once('close', res))
    assert.equal(
      r.stderr(),
      `an error occurred forwarding ${refusedPort} -> 6: connection refused by the pod\n`,
    )
    const ok = await echoRoundTrip(goodPort, 10)
    assert.equal(ok.received, ok.sent)
    assert.equal(await r.stop(), 0)
  })

  test('the pod moved: the CLI learns its new node once and retries', async () => {
    movingNode = 'node-old'
    const r = start(['moving', ':5000', '--address', '127.0.0.1', '-q'])
    const [line] = await r.forwarding(1)
    const port = Number(/:(\d+) -> 5000$/.exec(line as string)?.[1])
    const before = opened.length
    const e = await echoRoundTrip(port, 10)
    assert.equal(e.received, e.sent)
    assert.deepEqual(opened.slice(before), ['node-old 5000', 'node-b 5000'])
    assert.equal(await r.stop(), 0)
    assert.equal(r.stderr(), '')
  })
})
