import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  FLAG_FIN,
  FrameParser,
  FrameType,
  GoawayStatus,
  RstStatus,
  SpdyProtocolError,
  encodeDataFrame,
  encodeDataHeader,
  encodeGoaway,
  encodePing,
  encodeRstStream,
  encodeSynReply,
  frameTypeName,
} from '../../../src/protocol/spdy/frames.js'
import type { DataPiece, SpdyFrame } from '../../../src/protocol/spdy/frames.js'
import {
  encodeControlFrame,
  encodeHeadersFrame,
  encodeSettings,
  encodeSynStream,
  encodeWindowUpdate,
} from './spdy-test-client.js'

const hex = (s: string): Buffer => Buffer.from(s.replace(/[^0-9a-f]/gi, ''), 'hex')

function drain(parser: FrameParser): SpdyFrame[] {
  const out: SpdyFrame[] = []
  for (let f = parser.next(); f !== null; f = parser.next()) out.push(f)
  return out
}

/** Merges DATA pieces back into whole frames, for comparisons. */
function normalize(frames: SpdyFrame[]): unknown[] {
  const out: unknown[] = []
  let acc: Buffer[] = []
  for (const f of frames) {
    if (f.kind === 'data') {
      acc.push(f.data)
      if (f.last) {
        out.push({ kind: 'data', streamId: f.streamId, fin: f.fin, data: Buffer.concat(acc) })
        acc = []
      } else {
        assert.equal(f.fin, false, 'FIN only on the last piece')
      }
    } else {
      out.push(f)
    }
  }
  return out
}

// A session's worth of client frames, as kubectl would send them.
const synBlock = hex('78f9e3c6a7c2 0000 00ff ff') // any bytes: the parser does not inflate
const stream = Buffer.concat([
  encodeSynStream(1, synBlock),
  encodeDataFrame(1, Buffer.alloc(0), true),
  encodeSynStream(3, synBlock, 0, 3),
  encodeDataFrame(3, Buffer.from('hello world'), false),
  encodeDataFrame(3, Buffer.alloc(70_000, 7), false),
  encodePing(1),
  encodeSettings([{ id: 7, value: 65536 }]),
  encodeWindowUpdate(3, 1000),
  encodeHeadersFrame(3, synBlock),
  encodeControlFrame(FrameType.NOOP, 0, Buffer.alloc(0)),
  encodeControlFrame(FrameType.CREDENTIAL, 0, Buffer.alloc(12)),
  encodeDataFrame(3, Buffer.alloc(0), true),
  encodeRstStream(3, RstStatus.CANCEL),
  encodeGoaway(3, 0),
])

test('parses a whole session fed at once', () => {
  const p = new FrameParser()
  p.push(stream)
  const frames = normalize(drain(p))
  assert.equal(frames.length, 14)
  assert.deepEqual(frames[0], {
    kind: 'syn_stream',
    flags: 0,
    streamId: 1,
    associatedStreamId: 0,
    priority: 0,
    slot: 0,
    headerBlock: synBlock,
  })
  assert.deepEqual(frames[1], { kind: 'data', streamId: 1, fin: true, data: Buffer.alloc(0) })
  assert.equal((frames[2] as { priority: number }).priority, 3)
  assert.deepEqual(frames[4], {
    kind: 'data',
    streamId: 3,
    fin: false,
    data: Buffer.alloc(70_000, 7),
  })
  assert.deepEqual(frames[5], { kind: 'ping', id: 1 })
  assert.deepEqual(frames[6], {
    kind: 'settings',
    flags: 0,
    entries: [{ flags: 0, id: 7, value: 65536 }],
  })
  assert.deepEqual(frames[7], { kind: 'window_update', streamId: 3, delta: 1000 })
  assert.equal((frames[8] as { kind: string }).kind, 'headers')
  assert.deepEqual(frames[9], { kind: 'unknown', type: 5, flags: 0, length: 0 })
  assert.deepEqual(frames[10], { kind: 'unknown', type: 10, flags: 0, length: 12 })
  assert.deepEqual(frames[12], { kind: 'rst_stream', streamId: 3, status: 5 })
  assert.deepEqual(frames[13], { kind: 'goaway', lastGoodStreamId: 3, status: 0 })
  assert.ok(p.atFrameBoundary)
  assert.equal(p.bufferedBytes, 0)
})

