/**
 * The open record's durable write overlaps the agent dial (docs/performance.md, "Stream
 * open"): both are in flight at once, the open resolves only when both are in, and a dial
 * that fails after the record was written leaves a trail that says so (`stream.opened`,
 * then the refusal's `stream.failed` with the same stream id). The forward core on fakes
 * (harness.ts) with the real audit log and file sink (fsync always) behind a sink that
 * holds its writes until told.
 */
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { AuditLog } from '../../../src/gateway/audit/audit-log.js'
import { FileSink } from '../../../src/gateway/audit/file-sink.js'
import type { AuditSink } from '../../../src/gateway/audit/types.js'
import type { AuditRecord } from '../../../src/protocol/audit-record.js'
import { defer, readAll, tempDir } from '../audit/helpers.js'
import { FakeStream, clientEndpoint, harness, refusal, request, tick } from './harness.js'
import type { Harness } from './harness.js'
import type { AuditPort } from '../../../src/gateway/forward/forwarder.js'

/** A gate: a promise and the function that opens it. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void
  const promise = new Promise<void>((r) => (open = r))
  return { promise, open }
}

/** A file sink whose writes of a `stream.opened` wait for `hold` (when set) before they start. */
class HeldSink implements AuditSink {
  readonly name = 'held'
  /** The types of the records of each write that began. */
  readonly begun: string[][] = []
  hold: Promise<void> | undefined
  /** How many writes holding a `stream.opened` fail (EIO) before writes succeed again. */
  failOpened = 0
  readonly #file: FileSink
  constructor(file: FileSink) {
    this.#file = file
  }
  async write(records: readonly AuditRecord[]): Promise<void> {
    this.begun.push(records.map((r) => r.type))
    const opened = records.some((r) => r.type === 'stream.opened')
    if (this.hold !== undefined && opened) await this.hold
    if (opened && this.failOpened > 0) {
      this.failOpened--
      throw Object.assign(new Error('write EIO'), { code: 'EIO' })
    }
    await this.#file.write(records)
  }
  close(): Promise<void> {
    return this.#file.close()
  }
}

async function setup(
  t: TestContext,
  options: {
    mode?: 'blocking-strict' | 'blocking'
    retry?: { initialMs: number; maxMs: number }
  } = {},
): Promise<{ h: Harness; sink: HeldSink; trail: string }> {
  const dir = await tempDir(t, 'pfgate-open-')
  const trail = join(dir, 'audit.log')
  const sink = new HeldSink(await FileSink.open({ path: trail, fsync: 'always' }))
  const log = new AuditLog({ sinks: [sink], lingerMs: 0, ...options })
  defer(t, () => log.close())
  // The audit port the gateway builds around its log (audit-factory.ts), minus the flood budget.
  const audit: AuditPort = {
    mode: log.mode,
    append: (r) => log.append(r),
    appendDenial: (r) => {
      log.append(r).catch(() => undefined)
      return true
    },
    healthy: () => log.healthy(),
  }
  const h = harness({ deps: { audit } })
  return { h, sink, trail }
}

/** Resolves to true when `p` settles within a few event-loop turns. */
async function settles(p: Promise<unknown>): Promise<boolean> {
  let done = false
  p.then(
    () => (done = true),
    () => (done = true),
  )
  await tick(20)
  return done
}

test('the open record is being written while the agent dial is still out; 200 waits for both', async (t) => {
  const { h, sink, trail } = await setup(t)
  const dial = gate()
  const write = gate()
  h.agent.gate = dial.promise
  sink.hold = write.promise
  const opening = h.forwarder.open(request(h))
  await tick(20)
  // Both in flight: the agent was asked and the stream.opened write began.
  assert.ok(
    h.trace.some((l) => l.startsWith('agent.open')),
    'the dial started',
  )
  assert.ok(
    sink.begun.some((b) => b.includes('stream.opened')),
    'the open record write began before the agent answered',
  )
  // The agent answers first: still no 200 while the record is not durable.
  dial.open()
  assert.equal(await settles(opening), false, 'no 200 before the open record is written')
  write.open()
  const o = await opening
  const { records } = await readAll(trail)
  const open = records.find((r) => r.type === 'stream.opened')
  assert.equal(open?.streamId, o.streamId, 'the open record is durable when open() resolves')
  o.start(clientEndpoint(new FakeStream(), []))
  assert.equal(h.forwarder.streams().length, 1)
})

test('the record written first, the agent last: 200 waits for the agent', async (t) => {
  const { h, trail } = await setup(t)
  const dial = gate()
  h.agent.gate = dial.promise
  const opening = h.forwarder.open(request(h))
  await tick(20)
  const { records } = await readAll(trail)
  assert.ok(
    records.some((r) => r.type === 'stream.opened'),
    'the open record is in the file while the agent has not answered',
  )
  assert.equal(await settles(opening), false, 'no 200 before the agent answered')
  dial.open()
  const o = await opening
  assert.equal(h.upstreams.length, 1)
  assert.equal(o.upstream, h.upstreams[0])
})

