/**
 * The audit trail through the real gateway (dev cluster processes), with a file trail on
 * a small tmpfs this test mounts and a real HTTP collector behind the webhook sink:
 *
 * - close records carry the exact byte counts of known random payloads, both ways;
 *   session records carry the totals;
 * - the collector is down for a while, then back: nothing lost, order kept (it receives
 *   exactly the file trail's sequence);
 * - blocking-strict with a full file system: 503, no byte relayed, readiness false, and
 *   recovery once there is room again, with the refused streams recorded;
 * - SIGKILL of the gateway mid-transfer, then its restart: every open stream had its
 *   open record, and the restart writes a `gateway-restart` close for each;
 * - no token and no "Bearer" in any log line or audit record the test produced.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import type { ClientHttp2Session } from 'node:http2'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startTestCluster } from '../helpers/cluster.js'
import { parseForwarding, runCli } from '../helpers/cli.js'
import type { CliProcess } from '../helpers/cli.js'
import { connectGateway, h2Request } from '../helpers/h2.js'
import { dial, echoRoundTrip, eventually } from '../helpers/net.js'
import {
  metricValue,
  openRaw,
  receivedAtLeast,
  scrape,
  tokenFor,
  trailRecords,
  waitForRecords,
} from '../helpers/gateway.js'
import { Collector } from '../gateway/audit/helpers.js'
import type { DevCluster } from '../../src/dev/cluster.js'
import type { AuditRecord } from '../../src/protocol/audit-record.js'

let cluster: DevCluster & { cleanup(): Promise<void> }
let work: string
let tmpfs: string
let trail: string
let logFile: string
const collector = new Collector()
const collectorSecret = `collector-secret-${randomBytes(12).toString('hex')}`
/** Every token this file hands to the gateway: none may appear in a log or a record. */
const tokens: string[] = []
const clis: CliProcess[] = []
const sessions: ClientHttp2Session[] = []

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'pfgate-audit-e2e-'))
  tmpfs = join(work, 'tmpfs')
  mkdirSync(tmpfs)
  // A small file system to fill for real (root, as CI runs; fails loudly otherwise).
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2048k,mode=0700', 'tmpfs', tmpfs])
  trail = join(tmpfs, 'audit.log')
  logFile = join(work, 'components.log')
  writeFileSync(join(work, 'collector-token'), collectorSecret + '\n', { mode: 0o600 })
  await collector.start()
  cluster = await startTestCluster(
    {
      audit: {
        mode: 'blocking-strict',
        sinks: [
          { type: 'file', path: trail, fsync: 'always', maxSize: '256KiB', maxFiles: 20 },
          {
            type: 'webhook',
            url: collector.url,
            spoolDir: join(work, 'spool'),
            batchSize: 50,
            timeout: '1s',
            tokenFile: join(work, 'collector-token'),
          },
        ],
      },
    },
    { logFile, logLevel: 'info' },
  )
  tokens.push(cluster.token)
})

after(async () => {
  for (const c of clis) await c.stop()
  for (const s of sessions) s.destroy()
  await cluster?.cleanup()
  await collector.stop()
  try {
    execFileSync('umount', ['-l', tmpfs])
  } catch {
    // not mounted (before() failed early)
  }
  rmSync(work, { recursive: true, force: true })
})

async function session(): Promise<ClientHttp2Session> {
  const s = await connectGateway(cluster.gatewayUrl, cluster.dir)
  s.on('error', () => undefined)
  sessions.push(s)
  return s
}

async function readyz(): Promise<{ status: number; body: string }> {
  const s = await connectGateway(cluster.gatewayUrl, cluster.dir)
  try {
    return await h2Request(s, { ':method': 'GET', ':path': '/readyz' })
  } finally {
    s.close()
  }
}

function env(): NodeJS.ProcessEnv {
  return { KUBECONFIG: cluster.kubeconfig, HOME: cluster.dir }
}

