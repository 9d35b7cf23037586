import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import zlib from 'node:zlib'
import { SPDY3_DICTIONARY, SPDY3_DICTIONARY_ID } from '../../../src/protocol/spdy/dictionary.js'

function adler32(buf: Buffer): number {
  let a = 1
  let b = 0
  for (const byte of buf) {
    a = (a + byte) % 65521
    b = (b + a) % 65521
  }
  return ((b << 16) | a) >>> 0
}

test('the SPDY/3 dictionary is 1423 bytes with the published adler32 and sha256', () => {
  assert.equal(SPDY3_DICTIONARY.length, 1423)
  assert.equal(adler32(SPDY3_DICTIONARY), 0xe3c6a7c2)
  assert.equal(SPDY3_DICTIONARY_ID, 0xe3c6a7c2)
  assert.equal(
    createHash('sha256').update(SPDY3_DICTIONARY).digest('hex'),
    '51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02',
  )
})

test('the dictionary starts and ends as in the draft', () => {
  assert.equal(SPDY3_DICTIONARY.subarray(0, 11).toString('hex'), '000000076f7074696f6e73')
  assert.equal(SPDY3_DICTIONARY.subarray(-9).toString('latin1'), ',*,enq=0.')
})

test('zlib names the dictionary by the DICTID kubectl sends (78 f9 e3 c6 a7 c2)', () => {
  const out = zlib.deflateSync(Buffer.alloc(4), { dictionary: SPDY3_DICTIONARY, level: 9 })
  assert.equal(out.subarray(0, 6).toString('hex'), '78f9e3c6a7c2')
})
