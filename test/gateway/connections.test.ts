import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  authenticatedMaxStreams,
  clientSessionMemoryMb,
  preauthSettings,
  sourceKey,
} from '../../src/gateway/connections.js'

const LIMITS = {
  streamsPerConnection: 20_000,
  unauthenticatedStreams: 100,
  connectionsPerSource: 32,
  requestTimeoutMs: 30_000,
  handshakeTimeoutMs: 10_000,
}

test('a source is an IPv4 address or the /64 of an IPv6 address', () => {
  assert.equal(sourceKey('192.0.2.7'), '192.0.2.7')
  assert.equal(sourceKey('::ffff:192.0.2.7'), '192.0.2.7')
  assert.equal(sourceKey('2001:db8:1:2:a:b:c:d'), '2001:db8:1:2::/64')
  assert.equal(sourceKey('2001:db8:1:2::1'), '2001:db8:1:2::/64')
  assert.equal(sourceKey('2001:db8:0001:0002:ffff::9'), '2001:db8:1:2::/64')
  assert.equal(sourceKey('2001:db8::1'), '2001:db8:0:0::/64')
  assert.equal(sourceKey('::1'), '0:0:0:0::/64')
  assert.equal(sourceKey(undefined), 'unknown')
  // Two hosts of one /64 are one source; the next /64 is another.
  assert.equal(sourceKey('2001:db8:1:2::1'), sourceKey('2001:db8:1:2:ffff:ffff:ffff:ffff'))
  assert.notEqual(sourceKey('2001:db8:1:2::1'), sourceKey('2001:db8:1:3::1'))
})

test('stream allowance, window and session memory follow the limits', () => {
  assert.deepEqual(preauthSettings(LIMITS), {
    maxConcurrentStreams: 100,
    initialWindowSize: 4096,
  })
  assert.equal(authenticatedMaxStreams(LIMITS), 20_100)
  // ~1 KiB per stream nghttp2 may hold, plus headroom: far from the 1 GiB it was.
  assert.equal(clientSessionMemoryMb(LIMITS), 52)
  assert.equal(clientSessionMemoryMb({ ...LIMITS, streamsPerConnection: 100 }), 33)
})
