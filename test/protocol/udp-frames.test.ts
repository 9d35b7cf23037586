/**
 * The UDP flow framing: boundaries kept across any chunking, hostile lengths refused
 * before buffering, truncated frames detected.
 *
 * @module
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import {
  DatagramDecoder,
  encodeDatagram,
  FRAME_HEADER_SIZE,
  MAX_DATAGRAM_SIZE,
  UdpFrameError,
} from '../../src/protocol/udp-frames.js'

describe('UDP frames', () => {
  test('datagrams of 0, 1, 1,200 and the maximum size survive any chunking, in order', () => {
    const datagrams = [0, 1, 1200, MAX_DATAGRAM_SIZE, 3].map((n) => randomBytes(n))
    const wire = Buffer.concat(datagrams.map(encodeDatagram))
    for (const step of [1, 2, 3, 7, 1000, 65_536, wire.length]) {
      const d = new DatagramDecoder()
      const got: Buffer[] = []
      for (let off = 0; off < wire.length; off += step) {
        got.push(...d.push(wire.subarray(off, off + step)))
      }
      d.end()
      assert.equal(got.length, datagrams.length, `step ${step}`)
      got.forEach((g, i) => assert.ok(g.equals(datagrams[i]!), `step ${step}, datagram ${i}`))
      assert.equal(d.buffered, 0)
    }
  })

  test('an oversize length is refused as soon as its prefix arrives', () => {
    const d = new DatagramDecoder()
    const bad = Buffer.alloc(FRAME_HEADER_SIZE)
    bad.writeUInt16BE(MAX_DATAGRAM_SIZE + 1)
    assert.deepEqual(d.push(encodeDatagram(Buffer.from('ok'))).map(String), ['ok'])
    assert.throws(() => d.push(bad), UdpFrameError)
    // Nothing of it was buffered, and the decoder stays failed.
    assert.equal(d.buffered, 0)
    assert.throws(() => d.push(encodeDatagram(Buffer.from('x'))), UdpFrameError)
  })

  test('0xffff is refused too (the largest prefix), even split across chunks', () => {
    const d = new DatagramDecoder()
    assert.deepEqual(d.push(Buffer.from([0xff])), [])
    assert.throws(() => d.push(Buffer.from([0xff, 1, 2, 3])), /65535 bytes/)
  })

  test('a stream that ends inside a frame is an error; at a boundary it is not', () => {
    const frame = encodeDatagram(Buffer.from('hello'))
    for (const cut of [1, 2, 4]) {
      const d = new DatagramDecoder()
      d.push(frame.subarray(0, cut))
      assert.throws(() => d.end(), /ended inside a frame/)
    }
    const ok = new DatagramDecoder()
    ok.push(frame)
    ok.end()
  })

  test('the encoder refuses a datagram over the maximum', () => {
    assert.throws(() => encodeDatagram(Buffer.alloc(MAX_DATAGRAM_SIZE + 1)), UdpFrameError)
  })

  test('a partial frame never holds more than one frame of memory', () => {
    const d = new DatagramDecoder()
    const frame = encodeDatagram(randomBytes(MAX_DATAGRAM_SIZE))
    const big = Buffer.concat([frame, frame.subarray(0, 10)])
    assert.equal(d.push(big).length, 1)
    assert.equal(d.buffered, 10)
  })
})
