import { test } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { AuditLog } from '../../../src/gateway/audit/audit-log.js'
import { WebhookSink } from '../../../src/gateway/audit/webhook-sink.js'
import { isAppError } from '../../../src/shared/errors.js'
import type { AuditRecord } from '../../../src/protocol/audit-record.js'
import { captureLogger, Collector, defer, rec, tempDir, waitFor } from './helpers.js'

const TOKEN = 'collector-secret-token-0123456789'

async function startCollector(t: TestContext): Promise<Collector> {
  const c = new Collector()
  await c.start()
  defer(t, () => c.stop())
  return c
}

function batchOf(prefix: string, n: number): AuditRecord[] {
  return Array.from({ length: n }, (_, i) => rec('stream.closed', { streamId: `${prefix}${i}` }))
}

test('delivers batches as a JSON array with the schema header and the bearer token', async (t) => {
  const collector = await startCollector(t)
  const dir = await tempDir(t)
  const sink = await WebhookSink.open({
    url: collector.url,
    bearerToken: TOKEN,
    spoolDir: join(dir, 'spool'),
  })
  defer(t, () => sink.close())
  const records = batchOf('a', 3)
  await sink.write(records)
  assert.equal(collector.requests.length, 1)
  const req = collector.requests[0]!
  assert.equal(req.headers['content-type'], 'application/json')
  assert.equal(req.headers['x-pfgate-audit-schema'], 'pfgate.audit/v2')
  assert.equal(req.headers.authorization, `Bearer ${TOKEN}`)
  assert.deepEqual(req.records, records)
  assert.equal(sink.mode, 'direct')
  assert.equal(sink.stats.delivered, 3)
  assert.deepEqual(await readdir(join(dir, 'spool')), [], 'nothing spooled')
})

test('collector down for a while, then back: nothing lost, order kept, no duplicates', async (t) => {
  const collector = await startCollector(t)
  const dir = await tempDir(t)
  const spoolDir = join(dir, 'spool')
  const { logger, text } = captureLogger()
  const sink = await WebhookSink.open({
    url: collector.url,
    bearerToken: TOKEN,
    spoolDir,
    timeoutMs: 1000,
    maxBatchRecords: 7,
    spoolSegmentBytes: 2048,
    retry: { initialMs: 20, maxMs: 100 },
    logger,
  })
  defer(t, () => sink.close())
  const log = new AuditLog({ sinks: [sink] })
  defer(t, () => log.close())
  const sent: string[] = []
  const append = async (id: string): Promise<void> => {
    await log.append(rec('stream.closed', { streamId: id }))
    sent.push(id)
  }
  for (let i = 0; i < 10; i++) await append(`up${i}`)
  assert.equal(sink.mode, 'direct')

  await collector.stop()
  // Each append resolves once the record is fsynced in the spool.
  for (let i = 0; i < 30; i++) await append(`down${i}`)
  assert.equal(sink.mode, 'spooling')
  assert.ok(sink.spoolBytes > 0)
  const segments = (await readdir(spoolDir)).filter((n) => n.startsWith('seg-'))
  assert.ok(segments.length >= 2, `several spool segments, got ${segments.length}`)
  await waitFor(() => sink.stats.postFailures >= 3, 'a few failed deliveries')

  await collector.start() // same port
  // Writes while the spool drains go behind it.
  await Promise.all(Array.from({ length: 20 }, (_, i) => append(`back${i}`)))
  await waitFor(() => collector.records.length >= sent.length, 'every record delivered', 5000)
  await waitFor(() => sink.mode === 'direct', 'the sink to go direct again', 5000)
  for (let i = 0; i < 5; i++) await append(`direct${i}`)

  const got = collector.records.map((r) => r.streamId!)
  assert.deepEqual(got, sent, 'every record, once, in order')
  assert.equal(new Set(collector.records.map((r) => r.id)).size, sent.length)
  assert.equal(sink.spoolBytes, 0)
  assert.deepEqual(
    (await readdir(spoolDir)).filter((n) => n.startsWith('seg-')),
    [],
    'delivered segments are deleted',
  )
  for (const req of collector.requests) assert.ok(req.records.length <= 20)
  assert.ok(!text().includes(TOKEN), 'the token never appears in the log')
  assert.ok(text().includes('spooling to disk'))
})

