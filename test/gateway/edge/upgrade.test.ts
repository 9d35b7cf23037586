/**
 * The pure parts of the upgrade listener: which paths are port-forward targets and
 * the browser's bearer-token subprotocol. The listener itself is tested against a real
 * gateway (test/e2e/kube-protocols.test.ts).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  BEARER_SUBPROTOCOL_PREFIX,
  bearerFromSubprotocols,
  parsePortForwardPath,
} from '../../../src/gateway/edge/upgrade.js'
import { isAppError } from '../../../src/shared/errors.js'

test('port-forward paths and their targets', () => {
  const cases: [string, unknown][] = [
    ['/api/v1/namespaces/default/pods/echo/portforward', { namespace: 'default', pod: 'echo' }],
    [
      '/api/v1/nodes/node-a/proxy/portForward/default/echo',
      { node: 'node-a', namespace: 'default', pod: 'echo' },
    ],
    [
      '/proxy/nodes/node-a/portForward/default/echo',
      { node: 'node-a', namespace: 'default', pod: 'echo' },
    ],
    [
      '/api/v1/namespaces/default/pods/web%2Ev1/portforward',
      { namespace: 'default', pod: 'web.v1' },
    ],
    ['/api/v1/namespaces/default/pods/echo/exec', undefined],
    ['/api/v1/namespaces/default/pods/echo/portforward/', undefined],
    ['/api/v1/nodes/node-a/proxy/portForward/default/echo/uid', undefined],
    ['/portForward/default/echo', undefined],
    ['/', undefined],
  ]
  for (const [path, want] of cases) assert.deepEqual(parsePortForwardPath(path), want, path)
  const bad = parsePortForwardPath('/api/v1/namespaces/%zz/pods/echo/portforward')
  assert.ok(isAppError(bad) && bad.code === 'PFG_ERR_ROUTE_BAD_NAME')
})

test('the bearer-token subprotocol becomes an Authorization value; nothing else does', () => {
  const token = 'eyJhbGciOiJFUzI1NiJ9.e30.sig'
  const p = BEARER_SUBPROTOCOL_PREFIX + Buffer.from(token).toString('base64url')
  assert.equal(bearerFromSubprotocols(`v4.channel.k8s.io, ${p}`), `Bearer ${token}`)
  assert.equal(bearerFromSubprotocols(['v4.channel.k8s.io', p]), `Bearer ${token}`)
  assert.equal(bearerFromSubprotocols('v4.channel.k8s.io'), undefined)
  assert.equal(bearerFromSubprotocols(BEARER_SUBPROTOCOL_PREFIX), undefined)
  assert.equal(bearerFromSubprotocols(undefined), undefined)
})
