/**
 * The steps of `pfgate port-forward` one by one, in process: parse (no I/O), listen (real
 * sockets on 127.0.0.1 and [::1]; `:PORT` picks one port for both), serve through a fake
 * dialer whose "pod" is a real echo server reached over TCP.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { connect, createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import { expandAddresses, parsePortForwardArgs } from '../../src/cli/port-forward/args.js'
import type { ListenAddress } from '../../src/cli/port-forward/args.js'
import { listenAll } from '../../src/cli/port-forward/listen.js'
import type { Listener } from '../../src/cli/port-forward/listen.js'
import { serve } from '../../src/cli/port-forward/serve.js'
import type { PodStream, StreamDialer } from '../../src/cli/port-forward/serve.js'
import { socketEndpoint } from '../../src/shared/relay-endpoints.js'
import { dial, echoRoundTrip } from '../helpers/net.js'

describe('parse', () => {
  test('a pod, its ports, the addresses and the overrides', () => {
    const r = parsePortForwardArgs([
      '-n',
      'team',
      'pod/web',
      '8080:http',
      ':5000',
      '--address',
      'localhost,10.0.0.1,127.0.0.1',
      '--token',
      'x',
      '-q',
    ])
    assert.equal(r.kind, 'run')
    if (r.kind !== 'run') return
    assert.deepEqual(r.request.target, { kind: 'pod', name: 'web' })
    assert.deepEqual(
      r.request.specs.map((s) => [s.local, s.remote]),
      [
        [8080, 'http'],
        [0, 5000],
      ],
    )
    assert.deepEqual(r.request.addresses, [
      { address: '127.0.0.1', failureMode: 'all' },
      { address: '::1', failureMode: 'all' },
      { address: '10.0.0.1', failureMode: 'any' },
    ])
    assert.deepEqual(expandAddresses('127.0.0.1,localhost'), [
      { address: '127.0.0.1', failureMode: 'any' },
      { address: '::1', failureMode: 'all' },
    ])
    assert.equal(r.request.podRunningTimeoutMs, 60_000)
    assert.deepEqual(r.request.overrides, { namespace: 'team', token: 'x' })
    assert.equal(r.request.quiet, true)
  })
  test('usage errors carry their lines and exit code 2', () => {
    assert.deepEqual(parsePortForwardArgs(['web']), {
      kind: 'usage-error',
      exitCode: 2,
      lines: [
        'error: TYPE/NAME and list of ports are required for port-forward',
        "See 'pfgate port-forward --help' for usage.",
      ],
    })
    const deploy = parsePortForwardArgs(['deploy/web', '80'])
    assert.equal(deploy.kind, 'run')
    if (deploy.kind === 'run')
      assert.deepEqual(deploy.request.target, { kind: 'deployment', name: 'web' })
    assert.deepEqual(parsePortForwardArgs(['cronjob/web', '80']), {
      kind: 'usage-error',
      exitCode: 2,
      lines: ['error: the server doesn\'t have a resource type "cronjob"'],
    })
    // Repeated --address flags all apply.
    const two = parsePortForwardArgs(['--address', '127.0.0.1', '--address', '::1', 'web', '80'])
    assert.equal(two.kind, 'run')
    if (two.kind === 'run')
      assert.deepEqual(
        two.request.addresses.map((a) => a.address),
        ['127.0.0.1', '::1'],
      )
    const bad = parsePortForwardArgs(['web', 'x:y:z'])
    assert.equal(bad.kind, 'usage-error')
    assert.deepEqual(parsePortForwardArgs(['-h']), { kind: 'help' })
  })
  test('--address accepts IPs and localhost only', () => {
    assert.deepEqual(
      expandAddresses(undefined).map((a) => a.address),
      ['127.0.0.1', '::1'],
    )
    assert.deepEqual(expandAddresses(' ::1 , ::1'), [{ address: '::1', failureMode: 'any' }])
    assert.throws(() => expandAddresses('localhost.example'), /invalid --address/)
  })
})

const opened: Listener[][] = []
after(async () => {
  for (const ls of opened) for (const l of ls) l.server.close()
})

async function listenTracked(
  pairs: { local: number; remote: number }[],
  addresses: string[],
  warnings: string[] = [],
): Promise<Listener[]> {
  const ls = await listenAll(pairs, localhostLike(addresses), (l) => warnings.push(l))
  opened.push(ls)
  return ls
}

/** Addresses as `localhost` yields them (a failure of one is tolerated). */
function localhostLike(addresses: string[]): ListenAddress[] {
  return addresses.map((address) => ({ address, failureMode: 'all' }))
}

