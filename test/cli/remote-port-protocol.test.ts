/**
 * Which remote ports a `/udp` (or TCP) forward may use, from the pod's declared container
 * ports (docs/udp.md, "Which ports may be UDP"): refused only when the pod declares that
 * port with the other protocol only; named ports must be declared with the spec's protocol.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { resolveRemotePort } from '../../src/cli/port-forward/target.js'
import { parsePortSpec } from '../../src/protocol/port-spec.js'

const pod = {
  spec: {
    containers: [
      {
        ports: [
          { name: 'web', containerPort: 8080 },
          { name: 'dns', containerPort: 53, protocol: 'UDP' },
          { name: 'dns-tcp', containerPort: 53, protocol: 'TCP' },
          { name: 'syslog', containerPort: 514, protocol: 'UDP' },
        ],
      },
    ],
  },
}
const resolve = (raw: string, p: object = pod): number =>
  resolveRemotePort(parsePortSpec(raw), p, 'mixed')

test('numbered ports: refused only when declared with the other protocol only', () => {
  assert.equal(resolve('53/udp'), 53) // declared both ways
  assert.equal(resolve('53'), 53)
  assert.equal(resolve('514/udp'), 514)
  assert.throws(() => resolve('514'), /UDP protocol is not supported for 514/)
  assert.throws(() => resolve('8080/udp'), /declares port 8080 as TCP only, not UDP/)
  assert.equal(resolve('9999/udp'), 9999) // not declared: allowed, as for TCP
  assert.equal(resolve('8080/udp', {}), 8080) // a pod that declares no ports at all
})

test('named ports resolve with their protocol', () => {
  assert.equal(resolve('5353:dns/udp'), 53)
  assert.equal(resolve('5353:dns-tcp'), 53)
  assert.throws(() => resolve('5353:dns'), /declares its port 'dns' as UDP, not TCP/)
  assert.throws(() => resolve('8888:web/udp'), /declares its port 'web' as TCP, not UDP/)
  assert.throws(() => resolve('1:nope/udp'), /does not have a named port 'nope'/)
})
