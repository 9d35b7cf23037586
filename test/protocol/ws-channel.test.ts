import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { WebSocket } from 'ws'
import {
  MAX_CHANNEL_PORTS,
  V4_BASE64_CHANNEL_PROTOCOL,
  V4_CHANNEL_PROTOCOL,
  channelRole,
  dataChannel,
  decodeChannelMessage,
  encodeChannelMessage,
  encodePortPrefix,
  errorChannel,
  parseOfferedProtocols,
  parsePortsQuery,
  selectChannelProtocol,
} from '../../src/protocol/ws-channel.js'
import { isAppError } from '../../src/shared/errors.js'
import { ChannelWriter } from '../../src/protocol/ws-channel-writer.js'
import { startKubeProtocolServer } from '../helpers/kube-protocol-server.js'
import type { KubeProtocolServer } from '../helpers/kube-protocol-server.js'

const CLIENT_NODE_OFFER =
  'v5.channel.k8s.io,v4.channel.k8s.io,v3.channel.k8s.io,v2.channel.k8s.io,channel.k8s.io'

test('subprotocol: first supported in client order, never v5', () => {
  assert.deepEqual(selectChannelProtocol(CLIENT_NODE_OFFER), {
    protocol: V4_CHANNEL_PROTOCOL,
    encoding: 'binary',
  })
  assert.deepEqual(selectChannelProtocol('v4.base64.channel.k8s.io, v4.channel.k8s.io'), {
    protocol: V4_BASE64_CHANNEL_PROTOCOL,
    encoding: 'base64',
  })
  assert.deepEqual(selectChannelProtocol(['v5.channel.k8s.io', 'x, v4.channel.k8s.io']), {
    protocol: V4_CHANNEL_PROTOCOL,
    encoding: 'binary',
  })
  assert.deepEqual(selectChannelProtocol(undefined), { protocol: '', encoding: 'binary' })
  assert.deepEqual(selectChannelProtocol(' , '), { protocol: '', encoding: 'binary' })
  assert.equal(selectChannelProtocol('v5.channel.k8s.io'), undefined)
  assert.equal(selectChannelProtocol('channel.k8s.io,base64.channel.k8s.io'), undefined)
  assert.equal(selectChannelProtocol('SPDY/3.1+portforward.k8s.io'), undefined)
  assert.deepEqual(parseOfferedProtocols(['a, b', 'c']), ['a', 'b', 'c'])
})

test('ports from ?ports= and ?port=, repeated and comma-separated, in order', () => {
  assert.deepEqual(parsePortsQuery('ports=5000'), [5000])
  assert.deepEqual(parsePortsQuery('?ports=5000&ports=5001'), [5000, 5001])
  assert.deepEqual(parsePortsQuery('port=5000,5001,1'), [5000, 5001, 1])
  assert.deepEqual(parsePortsQuery('ports=80&port=443&x=1'), [80, 443])
  assert.deepEqual(parsePortsQuery(new URLSearchParams('ports=65535,65535')), [65535, 65535])
  assert.deepEqual(parsePortsQuery('ports=5000%2C5001'), [5000, 5001])
  const many = Array.from({ length: MAX_CHANNEL_PORTS }, (_, i) => i + 1).join(',')
  assert.equal(parsePortsQuery(`ports=${many}`).length, 128)
})

test('bad port lists are PFG_ERR_ROUTE_BAD_PORT', () => {
  const bad = [
    '',
    'x=1',
    'ports=',
    'ports=0',
    'ports=65536',
    'ports=05000',
    'ports=+80',
    'ports=-1',
    'ports=%2080',
    'ports=80%20',
    'ports=5000,',
    'ports=,5000',
    'ports=abc',
    'ports=1e3',
    'port=99999999999',
    `ports=${Array.from({ length: 129 }, () => '1').join(',')}`,
  ]
  for (const q of bad) {
    assert.throws(
      () => parsePortsQuery(q),
      (e) => isAppError(e) && e.code === 'PFG_ERR_ROUTE_BAD_PORT',
      q,
    )
  }
})