/** Bytes the agent on node-a relayed toward its pods, read through the admin node proxy. */
async function agentBytesToPods(s: ClientHttp2Session): Promise<number> {
  const r = await h2Request(s, {
    ':method': 'GET',
    ':path': '/proxy/nodes/node-a/metrics',
    authorization: `Bearer ${cluster.token}`,
  })
  assert.equal(r.status, 200)
  return metricValue(r.body, 'pfgate_agent_bytes_total', { direction: 'gateway_to_pod' })
}

function byStream(records: AuditRecord[], streamId: string | undefined): AuditRecord[] {
  return records.filter((r) => r.streamId !== undefined && r.streamId === streamId)
}

describe('records and byte counts', () => {
  test('close records equal known random payloads, both ways (echo via the CLI, HTTP via a raw stream)', async (t) => {
    // 1. Through `pfgate port-forward`: N random bytes to the echo pod and back.
    const cli = runCli(['port-forward', 'echo', ':5000'], env())
    clis.push(cli)
    t.after(() => cli.stop())
    const [fwd] = parseForwarding(await cli.waitForLines(2))
    const n = 3 * 1024 * 1024 + 17
    const r = await echoRoundTrip(fwd?.port as number, n)
    assert.equal(r.receivedBytes, n)
    assert.equal(r.received, r.sent)
    const close = await waitForRecords(
      trail,
      (rs) =>
        rs.find((x) => x.type === 'stream.closed' && x.pod === 'echo' && x.bytesClientToPod === n),
      'the echo close',
    )
    assert.equal(close.bytesPodToClient, n)
    assert.equal(close.endedBy, 'client')
    assert.equal(close.protocol, 'native-h2')
    assert.match(close.userAgent ?? '', /^pfgate\//)
    const opened = byStream(await trailRecords(trail), close.streamId).filter(
      (x) => x.type === 'stream.opened',
    )
    assert.equal(opened.length, 1, 'one open record for the stream')
    t.diagnostic(
      `echo via CLI: ${n} bytes each way, close record ${close.bytesClientToPod}/${close.bytesPodToClient}`,
    )

    // 2. A raw native stream to the HTTP pod: different sizes each way, counted by us.
    const s = await session()
    const st = await openRaw(s, { node: 'node-b', pod: 'web', port: 8080 }, cluster.token)
    assert.equal(st.status, 200)
    const request = Buffer.from(
      `GET /${randomBytes(700).toString('hex')} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n`,
    )
    st.req.end(request)
    const how = await st.closed
    assert.equal(how.rstCode, 0)
    const response = st.received()
    assert.match(response.toString(), /^HTTP\/1\.1 200 OK/)
    const webClose = await waitForRecords(
      trail,
      (rs) => rs.find((x) => x.type === 'stream.closed' && x.streamId === st.streamId),
      'the web close',
    )
    assert.deepEqual(
      [webClose.bytesClientToPod, webClose.bytesPodToClient],
      [request.length, response.length],
    )
    assert.notEqual(request.length, response.length)
    // We half-closed right after the request: the client's EOF came first.
    assert.equal(webClose.endedBy, 'client')
    t.diagnostic(
      `http via raw stream: ${request.length} up, ${response.length} down, recorded exactly`,
    )

    // 3. The client session's records: opened once, closed with the totals of its streams.
    s.close()
    const sessionClose = await waitForRecords(
      trail,
      (rs) => rs.find((x) => x.type === 'session.closed' && x.sessionId === webClose.sessionId),
      'the session close',
    )
    assert.deepEqual(
      [sessionClose.bytesClientToPod, sessionClose.bytesPodToClient, sessionClose.endedBy],
      [request.length, response.length, 'client'],
    )
    const all = await trailRecords(trail)
    const sOpen = all.filter(
      (x) => x.type === 'session.opened' && x.sessionId === webClose.sessionId,
    )
    assert.equal(sOpen.length, 1)
    assert.equal(sOpen[0]?.user, 'dev')
    assert.deepEqual(sOpen[0]?.groups, [
      'pfgate:developers',
      'pfgate:admins',
      'system:authenticated',
    ])
  })

  test('denied and failed attempts are recorded with status, reason and a ref for 401', async () => {
    const s = await session()
    const forged = `${cluster.token.slice(0, -6)}AAAAAA`
    tokens.push(forged)
    const cases: [string | undefined, string, number, string, string][] = [
      [undefined, 'echo', 401, 'stream.denied', 'unauthenticated'],
      [forged, 'echo', 401, 'stream.denied', 'unauthenticated'],
      [cluster.token, 'nosuchpod', 404, 'stream.failed', 'pod-not-found'],
    ]
    for (const [token, pod, status, type, reason] of cases) {
      // Only this attempt's record (the previous case's looks the same but for its ref).
      const before = (await trailRecords(trail)).length
      const st = await openRaw(s, { node: 'node-a', pod, port: 5000 }, token)
      await st.closed
      assert.equal(st.status, status)
      const body = st.received().toString()
      const rec = await waitForRecords(
        trail,
        (rs) =>
          rs.slice(before).find((x) => x.type === type && x.reason === reason && x.pod === pod),
        `${type} ${reason}`,
      )
      assert.equal(rec.status, status)
      if (token === forged) {
        // The client's message has the ref; so do the record and the gateway log line.
        const ref = /ref ([0-9a-f]{8})/.exec(body)?.[1]
        assert.ok(ref !== undefined, body)
        assert.equal(rec.ref, ref)
        await eventually(
          () => readFileSync(logFile, 'utf8').includes(`"ref":"${ref}"`),
          5000,
          'the log line with the ref',
        )
        const line = readFileSync(logFile, 'utf8')
          .split('\n')
          .find((l) => l.includes(`"ref":"${ref}"`) && l.includes('authentication failed'))
        assert.match(line ?? '', /ERR_JWS_SIGNATURE_VERIFICATION_FAILED/)
        assert.doesNotMatch(body, /signature|JWS/i, 'the client is not told why')
      }
    }
  })
})

describe('webhook sink', () => {
  test('the collector is down for a while, then back: nothing lost, order kept', async (t) => {
    const ids = (rs: AuditRecord[]): string[] => rs.map((r) => r.id)
    // Up to now the collector has everything the file has.
    await eventually(
      async () => collector.records.length === (await trailRecords(trail)).length,
      10_000,
      'the collector to catch up',
    )
    await collector.stop()
    const s = await session()
    const payloads: number[] = []
    for (let i = 0; i < 6; i++) {
      const st = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token)
      assert.equal(st.status, 200, 'streams still open: the spool is durable')
      const data = randomBytes(1000 + i)
      payloads.push(data.length)
      st.req.end(data)
      await receivedAtLeast(st, data.length)
      await st.closed
    }
    const denied = await openRaw(
      s,
      { node: 'node-a', namespace: 'kube-system', pod: 'x', port: 1 },
      cluster.token,
    )
    await denied.closed
    assert.equal(denied.status, 403)
    assert.equal((await readyz()).status, 200, 'a spooling webhook is healthy')
    const whileDown = collector.records.length
    await new Promise((r) => setTimeout(r, 1500))
    const downFor = Date.now()
    await collector.start()
    const fileNow = await trailRecords(trail)
    await eventually(
      () => collector.records.length >= fileNow.length,
      20_000,
      'the spool to be delivered',
    )
    const deliveredAfter = Date.now() - downFor
    const got = ids(collector.records)
    assert.equal(new Set(got).size, got.length, 'no record delivered twice')
    assert.deepEqual(
      got.slice(0, fileNow.length),
      ids(fileNow),
      'the collector has the trail, in order',
    )
    const closes = collector.records.filter(
      (r) => r.type === 'stream.closed' && r.pod === 'echo' && r.sessionId !== undefined,
    )
    for (const size of payloads) assert.ok(closes.some((r) => r.bytesClientToPod === size))
    for (const req of collector.requests) {
      assert.equal(req.headers.authorization, `Bearer ${collectorSecret}`)
      assert.equal(req.headers['x-pfgate-audit-schema'], 'pfgate.audit/v2')
    }
    t.diagnostic(
      `webhook: ${fileNow.length - whileDown} records spooled while down, delivered in order ${deliveredAfter} ms after the collector came back`,
    )
  })
})

