/**
 * Admins through the real CLI and gateway (dev cluster processes): `pfgate admin` lists
 * live sessions and streams with their current byte counts and ends one stream or a
 * whole client session (the port-forwarding CLI's local connections see a reset; the
 * audit trail says `admin` and who); non-admins are refused. `pfgate audit query` and
 * `pfgate audit follow` read the file trail, rotated files included.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readdirSync } from 'node:fs'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import { startTestCluster } from '../helpers/cluster.js'
import { parseForwarding, runCli, runCliToEnd } from '../helpers/cli.js'
import type { CliProcess } from '../helpers/cli.js'
import { dial, echoRoundTrip, eventually } from '../helpers/net.js'
import { settledTrail, tokenFor, trailPath, waitForRecords } from '../helpers/gateway.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import type { AuditRecord } from '../../src/protocol/audit-record.js'

let cluster: DevCluster & { cleanup(): Promise<void> }
let env: NodeJS.ProcessEnv
let developerToken: string
let forwarder: CliProcess
let localPort: number
const sockets: Socket[] = []

interface StreamItem {
  id: string
  sessionId: string
  user: string
  pod: string
  port: number
  bytesClientToPod: number
  bytesPodToClient: number
}

before(async () => {
  cluster = await startTestCluster({
    // Small files: the trail rotates during this test, and `pfgate audit` must read it all.
    audit: {
      sinks: [
        { type: 'file', path: 'audit/audit.log', fsync: 'always', maxSize: '8KiB', maxFiles: 200 },
      ],
    },
  })
  env = { KUBECONFIG: cluster.kubeconfig, HOME: cluster.dir }
  developerToken = await tokenFor(cluster, 'devon', ['pfgate:developers'])
  forwarder = runCli(['port-forward', '--quiet', 'echo', ':5000'], env)
  const [fwd] = parseForwarding(await forwarder.waitForLines(2))
  localPort = fwd?.port as number
})

after(async () => {
  for (const s of sockets) s.destroy()
  await forwarder?.stop()
  await cluster?.cleanup()
})

/** A local connection through the CLI that echoes; resolves with how it ended, later. */
async function connection(): Promise<{
  sock: Socket
  received: () => number
  ended: Promise<string>
  send: (n: number) => Promise<void>
}> {
  const sock = await dial(localPort)
  sockets.push(sock)
  let received = 0
  sock.on('data', (c: Buffer) => (received += c.length))
  const ended = new Promise<string>((resolve) => {
    sock.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'))
    sock.once('end', () => resolve('end'))
    sock.once('close', () => resolve('close'))
  })
  let sent = 0
  return {
    sock,
    received: () => received,
    ended,
    async send(n) {
      sock.write(randomBytes(n))
      sent += n
      await eventually(() => received >= sent, 10_000, `${sent} bytes echoed`)
    },
  }
}

async function admin(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCliToEnd(['admin', ...args], env)
}

async function liveStreams(): Promise<StreamItem[]> {
  const r = await admin('streams', '-o', 'json')
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout) as StreamItem[]
}

