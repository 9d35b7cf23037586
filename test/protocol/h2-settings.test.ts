/**
 * Regression: with pfgate's HTTP/2 settings, many streams pushing bulk data both ways
 * at once over one TLS connection must not deadlock. Node's HTTP/2 session stops
 * reading its socket while one of its own writes is in progress; with a connection
 * window far above the kernel's socket buffers both ends ended up writing to a peer
 * that had stopped reading (found with kubectl: 50 concurrent connections through one
 * agent session hung until the agent PING timeout, 60 s later).
 */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect, createSecureServer } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  CONNECTION_WINDOW,
  STREAM_WINDOW,
  h2SessionOptions,
  widenConnectionWindow,
} from '../../src/protocol/h2-settings.js'
import { makeSelfSignedCert } from '../helpers/kube-protocol-server.js'

let dir: string | undefined
after(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

test('the connection window stays within what socket buffers hold', () => {
  assert.ok(CONNECTION_WINDOW <= 4 * 1024 * 1024, 'larger windows can deadlock (see the module)')
  assert.ok(CONNECTION_WINDOW >= STREAM_WINDOW, 'one stream still gets its whole window')
})

test('50 streams echoing 1 MiB each at once over one TLS connection finish', async (t) => {
  dir = await mkdtemp(join(tmpdir(), 'pfgate-h2-'))
  const { key, cert } = await makeSelfSignedCert(dir)
  const server = createSecureServer({ key, cert, ...h2SessionOptions() })
  const sessions = new Set<{ destroy(): void }>()
  server.on('session', (s) => {
    sessions.add(s)
    widenConnectionWindow(s)
  })
  server.on('stream', (stream) => {
    stream.on('error', () => {})
    stream.respond({ ':status': 200 })
    stream.pipe(stream)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  const client = connect(`https://127.0.0.1:${port}`, { ca: cert, ...h2SessionOptions() })
  t.after(() => {
    client.destroy()
    for (const s of sessions) s.destroy()
    server.close()
  })
  await once(client, 'connect')
  widenConnectionWindow(client)
  const size = 1024 * 1024
  let timer: NodeJS.Timeout | undefined
  const echoes = Promise.all(
    Array.from(
      { length: 50 },
      () =>
        new Promise<number>((resolve, reject) => {
          const s = client.request({ ':method': 'POST', ':path': '/' })
          let n = 0
          s.on('data', (d: Buffer) => (n += d.length))
          s.on('end', () => resolve(n))
          s.on('error', reject)
          s.end(randomBytes(size))
        }),
    ),
  )
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('deadlock: the echoes stalled for 15 s')), 15_000)
  })
  try {
    const got = await Promise.race([echoes, deadline])
    assert.deepEqual(new Set(got), new Set([size]))
  } finally {
    clearTimeout(timer)
  }
})