describe('blocking-strict: fail closed when the sink cannot write', () => {
  test('a full file system: 503, no byte relayed, readiness false; room again: recovers', async (t) => {
    const s = await session()
    assert.equal((await readyz()).status, 200)
    // Fill the file system (dd ends with ENOSPC).
    const filler = join(tmpfs, 'filler')
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { stdio: 'ignore' })
    } catch {
      // ENOSPC: exactly what we wanted
    }
    // The trail's last page may still hold a record or two: open until a write fails.
    let refused: Awaited<ReturnType<typeof openRaw>> | undefined
    let before = 0
    let attempts = 0
    for (; attempts < 20 && refused === undefined; attempts++) {
      before = await agentBytesToPods(s)
      const st = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token)
      // The client's first bytes go out with the request, before any answer.
      st.req.write('must-not-reach-the-pod')
      if (st.status === 200) {
        st.req.close()
        await st.closed
        await new Promise((r) => setTimeout(r, 200))
        continue
      }
      refused = st
    }
    assert.ok(refused !== undefined, 'a stream was refused once the file system was full')
    t.diagnostic(
      `refused on attempt ${attempts} (the ones before fit in the trail file's last page)`,
    )
    await refused.closed
    assert.equal(refused.status, 503)
    const body = JSON.parse(refused.received().toString()) as {
      message: string
      details: { causes: { reason: string }[] }
    }
    assert.equal(body.details.causes[0]?.reason, 'PFG_ERR_AUDIT_UNAVAILABLE')
    // The client learns no errno or file path, only a ref: the gateway logs that ref, and
    // the sink's failure with its details.
    assert.doesNotMatch(body.message, /ENOSPC|audit\.log|sink/)
    const m =
      /^the audit trail cannot record this stream; it is refused \(ref ([0-9a-f]{8})\)$/.exec(
        body.message,
      )
    assert.ok(m !== null, body.message)
    await eventually(
      () => {
        const lines = readFileSync(logFile, 'utf8').split('\n')
        return (
          lines.some((l) => l.includes(`"ref":"${m[1]}"`)) &&
          lines.some((l) => l.includes('audit sink failed') && l.includes('ENOSPC'))
        )
      },
      5000,
      'the log lines with the ref and with the details',
    )
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(await agentBytesToPods(s), before, 'the agent relayed no byte of it')
    const ready = await readyz()
    assert.equal(ready.status, 503)
    assert.match(ready.body, /audit sink unavailable/)
    assert.equal(
      metricValue(await scrape(cluster.metricsPort as number), 'pfgate_audit_healthy'),
      0,
    )
    // While failing, new streams are refused at once.
    const again = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token)
    await again.closed
    assert.equal(again.status, 503)
    assert.match(again.received().toString(), /it is refused \(ref [0-9a-f]{8}\)"/)

    // Room again: the sink's own retry finds it (no traffic needed), readiness comes back.
    rmSync(filler)
    const freed = Date.now()
    await eventually(async () => (await readyz()).status === 200, 10_000, 'readiness')
    t.diagnostic(`audit sink recovered ${Date.now() - freed} ms after space was freed`)
    const r = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token)
    assert.equal(r.status, 200)
    r.req.end('back')
    await receivedAtLeast(r, 4)
    await r.closed
    const failed = await waitForRecords(
      trail,
      (rs) => {
        const f = rs.filter((x) => x.type === 'stream.failed' && x.reason === 'audit-unavailable')
        return f.length >= 2 ? f : undefined
      },
      'the records of the refused streams',
    )
    for (const f of failed) {
      assert.equal(f.status, 503)
      assert.equal(f.error?.code, 'PFG_ERR_AUDIT_UNAVAILABLE')
    }
  })
})

