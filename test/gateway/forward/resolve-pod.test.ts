/**
 * resolvePod: names → authorize → registry ready → look up, in that order, in the words of
 * the caller (a forward, or the API facade's GET of a pod).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { resolvePod } from '../../../src/gateway/forward/resolve-pod.js'
import type { ResolveDeps } from '../../../src/gateway/forward/resolve-pod.js'
import { appError, isAppError } from '../../../src/shared/errors.js'
import { ALICE, POD } from './harness.js'

function deps(
  opts: { ready?: boolean; allow?: boolean; ports?: number[]; unavailable?: boolean } = {},
) {
  const calls: string[] = []
  const d: ResolveDeps = {
    registry: {
      isReady: () => (calls.push('ready'), opts.ready ?? true),
      getPod: (ns, name) => (calls.push(`get ${ns}/${name}`), name === POD.name ? POD : undefined),
    },
    authorizer: {
      // Authorizer.mayForward's answer: the refused port, true (the pod), or undefined.
      mayForward: async (_id, ns, pod, ports) => {
        if (opts.unavailable === true) {
          calls.push(`access ${ns}/${pod}`)
          throw appError('PFG_ERR_AUTH_UNAVAILABLE', 'the API server did not answer')
        }
        if (ports.length === 0) {
          calls.push(`access ${ns}/${pod}`)
          return (opts.allow ?? true) ? undefined : true
        }
        for (const port of ports) {
          calls.push(`forward ${ns}/${pod}:${port}`)
          if (!(opts.allow ?? true) || (opts.ports !== undefined && !opts.ports.includes(port)))
            return port
        }
        return undefined
      },
    },
  }
  return { d, calls }
}

async function thrown(f: () => Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await f()
  } catch (err) {
    assert.ok(isAppError(err))
    return { code: err.code, message: err.message }
  }
  throw new Error('expected a throw')
}

test('the pod, after every port is authorized, once the registry is ready', async () => {
  const { d, calls } = deps()
  const q = { namespace: 'default', pod: 'echo', ports: [8080, 9090] }
  assert.equal(await resolvePod(d, ALICE, q), POD)
  assert.deepEqual(calls, [
    'forward default/echo:8080',
    'forward default/echo:9090',
    'ready',
    'get default/echo',
  ])
  const any = deps()
  assert.equal(await resolvePod(any.d, ALICE, { namespace: 'default', pod: 'echo' }, 'get'), POD)
  assert.deepEqual(any.calls, ['access default/echo', 'ready', 'get default/echo'])
})

test('refusals in order: names, authorization (before the registry: no existence leak), readiness, lookup', async () => {
  const bad = deps({ allow: false, ready: false })
  assert.equal(
    (await thrown(() => resolvePod(bad.d, ALICE, { namespace: 'Bad', pod: 'x' }))).code,
    'PFG_ERR_ROUTE_BAD_NAME',
  )
  assert.equal(
    (
      await thrown(() =>
        resolvePod(bad.d, ALICE, { namespace: 'default', pod: 'x', node: 'Bad_Node' }),
      )
    ).code,
    'PFG_ERR_ROUTE_BAD_NAME',
  )
  assert.deepEqual(bad.calls, [])
  assert.deepEqual(
    await thrown(() => resolvePod(bad.d, ALICE, { namespace: 'default', pod: 'nope' })),
    {
      code: 'PFG_ERR_AUTH_FORBIDDEN',
      message: 'user "alice" cannot forward to pod default/nope',
    },
  )
  assert.deepEqual(
    await thrown(() => resolvePod(bad.d, ALICE, { namespace: 'default', pod: 'nope' }, 'get')),
    {
      code: 'PFG_ERR_AUTH_FORBIDDEN',
      message:
        'pods "nope" is forbidden: user "alice" cannot get resource "pods" in namespace "default"',
    },
  )
  const onePort = deps({ ports: [8080] })
  assert.deepEqual(
    await thrown(() =>
      resolvePod(onePort.d, ALICE, { namespace: 'default', pod: 'echo', ports: [8080, 22] }),
    ),
    {
      code: 'PFG_ERR_AUTH_FORBIDDEN',
      message: 'user "alice" cannot forward to port 22 of pod default/echo',
    },
  )
  assert.ok(!onePort.calls.includes('ready'))
  const notReady = deps({ ready: false })
  assert.equal(
    (await thrown(() => resolvePod(notReady.d, ALICE, { namespace: 'default', pod: 'echo' }))).code,
    'PFG_ERR_ROUTE_NOT_READY',
  )
  assert.ok(!notReady.calls.some((c) => c.startsWith('get')))
  const missing = deps()
  assert.deepEqual(
    await thrown(() => resolvePod(missing.d, ALICE, { namespace: 'default', pod: 'nope' })),
    {
      code: 'PFG_ERR_ROUTE_POD_NOT_FOUND',
      message: 'pods "nope" not found in namespace "default"',
    },
  )
  assert.deepEqual(
    await thrown(() => resolvePod(missing.d, ALICE, { namespace: 'default', pod: 'nope' }, 'get')),
    {
      code: 'PFG_ERR_ROUTE_POD_NOT_FOUND',
      message: 'pods "nope" not found',
    },
  )
})

test('an authorizer that cannot answer (RBAC) refuses with 503 before the registry is asked', async () => {
  const down = deps({ unavailable: true })
  assert.equal(
    (await thrown(() => resolvePod(down.d, ALICE, { namespace: 'default', pod: 'echo' }))).code,
    'PFG_ERR_AUTH_UNAVAILABLE',
  )
  assert.deepEqual(down.calls, ['access default/echo'])
})
