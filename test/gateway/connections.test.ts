import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  authenticatedMaxStreams,
  clientSessionMemoryMb,
  preauthSettings,
} from '../../src/gateway/connections.js'

const LIMITS = {
  streamsPerConnection: 20_000,
  unauthenticatedStreams: 100,
  connectionsPerSource: 32,
  requestTimeoutMs: 30_000,
  handshakeTimeoutMs: 10_000,
}

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
