/**
 * bin/healthcheck.js, the probe docker-compose.yml runs in each container: against real
 * listeners, the real dev gateway's /readyz with its CA, and the ways a probe must fail.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createCa, issueCert } from '../../src/dev/pki.js'
import { startTestCluster } from '../helpers/cluster.js'

const PROBE = fileURLToPath(new URL('../../../bin/healthcheck.js', import.meta.url))

async function probe(...args: string[]): Promise<{ code: number | null; stderr: string }> {
  const p = spawn(process.execPath, [PROBE, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const [code] = (await once(p, 'exit')) as [number | null]
  return { code, stderr }
}

test('tcp: 0 while the port accepts, 1 once it is closed', async () => {
  const server = createServer((s) => s.destroy())
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = String((server.address() as AddressInfo).port)
  assert.equal((await probe('tcp', port)).code, 0)
  server.close()
  await once(server, 'close')
  const down = await probe('tcp', port)
  assert.equal(down.code, 1)
  assert.match(down.stderr, /unhealthy: 127\.0\.0\.1:\d+: connect ECONNREFUSED/)
})

test('https: the dev gateway /readyz with its CA is healthy; another CA or a non-200 is not', async (t) => {
  const cluster = await startTestCluster()
  t.after(() => cluster.cleanup())
  const ca = join(cluster.dir, 'ca.crt')
  const readyz = `https://localhost:${cluster.gatewayPort}/readyz`
  assert.equal((await probe('https', readyz, ca)).code, 0)

  const other = await createCa('not the dev CA')
  const otherCa = join(cluster.dir, 'other-ca.crt')
  writeFileSync(otherCa, other.cert)
  const untrusted = await probe('https', readyz, otherCa)
  assert.equal(untrusted.code, 1)
  assert.match(untrusted.stderr, /unhealthy: .*certificate/)

  // A server that answers, but not 200 (a gateway that is not ready says 503).
  const leaf = await issueCert(other, { commonName: 'localhost', dnsNames: ['localhost'] })
  const server = createHttpsServer({ cert: leaf.cert, key: leaf.key }, (_req, res) =>
    res.writeHead(503).end('not ready'),
  )
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.close())
  const port = (server.address() as AddressInfo).port
  const notReady = await probe('https', `https://localhost:${port}/readyz`, otherCa)
  assert.equal(notReady.code, 1)
  assert.match(notReady.stderr, /HTTP 503/)

  assert.equal((await probe('https', readyz, join(cluster.dir, 'missing.crt'))).code, 1)
})

test('bad arguments exit 2', async () => {
  for (const args of [
    [],
    ['tcp'],
    ['tcp', 'http'],
    ['https', 'https://localhost/'],
    ['udp', '53'],
  ]) {
    assert.equal((await probe(...args)).code, 2, args.join(' '))
  }
})