describe('listen', () => {
  test('port 0 picks one free port, used on 127.0.0.1 and [::1] alike', async () => {
    const ls = await listenTracked([{ local: 0, remote: 5000 }], ['127.0.0.1', '::1'])
    assert.deepEqual(
      ls.map((l) => [l.address, l.remotePort]),
      [
        ['127.0.0.1', 5000],
        ['::1', 5000],
      ],
    )
    const port = ls[0]?.localPort as number
    assert.ok(port > 0)
    assert.equal(ls[1]?.localPort, port)
    for (const l of ls) assert.equal((l.server.address() as AddressInfo).port, port)
  })
  test('an address that cannot be bound is reported; the others serve', async () => {
    const busy = await listenTracked([{ local: 0, remote: 1 }], ['::1'])
    const port = busy[0]?.localPort as number
    const warnings: string[] = []
    const ls = await listenTracked([{ local: port, remote: 2 }], ['127.0.0.1', '::1'], warnings)
    assert.deepEqual(
      ls.map((l) => l.address),
      ['127.0.0.1'],
    )
    assert.equal(warnings.length, 1)
    assert.match(
      warnings[0] as string,
      new RegExp(
        `^Unable to listen on unable to create listener: Error listen \\[::1\\]:${port}: .*EADDRINUSE`,
      ),
    )
  })
  test('a pair bound nowhere is reported and skipped; none bound at all fails', async () => {
    const busy = await listenTracked([{ local: 0, remote: 1 }], ['127.0.0.1'])
    const port = busy[0]?.localPort as number
    const free = createServer()
    await new Promise<void>((r) => free.listen(0, '127.0.0.1', r))
    const freePort = (free.address() as AddressInfo).port
    await new Promise((r) => free.close(r))
    const warnings: string[] = []
    const ls = await listenTracked(
      [
        { local: freePort, remote: 1 },
        { local: port, remote: 2 },
      ],
      ['127.0.0.1'],
      warnings,
    )
    assert.deepEqual(
      ls.map((l) => l.localPort),
      [freePort],
    )
    assert.match(
      warnings.join('\n'),
      new RegExp(`^Unable to listen on port ${port}: Listeners failed to create`, 'm'),
    )
    await assert.rejects(
      listenAll([{ local: port, remote: 2 }], localhostLike(['127.0.0.1']), () => undefined),
      { code: 'PFG_ERR_CLI_LISTEN' },
    )
  })
  test('an explicit address list: one address failing fails the port', async () => {
    const busy = await listenTracked([{ local: 0, remote: 1 }], ['::1'])
    const port = busy[0]?.localPort as number
    const warnings: string[] = []
    await assert.rejects(
      listenAll(
        [{ local: port, remote: 2 }],
        [
          { address: '127.0.0.1', failureMode: 'any' },
          { address: '::1', failureMode: 'any' },
        ],
        (l) => warnings.push(l),
      ),
      { code: 'PFG_ERR_CLI_LISTEN' },
    )
    // What 127.0.0.1 bound was released again.
    const again = await listenTracked([{ local: port, remote: 1 }], ['127.0.0.1'])
    assert.equal(again[0]?.localPort, port)
  })
})

describe('serve', () => {
  let pod: Server
  const podSockets = new Set<Socket>()
  after(async () => {
    for (const s of podSockets) s.destroy()
    await new Promise((r) => pod?.close(r))
  })

  /** A dialer whose streams are TCP connections to a local echo "pod"; port 7 refuses. */
  function fakeDialer(log: string[]): StreamDialer {
    return {
      async dial(remotePort: number): Promise<PodStream> {
        log.push(`dial ${remotePort}`)
        if (remotePort === 7) throw new Error('connection refused by the pod')
        const s = await dial((pod.address() as AddressInfo).port)
        return {
          endpoint: socketEndpoint(s),
          cancel: () => s.destroy(),
          resetDescription: () => (remotePort === 8 ? 'stream reset (INTERNAL_ERROR)' : undefined),
        }
      },
    }
  }

  test('each connection is one dial; bytes echo; a failed dial ends only that connection; stop ends all', async () => {
    pod = createServer({ allowHalfOpen: true }, (s) => {
      podSockets.add(s)
      s.on('close', () => podSockets.delete(s))
      s.on('error', () => undefined)
      s.pipe(s)
    })
    await new Promise<void>((r) => pod.listen(0, '127.0.0.1', r))
    const ls = await listenTracked(
      [
        { local: 0, remote: 5000 },
        { local: 0, remote: 7 },
      ],
      ['127.0.0.1'],
    )
    const [good, refused] = ls as [Listener, Listener]
    const dials: string[] = []
    const lines: string[] = []
    const serving = serve(ls, fakeDialer(dials), { quiet: false, log: (l) => lines.push(l) })

    const e = await echoRoundTrip(good.localPort, 200_000)
    assert.equal(e.received, e.sent)
    const r = await dial(refused.localPort)
    r.on('error', () => undefined)
    r.resume()
    await new Promise((res) => {
      r.once('end', res)
      r.once('close', res)
    })
    assert.deepEqual(dials, ['dial 5000', 'dial 7'])
    assert.deepEqual(lines, [
      `Handling connection for ${good.localPort}`,
      `Handling connection for ${refused.localPort}`,
      `an error occurred forwarding ${refused.localPort} -> 7: connection refused by the pod`,
    ])

    // A connection held open is closed by stop(), and the listeners with it.
    const held = await dial(good.localPort)
    held.on('error', () => undefined)
    held.write('x')
    await new Promise((res) => held.once('data', res))
    const closed = new Promise((res) => held.once('close', res))
    await serving.stop()
    await closed
    await assert.rejects(
      new Promise((res, rej) => {
        const c = connect(good.localPort, '127.0.0.1', () => res(c))
        c.once('error', rej)
      }),
      { code: 'ECONNREFUSED' },
    )
  })
})