describe('metrics', () => {
  test('the separate Prometheus listener has every family, consistent with what happened', async (t) => {
    const m = await scrape(cluster.metricsPort as number)
    const v = (name: string, labels: Record<string, string> = {}): number =>
      metricValue(m, name, labels)
    for (const family of [
      'pfgate_client_sessions',
      'pfgate_streams_active',
      'pfgate_agent_sessions',
      'pfgate_audit_queue_depth',
      'pfgate_audit_healthy',
      'pfgate_streams_opened_total',
      'pfgate_streams_closed_total',
      'pfgate_streams_rejected_total',
      'pfgate_bytes_total',
      'pfgate_stream_open_seconds',
      'pfgate_audit_failures_total',
      'pfgate_audit_sink_failures',
      'pfgate_limit_hits_total',
    ]) {
      assert.match(m, new RegExp(`^# TYPE ${family} `, 'm'), family)
    }
    // The echo of test 1 alone moved 3 MiB each way.
    assert.ok(v('pfgate_bytes_total', { direction: 'client_to_pod' }) >= 3 * 1024 * 1024)
    assert.ok(v('pfgate_bytes_total', { direction: 'pod_to_client' }) >= 3 * 1024 * 1024)
    const opened = v('pfgate_streams_opened_total', { protocol: 'native-h2' })
    // At least: the CLI's echo, the raw HTTP stream, six while the collector was down and
    // one after the disk had room again; the disk-full test opens a few more, as many as
    // the trail's last page holds records (longer records, fewer streams).
    assert.ok(opened >= 9)
    assert.equal(v('pfgate_stream_open_seconds_count', { protocol: 'native-h2' }), opened)
    assert.ok(v('pfgate_streams_rejected_total', { reason: 'unauthenticated', status: '401' }) >= 2)
    assert.ok(v('pfgate_streams_rejected_total', { reason: 'forbidden', status: '403' }) >= 1)
    assert.ok(
      v('pfgate_streams_rejected_total', { reason: 'audit-unavailable', status: '503' }) >= 2,
    )
    assert.ok(v('pfgate_audit_failures_total', { sink: 'all' }) >= 1)
    assert.ok(v('pfgate_audit_sink_failures') >= 1, 'the file sink failed while the disk was full')
    assert.equal(v('pfgate_audit_healthy'), 1)
    assert.ok(v('pfgate_agent_sessions') >= 2, 'node-a and node-b')
    t.diagnostic(
      `streams opened ${opened}, bytes up ${v('pfgate_bytes_total', { direction: 'client_to_pod' })}`,
    )
  })
})