test('channels: data 2i, error 2i+1', () => {
  assert.equal(dataChannel(0), 0)
  assert.equal(errorChannel(0), 1)
  assert.equal(dataChannel(3), 6)
  assert.equal(errorChannel(3), 7)
  assert.deepEqual(channelRole(5, 3), { portIndex: 2, kind: 'error' })
  assert.deepEqual(channelRole(4, 3), { portIndex: 2, kind: 'data' })
  assert.equal(channelRole(6, 3), undefined)
  assert.equal(channelRole(-1, 3), undefined)
})

/** A WebSocket stand-in that records sends and completes them when told. */
class RecordingSocket {
  readyState = 1
  readonly sent: (Buffer | string)[] = []
  readonly #callbacks: ((err?: Error) => void)[] = []
  send(data: Buffer | string, _o: { binary: boolean }, cb: (err?: Error) => void): void {
    this.sent.push(data)
    this.#callbacks.push(cb)
  }
  get inFlight(): number {
    return this.#callbacks.length
  }
  complete(): void {
    this.#callbacks.shift()?.()
  }
}

// docs/kubernetes-protocols.md#channels-and-the-port-prefix
test('port prefixes: 2-byte little-endian on both channels of each port', () => {
  assert.deepEqual(encodePortPrefix(5000), Buffer.from([0x88, 0x13]))
  assert.throws(() => encodePortPrefix(0), RangeError)
  const prefixes = (ports: number[], encoding: 'binary' | 'base64'): (Buffer | string)[] => {
    const ws = new RecordingSocket()
    new ChannelWriter(ws, encoding).sendPortPrefixes(ports)
    while (ws.inFlight > 0) ws.complete()
    return ws.sent
  }
  assert.deepEqual(prefixes([5000], 'binary'), [
    Buffer.from([0x00, 0x88, 0x13]),
    Buffer.from([0x01, 0x88, 0x13]),
  ])
  assert.deepEqual(prefixes([5000], 'base64'), ['0iBM=', '1iBM='])
  assert.deepEqual(prefixes([5000, 1], 'binary'), [
    Buffer.from([0, 0x88, 0x13]),
    Buffer.from([1, 0x88, 0x13]),
    Buffer.from([2, 1, 0]),
    Buffer.from([3, 1, 0]),
  ])
  assert.throws(() => prefixes(new Array<number>(MAX_CHANNEL_PORTS + 1).fill(80), 'binary'))
})

test('writer: one frame in flight; queued data on a channel merges, whole messages do not', () => {
  const ws = new RecordingSocket()
  const w = new ChannelWriter(ws, 'binary', { highWaterMark: 10, maxMergedBytes: 6 })
  w.sendPortPrefixes([5000])
  assert.equal(ws.sent.length, 1, 'the second prefix waits for the first write')
  w.send(0, Buffer.from('ab'))
  w.send(0, Buffer.from('cd'))
  w.send(1, Buffer.from('oops'), undefined, true)
  w.send(0, Buffer.from('efg'))
  w.send(0, Buffer.from('hij'))
  w.send(0, Buffer.from('k'))
  while (ws.inFlight > 0) {
    assert.equal(ws.inFlight, 1)
    ws.complete()
  }
  assert.deepEqual(
    ws.sent.map((m) => [...(m as Buffer)]),
    [
      [0, 0x88, 0x13],
      [1, 0x88, 0x13],
      [0, ...Buffer.from('abcd')],
      [1, ...Buffer.from('oops')],
      [0, ...Buffer.from('efghij')],
      [0, ...Buffer.from('k')],
    ],
  )
  assert.equal(w.pendingBytes, 0)
})

test('writer: callbacks wait above the high-water mark; whenIdle runs after the last write', () => {
  const ws = new RecordingSocket()
  const w = new ChannelWriter(ws, 'binary', { highWaterMark: 4, maxMergedBytes: 100 })
  const order: string[] = []
  w.send(0, Buffer.from('abc'), () => order.push('a'))
  w.send(0, Buffer.from('def'), () => order.push('b'))
  w.whenIdle(() => order.push('idle'))
  assert.deepEqual(order, ['a'], 'b is above the mark and waits')
  ws.complete()
  assert.deepEqual(order, ['a'], 'b waits until its own bytes are written')
  assert.equal(w.pendingBytes, 3)
  ws.complete()
  assert.deepEqual(order, ['a', 'b', 'idle'])
  w.whenIdle(() => order.push('now'))
  assert.equal(order.at(-1), 'now')
})