describe('pfgate admin', () => {
  test('streams and sessions: live, with their current byte counts (JSON and table)', async () => {
    const c = await connection()
    await c.send(100_000)
    let mine: StreamItem | undefined
    await eventually(
      async () => {
        mine = (await liveStreams()).find((s) => s.bytesClientToPod === 100_000)
        return mine !== undefined
      },
      5000,
      'the stream in the listing',
    )
    assert.deepEqual(
      [mine?.user, mine?.pod, mine?.port, mine?.bytesPodToClient],
      ['dev', 'echo', 5000, 100_000],
    )
    await c.send(23_456)
    const again = (await liveStreams()).find((s) => s.id === mine?.id)
    assert.deepEqual([again?.bytesClientToPod, again?.bytesPodToClient], [123_456, 123_456])

    const table = await admin('streams')
    assert.equal(table.code, 0)
    assert.match(
      table.stdout,
      /^ID +SESSION +USER +TARGET +NODE +PROTOCOL +SINCE +BYTES-UP +BYTES-DOWN +GATEWAY$/m,
    )
    assert.match(
      table.stdout,
      new RegExp(
        `^${mine?.id} .* default/echo:5000 +node-a +native-h2 .* 123456 +123456 +[0-9a-f]{8}$`,
        'm',
      ),
    )
    const sessions = await admin('sessions', '-o', 'json')
    const items = JSON.parse(sessions.stdout) as {
      id: string
      user: string
      streams: number
      bytesClientToPod: number
    }[]
    const session = items.find((s) => s.id === mine?.sessionId)
    assert.equal(session?.user, 'dev')
    assert.ok((session?.streams ?? 0) >= 1)
    assert.ok((session?.bytesClientToPod ?? 0) >= 123_456)
    c.sock.end()
    await c.ended
  })

  test('kill one stream: that local connection is reset, the others go on; the record says admin and who', async () => {
    const victim = await connection()
    const bystander = await connection()
    await victim.send(7_000)
    await bystander.send(9_000)
    const streams = await liveStreams()
    const target = streams.find((s) => s.bytesClientToPod === 7_000)
    assert.ok(target !== undefined, JSON.stringify(streams))
    const r = await admin('kill', 'stream', target.id)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, `stream ${target.id} ended\n`)
    assert.equal(await victim.ended, 'ECONNRESET', 'the local client sees a reset')
    await forwarder.waitForStderr(/ended abnormally: stream reset \(CANCEL\)/)
    await bystander.send(1_000)
    const rec = await waitForRecords(
      trailPath(cluster),
      (rs) => rs.find((x) => x.type === 'stream.closed' && x.streamId === target.id),
      'the close',
    )
    assert.deepEqual(
      [rec.endedBy, rec.endedByUser, rec.reason, rec.bytesClientToPod, rec.bytesPodToClient],
      ['admin', 'dev', 'admin:stream', 7_000, 7_000],
    )
    bystander.sock.end()
    await bystander.ended
    const gone = await admin('kill', 'stream', target.id)
    assert.equal(gone.code, 1)
    assert.match(gone.stderr, /^Error from server \(NotFound\): no live stream/)
  })

  test('kill a whole client session: every local connection is reset; the CLI reconnects', async () => {
    const a = await connection()
    const b = await connection()
    await a.send(1_111)
    await b.send(2_222)
    const streams = (await liveStreams()).filter(
      (s) => s.bytesClientToPod === 1_111 || s.bytesClientToPod === 2_222,
    )
    assert.equal(streams.length, 2)
    const sessionId = streams[0]?.sessionId as string
    assert.equal(streams[1]?.sessionId, sessionId, 'one CLI, one gateway connection')
    const r = await admin('kill', 'session', sessionId)
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(await Promise.all([a.ended, b.ended]), ['ECONNRESET', 'ECONNRESET'])
    const records = await waitForRecords(
      trailPath(cluster),
      (rs) => {
        const closes = rs.filter(
          (x) => x.type === 'stream.closed' && streams.some((s) => s.id === x.streamId),
        )
        const session = rs.find((x) => x.type === 'session.closed' && x.sessionId === sessionId)
        return closes.length === 2 && session !== undefined ? { closes, session } : undefined
      },
      'the closes',
    )
    for (const c of records.closes) {
      assert.deepEqual([c.endedBy, c.endedByUser, c.reason], ['admin', 'dev', 'admin:session'])
    }
    assert.deepEqual(
      [records.session.endedBy, records.session.endedByUser, records.session.reason],
      ['admin', 'dev', 'admin:session'],
    )
    // The port-forward keeps serving on a new gateway connection.
    const after = await echoRoundTrip(localPort, 4096)
    assert.equal(after.received, after.sent)
  })

  test('non-admins are refused (403), without a token 401', async () => {
    for (const args of [
      ['streams'],
      ['sessions'],
      ['kill', 'stream', 's-x'],
      ['kill', 'session', 'c-x'],
    ]) {
      const r = await admin(...args, '--token', developerToken)
      assert.equal(r.code, 1, args.join(' '))
      assert.match(r.stderr, /^Error from server \(Forbidden\): user "devon" is not an admin/)
    }
    const none = await runCliToEnd(['admin', 'streams', '--token', 'garbage'], env)
    assert.equal(none.code, 1)
    assert.match(none.stderr, /Unauthorized/)
  })
})