test('gives the same frames however the bytes are split, with empty chunks', () => {
  const p0 = new FrameParser()
  p0.push(stream)
  const expected = normalize(drain(p0))
  // Every split point for the first 200 bytes, then random splits.
  const splits: number[][] = []
  for (let i = 0; i <= 200; i++) splits.push([i])
  let seed = 42
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  for (let r = 0; r < 50; r++) {
    const cuts = new Set<number>()
    for (let k = 0; k < 40; k++) cuts.add(rnd(stream.length))
    splits.push([...cuts].sort((a, b) => a - b))
  }
  for (const cuts of splits) {
    const p = new FrameParser()
    const got: SpdyFrame[] = []
    let prev = 0
    for (const c of [...cuts, stream.length]) {
      p.push(stream.subarray(prev, c))
      p.push(Buffer.alloc(0))
      got.push(...drain(p))
      prev = c
    }
    assert.deepEqual(normalize(got), expected, `cuts ${cuts.join(',')}`)
  }
})

test('DATA payloads come out as views of the input without buffering the frame', () => {
  const p = new FrameParser()
  const big = 0xffffff // the largest DATA frame SPDY allows
  p.push(encodeDataHeader(5, big, true))
  let total = 0
  let pieces = 0
  let finSeen = false
  const chunk = Buffer.alloc(1 << 20, 1)
  for (let sent = 0; sent < big; sent += chunk.length) {
    const c = chunk.subarray(0, Math.min(chunk.length, big - sent))
    p.push(c)
    for (let f = p.next(); f !== null; f = p.next()) {
      const d = f as DataPiece
      assert.equal(d.data.buffer, c.buffer, 'a view of the pushed chunk')
      total += d.data.length
      pieces++
      finSeen ||= d.fin
    }
    assert.equal(p.bufferedBytes, 0)
  }
  assert.equal(total, big)
  assert.equal(pieces, 16)
  assert.ok(finSeen)
  assert.ok(p.atFrameBoundary)
})

const bad: [string, Buffer][] = [
  ['unsupported version', encodeControlFrame(FrameType.PING, 0, Buffer.alloc(4, 1), 2)],
  ['DATA on stream 0', encodeDataFrame(1, Buffer.alloc(1), false).fill(0, 0, 4)],
  ['SYN_STREAM too short', encodeControlFrame(FrameType.SYN_STREAM, 0, Buffer.alloc(9))],
  ['SYN_STREAM stream 0', encodeSynStream(0, Buffer.alloc(2))],
  ['SYN_REPLY too short', encodeControlFrame(FrameType.SYN_REPLY, 0, Buffer.alloc(3))],
  ['HEADERS stream 0', encodeHeadersFrame(0, Buffer.alloc(2))],
  ['RST_STREAM length 7', encodeControlFrame(FrameType.RST_STREAM, 0, Buffer.alloc(7, 1))],
  ['RST_STREAM stream 0', encodeControlFrame(FrameType.RST_STREAM, 0, Buffer.alloc(8))],
  [
    'SETTINGS count mismatch',
    encodeControlFrame(FrameType.SETTINGS, 0, hex('00000002 00000001 00000001')),
  ],
  ['SETTINGS too short', encodeControlFrame(FrameType.SETTINGS, 0, Buffer.alloc(3))],
  ['PING length 8', encodeControlFrame(FrameType.PING, 0, Buffer.alloc(8, 1))],
  ['GOAWAY length 12', encodeControlFrame(FrameType.GOAWAY, 0, Buffer.alloc(12))],
  ['GOAWAY length 4 (SPDY/2 style)', encodeControlFrame(FrameType.GOAWAY, 0, Buffer.alloc(4))],
  ['WINDOW_UPDATE length 4', encodeControlFrame(FrameType.WINDOW_UPDATE, 0, Buffer.alloc(4))],
]
for (const [name, bytes] of bad) {
  test(`malformed frame is a protocol error: ${name}`, () => {
    const p = new FrameParser()
    p.push(bytes)
    assert.throws(() => p.next(), SpdyProtocolError)
    assert.ok(p.failed)
    assert.equal(p.bufferedBytes, 0, 'the parser drops its buffer')
    // And it stays failed.
    assert.throws(() => p.next(), SpdyProtocolError)
  })
}

