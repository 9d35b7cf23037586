import { test } from 'node:test'
import assert from 'node:assert/strict'
import zlib from 'node:zlib'
import { SPDY3_DICTIONARY } from '../../../src/protocol/spdy/dictionary.js'
import { SpdyProtocolError } from '../../../src/protocol/spdy/frames.js'
import {
  HeaderCodec,
  parseHeaderBlock,
  serializeHeaderBlock,
} from '../../../src/protocol/spdy/header-codec.js'
import type { HeaderInput, SpdyHeaders } from '../../../src/protocol/spdy/header-codec.js'

const hex = (s: string): Buffer => Buffer.from(s.replace(/[^0-9a-f]/gi, ''), 'hex')

function encode(codec: HeaderCodec, h: HeaderInput): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    codec.encode(h, (err, b) => (err ? reject(err) : resolve(b!))),
  )
}
function decode(codec: HeaderCodec, b: Buffer): Promise<SpdyHeaders> {
  return new Promise((resolve, reject) =>
    codec.decode(b, (err, h) => (err ? reject(err) : resolve(h!))),
  )
}

test('serializes the uncompressed layout: count, then length-prefixed names and values', () => {
  assert.deepEqual(serializeHeaderBlock({}), hex('00000000'))
  assert.deepEqual(
    serializeHeaderBlock([['port', '5000']]),
    hex('00000001 00000004 706f7274 00000004 35303030'),
  )
  const multi = serializeHeaderBlock(new Map([['a', ['x', 'y']]]))
  assert.deepEqual(multi, hex('00000001 00000001 61 00000003 780079'))
  assert.deepEqual(parseHeaderBlock(multi), new Map([['a', ['x', 'y']]]))
})

test('rejects names a SPDY peer would die on, in both directions', () => {
  assert.throws(() => serializeHeaderBlock({ Port: '1' }), TypeError)
  assert.throws(() => serializeHeaderBlock({ '': '1' }), TypeError)
  assert.throws(
    () =>
      serializeHeaderBlock([
        ['a', '1'],
        ['a', '2'],
      ]),
    TypeError,
  )
  const cases: [string, Buffer][] = [
    ['short', hex('000000')],
    ['upper-case name', hex('00000001 00000001 41 00000000')],
    ['empty name', hex('00000001 00000000 00000000')],
    ['duplicate', hex('00000002 00000001 61 00000000 00000001 61 00000000')],
    ['truncated value', hex('00000001 00000001 61 00000005 6162')],
    ['truncated name', hex('00000001 000000ff 61 00000000')],
    ['trailing bytes', hex('00000000 00')],
    ['absurd count', hex('ffffffff 00000001 61 00000000')],
  ]
  for (const [name, raw] of cases) {
    assert.throws(() => parseHeaderBlock(raw), SpdyProtocolError, name)
  }
})

test('an empty SYN_REPLY block compresses to the recorded bytes, first and later', async () => {
  const codec = new HeaderCodec()
  try {
    assert.deepEqual(await encode(codec, {}), hex('78bbe3c6a7c2 62000200000000ffff'))
    assert.deepEqual(await encode(codec, {}), hex('020100000000ffff'))
    assert.deepEqual(await encode(codec, []), hex('020100000000ffff'))
  } finally {
    codec.close()
  }
})

test('one persistent zlib stream per direction: blocks depend on earlier ones', async () => {
  const client = new HeaderCodec({ deflateLevel: 9, deflateMemLevel: 8 })
  const server = new HeaderCodec()
  try {
    const sent: Record<string, string>[] = []
    const blocks: Buffer[] = []
    for (let i = 0; i < 50; i++) {
      const h = { streamtype: i % 2 ? 'data' : 'error', port: '5000', requestid: String(i >> 1) }
      sent.push(h)
      blocks.push(await encode(client, h))
    }
    // kubectl's first block: best compression with the dictionary
    // (docs/kubernetes-protocols.md#header-blocks).
    assert.equal(blocks[0]!.subarray(0, 6).toString('hex'), '78f9e3c6a7c2')
    assert.ok(blocks[5]!.length < 30, `later blocks are small (${blocks[5]!.length})`)
    // A later block alone does not inflate: it refers to the earlier ones.
    assert.throws(() => zlib.inflateSync(blocks[3]!, { dictionary: SPDY3_DICTIONARY }))
    // Submitted all at once, they still come back in order.
    const results = await Promise.all(blocks.map((b) => decode(server, b)))
    results.forEach((h, i) => {
      assert.deepEqual(Object.fromEntries([...h].map(([k, v]) => [k, v[0]])), sent[i])
    })
  } finally {
    client.close()
    server.close()
  }
})

test('a malformed but inflatable block fails only that block', async () => {
  const server = new HeaderCodec()
  const raw = zlib.createDeflate({ dictionary: SPDY3_DICTIONARY })
  const blocks: Buffer[] = []
  raw.on('data', (c: Buffer) => blocks.push(c))
  const flush = (b: Buffer): Promise<Buffer> =>
    new Promise((resolve) => {
      blocks.length = 0
      raw.write(b)
      raw.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve(Buffer.concat(blocks)))
    })
  try {
    const bad = await flush(hex('00000001 00000001 41 00000000')) // upper-case name
    const good = await flush(serializeHeaderBlock({ a: 'b' }))
    await assert.rejects(decode(server, bad), /upper-case/)
    assert.equal(server.error, undefined)
    assert.deepEqual(await decode(server, good), new Map([['a', ['b']]]))
  } finally {
    raw.close()
    server.close()
  }
})

test('a zip bomb is stopped at the cap and breaks the codec, not the process', async () => {
  const codec = new HeaderCodec({ maxHeaderBlockSize: 64 * 1024 })
  // 64 MiB of zeros in about 64 KiB: the first block of a fresh stream.
  const bomb = zlib.deflateSync(Buffer.alloc(64 * 1024 * 1024), {
    dictionary: SPDY3_DICTIONARY,
    finishFlush: zlib.constants.Z_SYNC_FLUSH,
  })
  assert.ok(bomb.length < 100 * 1024)
  const before = process.memoryUsage().rss
  const started = Date.now()
  await assert.rejects(decode(codec, bomb), /inflates past 65536 bytes/)
  assert.ok(Date.now() - started < 2000)
  assert.ok(process.memoryUsage().rss - before < 32 * 1024 * 1024, 'no 64 MiB allocation')
  assert.ok(codec.error instanceof SpdyProtocolError)
  // Every later call fails at once.
  await assert.rejects(decode(codec, hex('00')), /inflates past/)
  await assert.rejects(encode(codec, {}), /inflates past/)
  codec.close()
})

test('garbage that does not inflate breaks the codec', async () => {
  const codec = new HeaderCodec()
  await assert.rejects(decode(codec, Buffer.from('this is not zlib')), SpdyProtocolError)
  assert.ok(codec.error)
  codec.close()
})

test('close() fails pending calls', async () => {
  const codec = new HeaderCodec()
  const p = encode(codec, { a: 'b' })
  codec.close()
  await assert.rejects(p, /closed/)
  codec.close()
})