test('a collector answering 500 gets the records later, in order', async (t) => {
  const collector = await startCollector(t)
  collector.behaviour = 'fail500'
  const dir = await tempDir(t)
  const sink = await WebhookSink.open({
    url: collector.url,
    spoolDir: join(dir, 'spool'),
    retry: { initialMs: 20, maxMs: 50 },
  })
  defer(t, () => sink.close())
  const records = batchOf('r', 12)
  for (const r of records) await sink.write([r])
  assert.equal(collector.records.length, 0)
  assert.equal(sink.stats.spooled, 12)
  collector.behaviour = 'ok'
  await waitFor(() => collector.records.length === 12, 'delivery after 500s', 5000)
  assert.deepEqual(collector.records, records)
})

test('the spool is bounded: when full, write rejects and blocking-strict fails closed until the collector is back', async (t) => {
  const collector = await startCollector(t)
  await collector.stop()
  const dir = await tempDir(t)
  const spoolDir = join(dir, 'spool')
  const maxSpoolBytes = 4096
  const sink = await WebhookSink.open({
    url: collector.url,
    spoolDir,
    maxSpoolBytes,
    spoolSegmentBytes: 1024,
    retry: { initialMs: 20, maxMs: 50 },
  })
  const log = new AuditLog({ sinks: [sink], retry: { initialMs: 20, maxMs: 50 } })
  defer(t, () => log.close())
  const appended: string[] = []
  let rejected = 0
  for (let i = 0; i < 60; i++) {
    const r = rec('stream.closed', { streamId: `b${i}` })
    appended.push(r.streamId!)
    try {
      await log.append(r)
    } catch (err) {
      assert.ok(isAppError(err) && err.code === 'PFG_ERR_AUDIT_UNAVAILABLE', String(err))
      rejected++
    }
    assert.ok(sink.spoolBytes <= maxSpoolBytes, `spool ${sink.spoolBytes} > ${maxSpoolBytes}`)
  }
  assert.ok(rejected > 0, 'the full spool made appends fail')
  assert.equal(log.healthy(), false)
  // What waits in memory is bounded by the log's queue (the records themselves).
  assert.ok(log.metrics().queueDepth <= 60)
  let disk = 0
  for (const name of await readdir(spoolDir))
    if (name.startsWith('seg-')) disk += (await readFile(join(spoolDir, name))).length
  assert.ok(disk <= maxSpoolBytes + 1024, `spool files hold ${disk} bytes`)

  await collector.start()
  await waitFor(() => log.healthy(), 'recovery', 5000)
  assert.equal(await log.flush(5000), true)
  await waitFor(() => collector.records.length >= appended.length, 'full delivery', 5000)
  // Records whose append was refused were still kept and are delivered, in order, once.
  assert.deepEqual(
    collector.records.map((r) => r.streamId),
    appended,
  )
})

test('records spooled before a restart are delivered first, then new ones, in order', async (t) => {
  const collector = await startCollector(t)
  await collector.stop()
  const dir = await tempDir(t)
  const spoolDir = join(dir, 'spool')
  const options = { url: collector.url, spoolDir, retry: { initialMs: 20, maxMs: 50 } }
  const first = await WebhookSink.open(options)
  const old = batchOf('old', 8)
  await first.write(old.slice(0, 4))
  await first.write(old.slice(4))
  await first.close() // the gateway stops; the spool stays
  assert.ok((await readdir(spoolDir)).some((n) => n.startsWith('seg-')))

  await collector.start()
  const second = await WebhookSink.open(options)
  defer(t, () => second.close())
  assert.equal(second.mode, 'spooling', 'starts by delivering the old spool')
  const fresh = batchOf('new', 5)
  await second.write(fresh)
  await waitFor(() => collector.records.length === 13, 'old and new records', 5000)
  assert.deepEqual(collector.records, [...old, ...fresh])
})

test('a restart after a partial delivery resumes at the cursor', async (t) => {
  const collector = await startCollector(t)
  await collector.stop()
  const dir = await tempDir(t)
  const spoolDir = join(dir, 'spool')
  const options = {
    url: collector.url,
    spoolDir,
    maxBatchRecords: 3,
    retry: { initialMs: 20, maxMs: 50 },
  }
  const first = await WebhookSink.open(options)
  const records = batchOf('c', 10)
  await first.write(records)
  collector.acceptLimit = 1 // one batch of 3 gets through, then 500s
  await collector.start()
  await waitFor(() => first.stats.postFailures >= 2, 'a delivery, then failures', 5000)
  await first.close()
  assert.equal(collector.records.length, 3)
  assert.equal(first.stats.delivered, 3)
  collector.acceptLimit = undefined
  const second = await WebhookSink.open(options)
  defer(t, () => second.close())
  await waitFor(() => collector.records.length >= 10, 'the rest', 5000)
  await waitFor(() => second.mode === 'direct', 'direct mode', 5000)
  assert.deepEqual(collector.records, records, 'no record twice, none missing')
})
