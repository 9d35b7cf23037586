/**
 * Regression: aborting a socket whose write side was just ended. Node's
 * resetAndDestroy() then fails inside libuv (EINVAL: a shutdown is pending) and drops
 * the handle without closing it, so 'close' never comes and the process can never
 * exit (found as an agent that spun in Environment::CleanupHandles on SIGTERM).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, connect } from 'node:net'
import { socketEndpoint, rstCodeFor } from '../../src/shared/relay-endpoints.js'
import { RST } from '../../src/protocol/reset-codes.js'

test('aborting a socket right after end() still closes it', async () => {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined)
    s.on('end', () => s.end())
    s.resume()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as { port: number }).port
  const c = connect({ port, host: '127.0.0.1', allowHalfOpen: true })
  await new Promise((r) => c.once('connect', r))
  const errors: string[] = []
  c.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? '?'))
  // A ref'd timer: the verdict must not depend on what else keeps the loop alive.
  let timer: NodeJS.Timeout | undefined
  const closed = new Promise<boolean>((resolve) => {
    c.once('close', () => resolve(true))
    timer = setTimeout(() => resolve(false), 2000)
  })
  c.end()
  // Inside the window where libuv's shutdown request is pending.
  process.nextTick(() => process.nextTick(() => socketEndpoint(c).abort('peer-reset')))
  const ok = await closed
  clearTimeout(timer)
  // Not awaited: with the bug, the leaked socket would keep server.close() waiting.
  server.close()
  server.unref()
  assert.equal(ok, true, 'the socket closed')
  assert.deepEqual(errors, [])
})

test('RST codes for each abort reason', () => {
  assert.equal(rstCodeFor('peer-reset', RST.CONNECT_ERROR, RST.INTERNAL_ERROR), RST.CONNECT_ERROR)
  assert.equal(rstCodeFor('peer-reset', RST.NO_ERROR, RST.INTERNAL_ERROR), RST.INTERNAL_ERROR)
  assert.equal(rstCodeFor('peer-reset', RST.NO_ERROR, RST.CANCEL), RST.CANCEL)
  assert.equal(rstCodeFor('peer-reset', undefined, RST.INTERNAL_ERROR), RST.INTERNAL_ERROR)
  assert.equal(rstCodeFor('admin', undefined, RST.INTERNAL_ERROR), RST.CANCEL)
  assert.equal(rstCodeFor('gateway', undefined, RST.INTERNAL_ERROR), RST.CANCEL)
  assert.equal(rstCodeFor('limit', undefined, RST.INTERNAL_ERROR), RST.ENHANCE_YOUR_CALM)
  assert.equal(rstCodeFor('internal', undefined, RST.CANCEL), RST.INTERNAL_ERROR)
  // Toward a native client only the pod's reset passes; a lost agent is INTERNAL_ERROR.
  const toClient = [RST.CONNECT_ERROR]
  assert.equal(
    rstCodeFor('peer-reset', RST.CONNECT_ERROR, RST.INTERNAL_ERROR, toClient),
    RST.CONNECT_ERROR,
  )
  assert.equal(
    rstCodeFor('peer-reset', RST.CANCEL, RST.INTERNAL_ERROR, toClient),
    RST.INTERNAL_ERROR,
  )
  assert.equal(rstCodeFor('admin', undefined, RST.INTERNAL_ERROR, toClient), RST.CANCEL)
})