describe('pfgate audit', () => {
  test('query reads every file of the rotated trail; filters and output formats', async () => {
    // Enough traffic to rotate the 8 KiB files several times.
    for (let i = 0; i < 25; i++) {
      const r = await echoRoundTrip(localPort, 1000 + i)
      assert.equal(r.received, r.sent)
    }
    const file = trailPath(cluster)
    const rotated = readdirSync(join(cluster.dir, 'audit')).filter((n) =>
      /^audit\.log\.\d+$/.test(n),
    )
    assert.ok(rotated.length >= 3, `rotated files: ${rotated.join(' ')}`)
    const all = await settledTrail(file)
    const q = await runCliToEnd(['audit', 'query', '--file', file, '-o', 'json'])
    assert.equal(q.code, 0, q.stderr)
    const lines = q.stdout.split('\n').filter((l) => l !== '')
    assert.deepEqual(
      lines.map((l) => (JSON.parse(l) as AuditRecord).id),
      all.map((r) => r.id),
      'every record, oldest first, across the rotated files',
    )
    // Filters: the admin-ended closes of user dev on echo:5000 in the last hour.
    const adm = await runCliToEnd([
      'audit',
      'query',
      '--file',
      file,
      '--user',
      'dev',
      '--pod',
      'echo',
      '--port',
      '5000',
      '-n',
      'default',
      '--outcome',
      'admin',
      '--since',
      '1h',
      '-o',
      'json',
    ])
    const admins = adm.stdout
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as AuditRecord)
    // One killed stream, and the two streams of the killed session (its session.closed
    // has no pod, so --pod leaves it out).
    assert.equal(admins.length, 3, adm.stdout)
    for (const r of admins) assert.deepEqual([r.type, r.endedBy], ['stream.closed', 'admin'])
    const none = await runCliToEnd(['audit', 'query', '--file', file, '--until', '1h'])
    assert.equal(none.code, 0)
    assert.match(none.stderr, /No matching records/)
    const table = await runCliToEnd(['audit', 'query', '--file', file, '--outcome', 'admin'])
    assert.match(table.stdout, /^TIME +TYPE +USER +TARGET +BYTES ↑\/↓ +DURATION +END\/REASON$/m)
    assert.match(table.stdout, /stream\.closed +dev +default\/echo:5000 .* admin/)
  })

  test('follow prints new records as they come, across rotation', async (t) => {
    const file = trailPath(cluster)
    const follow = runCli([
      'audit',
      'follow',
      '--file',
      file,
      '--type',
      'stream.closed',
      '-o',
      'json',
    ])
    t.after(() => follow.stop())
    await new Promise((r) => setTimeout(r, 500))
    const filesBefore = readdirSync(join(cluster.dir, 'audit')).length
    const sizes: number[] = []
    for (let i = 0; i < 15; i++) {
      sizes.push(2000 + i)
      const r = await echoRoundTrip(localPort, 2000 + i)
      assert.equal(r.received, r.sent)
    }
    assert.ok(
      readdirSync(join(cluster.dir, 'audit')).length > filesBefore,
      'the trail rotated meanwhile',
    )
    const lines = await follow.waitForLines(15, 10_000)
    const got = lines.map((l) => (JSON.parse(l) as AuditRecord).bytesClientToPod)
    assert.deepEqual(got, sizes, 'each close once, in order')
    assert.equal(await follow.stop(), 0)
  })
})