test('a dial that fails after the open record is written: stream.opened, then stream.failed with its id', async (t) => {
  const { h, trail } = await setup(t)
  h.agent.behaviour = 'refused'
  const err = await refusal(h.forwarder.open(request(h)))
  assert.equal(err.code, 'PFG_ERR_AGENT_CONNECT_REFUSED')
  assert.equal(err.statusCode, 502)
  let records: AuditRecord[] = []
  for (let i = 0; i < 100; i++) {
    records = (await readAll(trail)).records.filter((r) => r.type.startsWith('stream.'))
    if (records.length >= 2) break
    await tick(10)
  }
  assert.deepEqual(
    records.map((r) => [r.type, r.streamId]),
    [
      ['stream.opened', 's-01234567-1'],
      ['stream.failed', 's-01234567-1'],
    ],
  )
  const failed = records[1]!
  assert.equal(failed.reason, 'connect-refused')
  assert.equal(failed.status, 502)
  assert.equal(failed.error?.code, 'PFG_ERR_AGENT_CONNECT_REFUSED')
  assert.equal(failed.podUid, 'uid-echo')
  // Nothing is live and nothing is reserved: the next open gets its turn.
  assert.equal(h.forwarder.streams().length, 0)
})

test('a client that leaves while the open record is being written: one stream.opened, one stream.failed', async (t) => {
  const { h, sink, trail } = await setup(t)
  h.agent.behaviour = 'hang'
  const write = gate()
  sink.hold = write.promise
  const ac = new AbortController()
  const opening = refusal(h.forwarder.open({ ...request(h), signal: ac.signal }))
  await tick(20)
  ac.abort()
  // The refusal waits for the open record's outcome (it decides how the refusal is recorded).
  assert.equal(await settles(opening), false)
  write.open()
  const err = await opening
  assert.equal(err.code, 'PFG_ERR_RELAY_STREAM_RESET')
  let records: AuditRecord[] = []
  for (let i = 0; i < 100; i++) {
    records = (await readAll(trail)).records.filter((r) => r.type.startsWith('stream.'))
    if (records.length >= 2) break
    await tick(10)
  }
  assert.deepEqual(
    records.map((r) => [r.type, r.streamId, r.reason]),
    [
      ['stream.opened', 's-01234567-1', undefined],
      ['stream.failed', 's-01234567-1', 'client-gone'],
    ],
  )
})

test('blocking-strict, the dial refused and the open record failing too: the dial’s 502, and each record closed once', async (t) => {
  const { h, sink, trail } = await setup(t, { retry: { initialMs: 10, maxMs: 20 } })
  h.agent.behaviour = 'refused'
  sink.failOpened = 1
  const err = await refusal(h.forwarder.open(request(h)))
  // The dial refuses before the open record does (the documented order).
  assert.equal(err.code, 'PFG_ERR_AGENT_CONNECT_REFUSED')
  let records: AuditRecord[] = []
  for (let i = 0; i < 200; i++) {
    records = (await readAll(trail)).records.filter((r) => r.type.startsWith('stream.'))
    if (records.length >= 3) break
    await tick(10)
  }
  // The log retried the open record and closed it itself (audit-unavailable); the dial's
  // refusal carries no stream id, so the stream has exactly one close.
  const byId = records.filter((r) => r.streamId === 's-01234567-1')
  assert.deepEqual(
    byId.map((r) => [r.type, r.reason]),
    [
      ['stream.opened', undefined],
      ['stream.failed', 'audit-unavailable'],
    ],
  )
  const refused = records.filter((r) => r.streamId === undefined)
  assert.deepEqual(
    refused.map((r) => [r.type, r.reason, r.status]),
    [['stream.failed', 'connect-refused', 502]],
  )
})

test('blocking mode, the dial refused while the sink fails: the refusal still closes the queued open record', async (t) => {
  const { h, sink, trail } = await setup(t, {
    mode: 'blocking',
    retry: { initialMs: 10, maxMs: 20 },
  })
  h.agent.behaviour = 'refused'
  sink.failOpened = 1
  const err = await refusal(h.forwarder.open(request(h)))
  assert.equal(err.code, 'PFG_ERR_AGENT_CONNECT_REFUSED')
  let records: AuditRecord[] = []
  for (let i = 0; i < 200; i++) {
    records = (await readAll(trail)).records.filter((r) => r.type.startsWith('stream.'))
    if (records.length >= 2) break
    await tick(10)
  }
  assert.deepEqual(
    records.map((r) => [r.type, r.streamId, r.reason]),
    [
      ['stream.opened', 's-01234567-1', undefined],
      ['stream.failed', 's-01234567-1', 'connect-refused'],
    ],
  )
})

test('a UDP flow whose dial fails after its open record: the same pair, both with transport udp', async (t) => {
  const { h, trail } = await setup(t)
  h.agent.behaviour = 'refused'
  const err = await refusal(h.forwarder.open({ ...request(h), transport: 'udp' }))
  assert.equal(err.statusCode, 502)
  let records: AuditRecord[] = []
  for (let i = 0; i < 100; i++) {
    records = (await readAll(trail)).records.filter((r) => r.type.startsWith('stream.'))
    if (records.length >= 2) break
    await tick(10)
  }
  assert.deepEqual(
    records.map((r) => [r.type, r.streamId, r.transport]),
    [
      ['stream.opened', 's-01234567-1', 'udp'],
      ['stream.failed', 's-01234567-1', 'udp'],
    ],
  )
})
