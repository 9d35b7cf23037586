import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  SPDY_TUNNEL_PROTOCOL,
  isSpdyUpgradeRequest,
  negotiateStreamProtocol,
  offersSpdyTunnel,
  spdyUpgradeResponse,
} from '../../../src/protocol/spdy/upgrade.js'

test('recognises the SPDY upgrade as kubectl sends it, case-insensitively', () => {
  assert.ok(isSpdyUpgradeRequest({ connection: 'Upgrade', upgrade: 'SPDY/3.1' }))
  assert.ok(isSpdyUpgradeRequest({ connection: 'keep-alive, upgrade', upgrade: 'spdy/3.1' }))
  assert.equal(isSpdyUpgradeRequest({ connection: 'close', upgrade: 'SPDY/3.1' }), false)
  assert.equal(isSpdyUpgradeRequest({ connection: 'Upgrade', upgrade: 'websocket' }), false)
  assert.equal(isSpdyUpgradeRequest({ upgrade: 'SPDY/3.1' }), false)
})

test('recognises the tunnel subprotocol (and nothing like it)', () => {
  assert.equal(SPDY_TUNNEL_PROTOCOL, 'SPDY/3.1+portforward.k8s.io')
  assert.ok(offersSpdyTunnel('SPDY/3.1+portforward.k8s.io'))
  assert.ok(offersSpdyTunnel(['v4.channel.k8s.io', 'SPDY/3.1+portforward.k8s.io']))
  assert.equal(offersSpdyTunnel('v2.portforward.k8s.io'), false)
  assert.equal(offersSpdyTunnel('spdy/3.1+portforward.k8s.io'), false)
  assert.equal(offersSpdyTunnel(undefined), false)
})

test('X-Stream-Protocol-Version: comma lists and repeats; 400 without, 403 on no overlap', () => {
  assert.deepEqual(negotiateStreamProtocol('portforward.k8s.io'), {
    ok: true,
    protocol: 'portforward.k8s.io',
  })
  assert.deepEqual(negotiateStreamProtocol(['v9.example', 'x, portforward.k8s.io']), {
    ok: true,
    protocol: 'portforward.k8s.io',
  })
  const none = negotiateStreamProtocol(undefined)
  assert.equal(none.ok, false)
  assert.equal(!none.ok && none.status, 400)
  const other = negotiateStreamProtocol('channel.k8s.io')
  assert.equal(!other.ok && other.status, 403)
})

// docs/kubernetes-protocols.md#the-spdy-101
test('the 101 carries what kubectl checks', () => {
  const r = spdyUpgradeResponse()
  assert.match(r, /^HTTP\/1\.1 101 Switching Protocols\r\n/)
  assert.match(r, /\r\nConnection: Upgrade\r\n/)
  assert.match(r, /\r\nUpgrade: SPDY\/3\.1\r\n/)
  assert.match(r, /\r\nX-Stream-Protocol-Version: portforward\.k8s\.io\r\n/)
  assert.ok(r.endsWith('\r\n\r\n'))
})
