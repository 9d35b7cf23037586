/**
 * Hostile and broken peers at the transport level, through the real gateway (dev cluster
 * processes, real TLS and HTTP/2): clients that misbehave on purpose with `node:http2` and
 * raw sockets, and peers that vanish.
 *
 * - agent loss reaches a native client as RST_STREAM INTERNAL_ERROR (docs/protocol.md).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { ClientHttp2Session } from 'node:http2'
import { startTestCluster } from '../helpers/cluster.js'
import { connectGateway } from '../helpers/h2.js'
import { openRaw, receivedAtLeast, trailPath, waitForRecords } from '../helpers/gateway.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import { RST } from '../../src/protocol/reset-codes.js'

let cluster: DevCluster & { cleanup(): Promise<void> }
const sessions: ClientHttp2Session[] = []

before(async () => {
  cluster = await startTestCluster()
})

after(async () => {
  for (const s of sessions) s.destroy()
  await cluster?.cleanup()
})

async function session(): Promise<ClientHttp2Session> {
  const s = await connectGateway(cluster.gatewayUrl, cluster.dir)
  s.on('error', () => undefined)
  sessions.push(s)
  return s
}

describe('RST codes after 200', () => {
  test('the agent is lost mid-stream: the native client gets INTERNAL_ERROR, audited as an agent failure', async () => {
    const s = await session()
    const st = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token)
    assert.equal(st.status, 200)
    st.req.write('hello')
    await receivedAtLeast(st, 5)
    await cluster.kill('agent:node-a', 'SIGKILL')
    const how = await st.closed
    assert.equal(how.rstCode, RST.INTERNAL_ERROR, JSON.stringify(how))
    assert.equal(how.ended, false, 'a reset, never a clean end first')
    const rec = await waitForRecords(
      trailPath(cluster),
      (rs) => rs.find((r) => r.type === 'stream.closed' && r.streamId === st.streamId),
      'the stream.closed record',
    )
    assert.equal(rec.endedBy, 'error')
    assert.equal(rec.reason, 'agent-failed')
  })
})