test('writer: a closed socket drops what is queued and still calls back', () => {
  const ws = new RecordingSocket()
  const w = new ChannelWriter(ws, 'binary', { highWaterMark: 1 })
  const order: string[] = []
  w.send(0, Buffer.from('abc'), () => order.push('first'))
  w.send(0, Buffer.from('def'), () => order.push('second'))
  w.whenIdle(() => order.push('idle'))
  ws.readyState = 3
  ws.complete()
  assert.deepEqual(order, ['first', 'second', 'idle'])
  assert.equal(ws.sent.length, 1)
  w.send(0, Buffer.from('late'), () => order.push('late'))
  assert.equal(order.at(-1), 'late')
  assert.equal(ws.sent.length, 1)
  assert.equal(w.pendingBytes, 0)
})

test('encode and decode messages in both encodings', () => {
  const payload = Buffer.from('hello')
  assert.deepEqual(encodeChannelMessage(2, payload, 'binary'), Buffer.from('\x02hello', 'latin1'))
  assert.equal(encodeChannelMessage(1, payload, 'base64'), '1aGVsbG8=')
  assert.equal(encodeChannelMessage(11, payload, 'base64'), ';aGVsbG8=')
  assert.deepEqual(decodeChannelMessage(Buffer.from('\x00abc'), true, 'binary'), {
    channel: 0,
    payload: Buffer.from('abc'),
  })
  assert.deepEqual(decodeChannelMessage('0aGVsbG8=', false, 'base64'), {
    channel: 0,
    payload,
  })
  assert.deepEqual(decodeChannelMessage(Buffer.from('2'), false, 'base64'), {
    channel: 2,
    payload: Buffer.alloc(0),
  })
  assert.equal(decodeChannelMessage(Buffer.alloc(0), true, 'binary'), undefined)
  assert.equal(decodeChannelMessage('', false, 'base64'), undefined)
  const code = (e: unknown): boolean => isAppError(e) && e.code === 'PFG_ERR_PROTO_BAD_HEADER'
  assert.throws(() => decodeChannelMessage('0abc', false, 'binary'), code)
  assert.throws(() => decodeChannelMessage(Buffer.from('0YQ=='), true, 'base64'), code)
  assert.throws(() => decodeChannelMessage('0a!==', false, 'base64'), code)
  assert.throws(() => decodeChannelMessage('0abc', false, 'base64'), code)
  assert.throws(() => decodeChannelMessage('\u0010YQ==', false, 'base64'), code)
  assert.throws(() => encodeChannelMessage(256, payload, 'binary'), RangeError)
})

// ---------------------------------------------------------------------------
// Real clients against the test server

let dir: string
let server: KubeProtocolServer
let echo: net.Server

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pfgate-v4-'))
  echo = net.createServer((s) => {
    s.on('error', () => {})
    s.pipe(s)
  })
  echo.listen(0, '127.0.0.1')
  await once(echo, 'listening')
  server = await startKubeProtocolServer({
    dir,
    targets: { 5000: (echo.address() as net.AddressInfo).port },
    token: 'test-token',
  })
})

after(async () => {
  await server.close()
  echo.close()
  await rm(dir, { recursive: true, force: true })
})

function openWs(query: string, protocols: string[]): WebSocket {
  return new WebSocket(
    `wss://127.0.0.1:${server.port}/api/v1/namespaces/default/pods/demo/portforward?${query}`,
    protocols,
    { ca: server.cert, headers: { authorization: 'Bearer test-token' }, perMessageDeflate: false },
  )
}

