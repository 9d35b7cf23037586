/**
 * `pfgate demo-pod`: the kinds it serves, and clear usage errors (exit 2) for the rest, as
 * a child process like the dev cluster and docker-compose run it.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createSocket } from 'node:dgram'
import { connect } from 'node:net'
import { once } from 'node:events'
import { runCli, runCliToEnd } from '../helpers/cli.js'
import { DEMO_DNS_ADDRESS, dnsAnswer } from '../../src/dev/demo-pod.js'

/** A DNS query (RFC 1035 §4.1) for `name`, type `qtype`. */
function query(name: string, qtype = 1, id = 0x1234): Buffer {
  const header = Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])
  const labels = name
    .split('.')
    .map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]))
  return Buffer.concat([header, ...labels, Buffer.from([0, qtype >> 8, qtype & 0xff, 0, 1])])
}

test('usage errors exit 2 with the reason; nothing listens', async () => {
  for (const [args, reason] of [
    [['--kind', 'sctp', '--listen', '127.0.0.1:0'], /--kind sctp: must be echo or http or udp/],
    [['--kind', 'echo'], /at least one --listen is required/],
    [['--listen', 'localhost'], /--listen localhost: expected HOST:PORT/],
    [['--listen', '127.0.0.1:70000'], /expected HOST:PORT/],
    [['--bogus'], /bogus/],
  ] as const) {
    const r = await runCliToEnd(['demo-pod', ...args])
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, reason)
    assert.match(r.stderr, /usage: pfgate demo-pod --kind echo\|http\|udp/)
    assert.equal(r.stdout, '', 'no {"ports":…} line: nothing was started')
  }
  const help = await runCliToEnd(['demo-pod', '--help'])
  assert.equal(help.code, 0)
  assert.match(help.stdout, /usage: pfgate demo-pod/)
})

test('an echo pod echoes and stops on SIGTERM with exit 0', async () => {
  const pod = runCli(['demo-pod', '--kind', 'echo', '--listen', '127.0.0.1:0'])
  const [line] = await pod.waitForLines(1)
  const { ports } = JSON.parse(line as string) as { ports: number[] }
  const socket = connect(ports[0] as number, '127.0.0.1')
  socket.end('ping')
  let echoed = ''
  socket.on('data', (d: Buffer) => (echoed += d.toString()))
  await once(socket, 'end')
  assert.equal(echoed, 'ping')
  assert.equal(await pod.stop('SIGTERM'), 0)
})

test('the udp kind answers DNS queries for *.internal and echoes anything else', async () => {
  const a = dnsAnswer(query('api.internal')) as Buffer
  assert.equal(a.readUInt16BE(0), 0x1234)
  assert.equal(a.readUInt16BE(2) & 0x800f, 0x8000) // a response, NOERROR
  assert.equal(a.readUInt16BE(6), 1) // one answer
  assert.deepEqual([...a.subarray(a.length - 4)], [...DEMO_DNS_ADDRESS])
  const nx = dnsAnswer(query('example.com')) as Buffer
  assert.equal(nx.readUInt16BE(2) & 0xf, 3) // NXDOMAIN
  assert.equal(nx.readUInt16BE(6), 0)
  assert.equal(dnsAnswer(query('api.internal', 28))?.readUInt16BE(6), 0) // AAAA: no records
  for (const junk of [
    Buffer.from('hello'),
    Buffer.alloc(40),
    query('x.internal').subarray(0, 20),
  ]) {
    assert.equal(dnsAnswer(junk), undefined)
  }
  const pod = runCli(['demo-pod', '--kind', 'udp', '--listen', '127.0.0.1:0'])
  const [line] = await pod.waitForLines(1)
  const { ports } = JSON.parse(line as string) as { ports: number[] }
  const c = createSocket('udp4')
  const replies: Buffer[] = []
  c.on('message', (m) => replies.push(m))
  c.send('ping', ports[0] as number, '127.0.0.1')
  c.send(query('db.internal'), ports[0] as number, '127.0.0.1')
  const deadline = Date.now() + 5000
  while (replies.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  c.close()
  assert.equal(replies.length, 2)
  assert.ok(replies.some((r) => String(r) === 'ping'))
  assert.ok(replies.some((r) => r.length > 16 && r.readUInt16BE(6) === 1))
  assert.equal(await pod.stop('SIGTERM'), 0)
})