test('an oversized control frame is refused from its header, before buffering it', () => {
  const p = new FrameParser({ maxControlFrameSize: 1024 })
  const header = encodeControlFrame(FrameType.HEADERS, 0, Buffer.alloc(0))
  header.writeUIntBE(0xffffff, 5, 3)
  p.push(header)
  assert.throws(() => p.next(), /exceeds the 1024-byte limit/)
  // The default cap is 64 KiB.
  const q = new FrameParser()
  q.push(encodeControlFrame(FrameType.CREDENTIAL, 0, Buffer.alloc(64 * 1024)))
  assert.equal((q.next() as { kind: string }).kind, 'unknown')
  const r = new FrameParser()
  r.push(encodeControlFrame(FrameType.CREDENTIAL, 0, Buffer.alloc(64 * 1024 + 1)))
  assert.throws(() => r.next(), SpdyProtocolError)
})

test('a protocol error carries the GOAWAY status and a registry code', () => {
  const err = new SpdyProtocolError('x')
  assert.equal(err.goawayStatus, GoawayStatus.PROTOCOL_ERROR)
  assert.equal(err.code, 'PFG_ERR_PROTO_BAD_HEADER')
})

// docs/kubernetes-protocols.md#header-blocks
test('recorded SYN_REPLY frames encode byte for byte', () => {
  assert.deepEqual(
    encodeSynReply(1, hex('78bbe3c6a7c262000200000000ffff')),
    hex('80030002 00000013 00000001 78bbe3c6a7c2 62000200000000ffff'),
  )
  assert.deepEqual(
    encodeSynReply(3, hex('020100000000ffff')),
    hex('80030002 0000000c 00000003 020100000000ffff'),
  )
})

test('server frame encoders: exact bytes', () => {
  assert.deepEqual(
    encodeGoaway(7, GoawayStatus.PROTOCOL_ERROR),
    hex('80030007 00000008 00000007 00000001'),
  )
  assert.deepEqual(encodePing(2), hex('80030006 00000004 00000002'))
  assert.deepEqual(encodeRstStream(3, RstStatus.CANCEL), hex('80030003 00000008 00000003 00000005'))
  assert.deepEqual(encodeDataHeader(3, 0, true), hex('00000003 01000000'))
  assert.deepEqual(encodeDataHeader(0x7fffffff, 0xffffff, false), hex('7fffffff 00ffffff'))
  assert.deepEqual(encodeDataFrame(1, Buffer.from('hi'), false), hex('00000001 00000002 6869'))
  assert.throws(() => encodeDataHeader(0, 1, false), RangeError)
  assert.throws(() => encodeDataHeader(1, 0x1000000, false), RangeError)
  assert.throws(() => encodePing(0), RangeError)
  assert.throws(() => encodeRstStream(0x80000000, 1), RangeError)
  assert.equal(FLAG_FIN, 1)
  assert.equal(frameTypeName(7), 'GOAWAY')
  assert.equal(frameTypeName(77), 'TYPE_77')
})

test("kubectl's first SYN_STREAM header parses (80 03 00 01 | 00 00 00 3e | ...)", () => {
  const block = Buffer.alloc(52, 0)
  hex('78f9e3c6a7c2').copy(block)
  const frame = Buffer.concat([hex('80030001 0000003e 00000001 00000000 00 00'), block])
  const p = new FrameParser()
  p.push(frame)
  const f = p.next()
  assert.ok(f !== null && f.kind === 'syn_stream')
  assert.equal(f.streamId, 1)
  assert.equal(f.headerBlock.length, 52)
  assert.equal(f.headerBlock.subarray(0, 6).toString('hex'), '78f9e3c6a7c2')
})