test('client-node style: v4.channel.k8s.io chosen, port prefixes first, data echoed', async () => {
  const ws = openWs('ports=5000', CLIENT_NODE_OFFER.split(','))
  const messages: Buffer[] = []
  ws.on('message', (d: Buffer) => messages.push(d))
  await once(ws, 'open')
  assert.equal(ws.protocol, V4_CHANNEL_PROTOCOL)
  const data = randomBytes(300_000)
  ws.send(Buffer.concat([Buffer.from([0]), data]))
  const deadline = Date.now() + 5000
  const got = (): number =>
    messages.slice(2).reduce((n, m) => n + (m[0] === 0 ? m.length - 1 : 0), 0)
  while (got() < data.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  assert.deepEqual(messages[0], Buffer.from([0, 0x88, 0x13]))
  assert.deepEqual(messages[1], Buffer.from([1, 0x88, 0x13]))
  const echoed = Buffer.concat(messages.slice(2).map((m) => m.subarray(1)))
  assert.deepEqual(echoed, data)
  ws.close()
  await once(ws, 'close')
})

test('v4.base64.channel.k8s.io: text messages both ways', async () => {
  const ws = openWs('port=5000', [V4_BASE64_CHANNEL_PROTOCOL])
  const messages: string[] = []
  ws.on('message', (d: Buffer, isBinary: boolean) => {
    assert.equal(isBinary, false)
    messages.push(d.toString())
  })
  await once(ws, 'open')
  assert.equal(ws.protocol, V4_BASE64_CHANNEL_PROTOCOL)
  ws.send(encodeChannelMessage(0, Buffer.from('over base64'), 'base64') as string)
  const deadline = Date.now() + 5000
  while (messages.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  assert.deepEqual(messages.slice(0, 2), ['0iBM=', '1iBM='])
  assert.equal(
    decodeChannelMessage(messages[2]!, false, 'base64')!.payload.toString(),
    'over base64',
  )
  ws.close()
  await once(ws, 'close')
})

test('an unsupported subprotocol offer is refused with 403', async () => {
  const ws = openWs('ports=5000', ['v5.channel.k8s.io'])
  const [, res] = (await once(ws, 'unexpected-response')) as [unknown, { statusCode: number }]
  assert.equal(res.statusCode, 403)
  ws.on('error', () => {})
  ws.terminate()
})

const PYTHON_CLIENT = String.raw`
import hashlib, json, os, sys, time
from kubernetes import client
from kubernetes.stream import portforward

cfg = client.Configuration()
cfg.host = sys.argv[1]
cfg.ssl_ca_cert = sys.argv[2]
cfg.api_key = {'authorization': 'test-token'}
cfg.api_key_prefix = {'authorization': 'Bearer'}
api = client.CoreV1Api(client.ApiClient(cfg))
pf = portforward(api.connect_get_namespaced_pod_portforward, 'demo', 'default', ports='5000,5001')
sock = pf.socket(5000)
sock.setblocking(True)
data = os.urandom(int(sys.argv[3]))
sock.sendall(data)
got = bytearray()
while len(got) < len(data):
    chunk = sock.recv(1 << 20)
    if not chunk:
        break
    got += chunk
deadline = time.time() + 10
while pf.error(5001) is None and time.time() < deadline:
    time.sleep(0.02)
print(json.dumps({
    'sent': hashlib.sha256(data).hexdigest(),
    'got': hashlib.sha256(bytes(got)).hexdigest(),
    'gotBytes': len(got),
    'error5001': pf.error(5001),
}))
sock.close()
pf.close()
`

test('the Python client (kubernetes.stream.portforward) forwards two ports over v4', async () => {
  const script = join(dir, 'pf.py')
  await writeFile(script, PYTHON_CLIENT)
  const caPath = join(dir, 'ca.pem')
  await writeFile(caPath, server.cert)
  const size = 2 * 1024 * 1024
  const upgradesBefore = server.upgrades.length
  const out = await new Promise<string>((resolve, reject) => {
    execFile(
      '/usr/bin/python3',
      [script, server.url, caPath, String(size)],
      { timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`python client failed: ${err.message}\n${stderr}`))
        else resolve(stdout)
      },
    )
  })
  const r = JSON.parse(out.trim().split('\n').at(-1)!) as {
    sent: string
    got: string
    gotBytes: number
    error5001: string | null
  }
  assert.equal(r.gotBytes, size)
  assert.equal(r.got, r.sent)
  assert.match(
    r.error5001 ?? '',
    /^error forwarding port 5001 to pod demo, uid : connect ECONNREFUSED/,
  )
  const up = server.upgrades.slice(upgradesBefore)
  assert.equal(up.length, 1)
  assert.equal(up[0]!.protocol, 'ws-v4')
  assert.match(up[0]!.path, /ports=5000%2C5001|ports=5000,5001/)
})