describe('crash safety', () => {
  test('SIGKILL mid-transfer, restart: open records were there, the restart closes them', async (t) => {
    const cli = runCli(['port-forward', 'echo', ':5000'], env())
    clis.push(cli)
    t.after(() => cli.stop())
    const [fwd] = parseForwarding(await cli.waitForLines(2))
    const sockets: Socket[] = []
    const ended: Promise<string>[] = []
    let flowing = 0
    for (let i = 0; i < 2; i++) {
      const sock = await dial(fwd?.port as number)
      sockets.push(sock)
      sock.on('data', (c: Buffer) => (flowing += c.length))
      ended.push(
        new Promise((resolve) => {
          sock.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'))
          sock.once('close', () => resolve('close'))
        }),
      )
      const chunk = randomBytes(16 * 1024)
      const pump = setInterval(() => {
        if (!sock.destroyed) sock.write(chunk)
      }, 5)
      t.after(() => clearInterval(pump))
    }
    await eventually(() => flowing > 512 * 1024, 10_000, 'bytes flowing both ways')
    const live = await (async () => {
      const s = await session()
      const r = await h2Request(s, {
        ':method': 'GET',
        ':path': '/admin/v1/streams',
        authorization: `Bearer ${cluster.token}`,
      })
      return (
        JSON.parse(r.body) as {
          items: { id: string; sessionId: string; userAgent?: string; bytesClientToPod: number }[]
        }
      ).items
    })()
    const mine = live.filter((x) => x.bytesClientToPod > 0)
    assert.equal(mine.length, 2, JSON.stringify(live))
    const recordsBefore = await trailRecords(trail)
    const oldGateway = recordsBefore.find((r) => r.streamId === mine[0]?.id)?.gateway
    for (const st of mine) {
      assert.equal(
        byStream(recordsBefore, st.id).filter((r) => r.type === 'stream.opened').length,
        1,
        'the open record was durable before the bytes flowed',
      )
    }

    await cluster.kill('gateway', 'SIGKILL')
    const outcomes = await Promise.all(ended)
    for (const s of sockets) s.destroy()
    t.diagnostic(`local connections after the gateway died: ${outcomes.join(', ')}`)
    await eventually(
      async () => (await readyz().catch(() => ({ status: 0 }))).status === 200,
      15_000,
      'the restarted gateway',
    )

    const records = await trailRecords(trail)
    const restartedAt = records.findLastIndex((r) => r.type === 'gateway.started')
    const newGateway = records[restartedAt]?.gateway
    assert.notEqual(newGateway, oldGateway)
    for (const st of mine) {
      const closes = byStream(records, st.id).filter((r) => r.type === 'stream.closed')
      assert.equal(closes.length, 1, `one close for ${st.id}`)
      const c = closes[0]!
      assert.deepEqual(
        [c.endedBy, c.reason, c.gateway],
        ['gateway-restart', 'gateway-restart', oldGateway],
      )
      assert.equal(c.bytesClientToPod, undefined, 'bytes unknown after a crash: omitted')
      assert.equal(c.durationMs, undefined)
      assert.ok(
        records.indexOf(c) < restartedAt,
        'recovery is written before the new instance starts',
      )
      assert.deepEqual([c.pod, c.port, c.user], ['echo', 5000, 'dev'])
    }
    const sessionClose = records.find(
      (r) => r.type === 'session.closed' && r.sessionId === mine[0]?.sessionId,
    )
    assert.equal(sessionClose?.endedBy, 'gateway-restart')
    // Every stream the dead instance opened is closed now: no dangling open record.
    const openedByOld = records.filter(
      (r) => r.type === 'stream.opened' && r.gateway === oldGateway,
    )
    for (const o of openedByOld) {
      assert.ok(
        records.some(
          (r) =>
            (r.type === 'stream.closed' || r.type === 'stream.failed') &&
            r.gateway === oldGateway &&
            r.streamId === o.streamId,
        ),
        `stream ${o.streamId} has its close`,
      )
    }
  })
})

describe('secrets', () => {
  test('no token and no "Bearer" in any log line or audit record this test produced', async (t) => {
    // A credential where a careless client puts it: in the user agent.
    const s = await session()
    const st = await openRaw(s, { node: 'node-a', pod: 'echo', port: 5000 }, cluster.token, {
      'user-agent': `curl/8 Authorization: Bearer ${cluster.token}`,
    })
    assert.equal(st.status, 200)
    st.req.end('x')
    await st.closed
    const rec = await waitForRecords(
      trail,
      (rs) => rs.find((r) => r.type === 'stream.closed' && r.streamId === st.streamId),
      'the close',
    )
    assert.ok(rec.redacted?.includes('userAgent'), JSON.stringify(rec))
    tokens.push(await tokenFor(cluster, 'unused', []))

    const logs = readFileSync(logFile, 'utf8')
    const logLines = logs.split('\n').filter((l) => l !== '')
    assert.ok(logLines.length > 5, 'the components logged')
    const texts: [string, string][] = [['components log', logs]]
    for (const f of readdirSync(tmpfs).filter((n) => n.startsWith('audit.log'))) {
      texts.push([f, readFileSync(join(tmpfs, f), 'utf8')])
    }
    texts.push(['collector', JSON.stringify(collector.records)])
    const spool = join(work, 'spool')
    if (existsSync(spool)) {
      for (const f of readdirSync(spool))
        texts.push([`spool/${f}`, readFileSync(join(spool, f), 'utf8')])
    }
    let records = 0
    for (const [what, text] of texts) {
      for (const token of tokens) {
        assert.ok(!text.includes(token), `${what} holds a token`)
        // Not even its signature part.
        assert.ok(!text.includes(token.split('.')[2] as string), `${what} holds a token signature`)
      }
      assert.ok(!text.includes(collectorSecret), `${what} holds the collector's token`)
      assert.ok(!/bearer/i.test(text), `${what} says "Bearer"`)
      if (what !== 'components log') records += text.split('\n').filter((l) => l !== '').length
    }
    t.diagnostic(`secrets: ${logLines.length} log lines, ${records} audit lines checked`)
  })
})
