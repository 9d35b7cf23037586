import { test } from 'node:test'
import assert from 'node:assert/strict'
import { appendFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { AuditLog } from '../../../src/gateway/audit/audit-log.js'
import { FileSink } from '../../../src/gateway/audit/file-sink.js'
import { readTrail } from '../../../src/gateway/audit/trail-reader.js'
import type { AuditSink } from '../../../src/gateway/audit/types.js'
import { deniedTrailPath, isDenialType } from '../../../src/protocol/audit-record.js'
import type { AuditRecord } from '../../../src/protocol/audit-record.js'
import { errorCode, isAppError } from '../../../src/shared/errors.js'
import { defer, mountTmpfs, readAll, rec, tempDir, waitFor } from './helpers.js'

/** Fills the file system holding `dir` with a filler file; returns a function that empties it. */
async function fillUp(dir: string): Promise<() => Promise<void>> {
  const filler = join(dir, 'filler')
  const block = Buffer.alloc(4096, 0x61)
  for (;;) {
    try {
      await appendFile(filler, block)
    } catch (err) {
      assert.equal(errorCode(err), 'ENOSPC')
      break
    }
  }
  return () => writeFile(filler, '')
}

/** Bigger than a page, so that it cannot fit in the file's last page on a full tmpfs (in a field that is not bounded). */
const BIG = 'kubectl/v1.30.1 '.repeat(400)

function isUnavailable(err: unknown): boolean {
  return isAppError(err) && err.code === 'PFG_ERR_AUDIT_UNAVAILABLE' && err.statusCode === 503
}

test('group commit: 500 concurrent appends (blocking-strict, fsync always) take a few fsyncs', async (t) => {
  const dir = await tempDir(t)
  const sink = await FileSink.open({ path: join(dir, 'audit.log'), fsync: 'always' })
  const log = new AuditLog({ sinks: [sink] })
  defer(t, () => log.close())
  const n = 500
  await Promise.all(
    Array.from({ length: n }, (_, i) => log.append(rec('stream.opened', { streamId: `s${i}` }))),
  )
  console.log(`group commit (audit log): ${n} concurrent appends -> ${sink.stats.syncs} fsyncs`)
  assert.ok(sink.stats.syncs <= 3, `expected <= 3 fsyncs, got ${sink.stats.syncs}`)
  // Concurrent waves: each wave of appends made while a write is in flight shares one.
  let inFlight = 0
  let maxInFlight = 0
  const before = sink.stats.syncs
  await Promise.all(
    Array.from({ length: 200 }, async (_, w) => {
      for (let i = 0; i < 5; i++) {
        inFlight++
        maxInFlight = Math.max(maxInFlight, inFlight)
        await log.append(rec('stream.closed', { streamId: `w${w}-${i}` }))
        inFlight--
      }
    }),
  )
  const syncs = sink.stats.syncs - before
  console.log(`group commit: 200 workers x 5 appends -> ${syncs} fsyncs`)
  assert.ok(syncs <= 12, `expected about 5 fsyncs, got ${syncs}`)
  const m = log.metrics()
  assert.equal(m.recordsAppended, n + 1000)
  assert.equal(m.sinks[0]!.recordsWritten, n + 1000)
  assert.equal(m.queueDepth, 0)
  assert.equal((await readAll(join(dir, 'audit.log'))).records.length, n + 1000)
})

test('blocking-strict fails closed on a full file system, then recovers by itself', async (t) => {
  const mnt = await mountTmpfs(t, 128)
  const good = await tempDir(t)
  const badPath = join(mnt, 'audit.log')
  const goodPath = join(good, 'audit.log')
  const bad = await FileSink.open({ path: badPath, name: 'file-tmpfs' })
  const ok = await FileSink.open({ path: goodPath, name: 'file-good' })
  const health: boolean[] = []
  const log = new AuditLog({
    sinks: [bad, ok],
    retry: { initialMs: 20, maxMs: 100 },
    onHealthChange: (h) => health.push(h),
  })
  defer(t, () => log.close())
  await log.append(rec('session.opened', { sessionId: 'c1' }))
  await log.append(rec('stream.opened', { sessionId: 'c1', streamId: 's1' }))
  assert.equal(log.healthy(), true)

  const makeRoom = await fillUp(mnt)
  // The write fails for real (ENOSPC): the stream must be refused.
  await assert.rejects(
    log.append(rec('stream.opened', { streamId: 's2', node: BIG })),
    isUnavailable,
  )
  assert.equal(log.healthy(), false)
  assert.deepEqual(health, [false])
  const m = log.metrics()
  assert.equal(m.healthy, false)
  assert.equal(m.sinks[0]!.healthy, false)
  assert.match(m.sinks[0]!.lastError ?? '', /ENOSPC/)
  assert.equal(m.sinks[1]!.healthy, true)

  // While failing: appends fail at once (before any I/O could happen), and nothing is lost.
  const settledFirst = async (p: Promise<void>): Promise<unknown> =>
    Promise.race([
      p.then(
        () => 'resolved',
        (err: unknown) => err,
      ),
      new Promise((resolve) => setImmediate(() => resolve('still pending'))),
    ])
  const closeS1 = await settledFirst(
    log.append(rec('stream.closed', { streamId: 's1', endedBy: 'client', node: BIG })),
  )
  assert.ok(isUnavailable(closeS1), String(closeS1))
  const openS3 = await settledFirst(log.append(rec('stream.opened', { streamId: 's3' })))
  assert.ok(isUnavailable(openS3), String(openS3))

  // Free space: the retry (the probe) succeeds without any new append.
  await makeRoom()
  await waitFor(() => log.healthy(), 'the audit log to recover', 5000)
  assert.deepEqual(health, [false, true])
  await log.append(rec('stream.opened', { streamId: 's4' }))
  assert.equal(await log.flush(2000), true)

  const expected = [
    'session.opened c1',
    'stream.opened s1',
    'stream.opened s2',
    'stream.failed s2 audit-unavailable',
    'stream.closed s1',
    'stream.failed s3 audit-unavailable',
    'stream.opened s4',
  ]
  const show = (r: { type: string; streamId?: string; sessionId?: string; reason?: string }) =>
    [r.type, r.streamId ?? r.sessionId, r.reason].filter((x) => x !== undefined).join(' ')
  const inBad = await readAll(badPath)
  const inGood = await readAll(goodPath)
  assert.deepEqual(inBad.records.map(show), expected)
  assert.deepEqual(inGood.records.map(show), expected)
  // The same records (same ids), each once, in both sinks.
  assert.deepEqual(
    inBad.records.map((r) => r.id),
    inGood.records.map((r) => r.id),
  )
  assert.equal(new Set(inGood.records.map((r) => r.id)).size, expected.length)
  assert.equal(inBad.malformed, 0)
  const failed = inGood.records[3]!
  assert.equal(failed.status, 503)
  assert.equal(failed.error?.code, 'PFG_ERR_AUDIT_UNAVAILABLE')
  const after = log.metrics()
  assert.equal(after.appendsRejected, 3)
  assert.equal(after.recordsCompensated, 2)
  assert.ok(after.sinks[0]!.failures >= 1)
})

test('blocking: a failing sink does not fail the stream; its records are written once it is back', async (t) => {
  const mnt = await mountTmpfs(t, 128)
  const path = join(mnt, 'audit.log')
  const sink = await FileSink.open({ path })
  const log = new AuditLog({ sinks: [sink], mode: 'blocking', retry: { initialMs: 20, maxMs: 50 } })
  defer(t, () => log.close())
  await log.append(rec('stream.opened', { streamId: 'a' }))
  const makeRoom = await fillUp(mnt)
  await log.append(rec('stream.opened', { streamId: 'b', node: BIG })) // resolves
  assert.equal(log.healthy(), false)
  await log.append(rec('stream.closed', { streamId: 'b', node: BIG })) // resolves at once
  assert.equal(log.metrics().queueDepth, 2)
  await makeRoom()
  assert.equal(await log.flush(5000), true)
  assert.equal(log.healthy(), true)
  const { records } = await readAll(path)
  assert.deepEqual(
    records.map((r) => `${r.type} ${r.streamId}`),
    ['stream.opened a', 'stream.opened b', 'stream.closed b'],
  )
  assert.equal(log.metrics().appendsRejected, 0)
})

test('batch: append returns at once; a full queue makes append wait, and nothing is dropped', async (t) => {
  const mnt = await mountTmpfs(t, 128)
  const path = join(mnt, 'audit.log')
  const sink = await FileSink.open({ path })
  const log = new AuditLog({
    sinks: [sink],
    mode: 'batch',
    maxQueueRecords: 10,
    retry: { initialMs: 20, maxMs: 50 },
  })
  defer(t, () => log.close())
  const makeRoom = await fillUp(mnt)
  for (let i = 0; i < 10; i++)
    await log.append(rec('stream.opened', { streamId: `q${i}`, node: BIG }))
  let eleventh = false
  const p = log.append(rec('stream.opened', { streamId: 'q10' })).then(() => {
    eleventh = true
  })
  await new Promise((r) => setTimeout(r, 150))
  assert.equal(eleventh, false, 'the 11th append waits for room in the queue')
  assert.equal(log.metrics().queueDepth, 10)
  await makeRoom()
  await p
  assert.equal(await log.flush(5000), true)
  const { records } = await readAll(path)
  assert.deepEqual(
    records.map((r) => r.streamId),
    Array.from({ length: 11 }, (_, i) => `q${i}`),
  )
  assert.equal(log.metrics().recordsDropped, 0)
})

test('after close, append rejects with PFG_ERR_AUDIT_UNAVAILABLE', async (t) => {
  const dir = await tempDir(t)
  const sink = await FileSink.open({ path: join(dir, 'audit.log') })
  const log = new AuditLog({ sinks: [sink] })
  await log.append(rec('gateway.started'))
  await log.close()
  await assert.rejects(log.append(rec('gateway.stopped')), isUnavailable)
})

/** A sink that records each write's record types and when it happened. */
class RecordingSink {
  readonly name = 'recording'
  readonly writes: { at: number; types: string[] }[] = []
  write(records: readonly { type: string }[]): Promise<void> {
    this.writes.push({ at: performance.now(), types: records.map((r) => r.type) })
    return Promise.resolve()
  }
  close(): Promise<void> {
    return Promise.resolve()
  }
}

test('linger: a close waits for the next stream.opened to share its write, or lingerMs', async () => {
  const sink = new RecordingSink()
  const log = new AuditLog({ sinks: [sink], mode: 'blocking-strict', lingerMs: 200 })
  // A close alone is not written at once...
  const t0 = performance.now()
  let closedAt = 0
  const closed = log.append(rec('stream.closed')).then(() => (closedAt = performance.now()))
  await new Promise((r) => setTimeout(r, 20))
  assert.equal(sink.writes.length, 0, 'nothing written while the close lingers')
  // ...an open takes it along, in one write, and both appends resolve.
  await log.append(rec('stream.opened'))
  await closed
  assert.deepEqual(sink.writes, [
    { at: sink.writes[0]!.at, types: ['stream.closed', 'stream.opened'] },
  ])
  assert.ok(closedAt - t0 < 150, 'the close did not wait for its whole linger')
  // With no open coming, the linger writes it.
  const t1 = performance.now()
  await log.append(rec('session.closed'))
  const waited = performance.now() - t1
  assert.equal(sink.writes.length, 2)
  assert.deepEqual(sink.writes[1]!.types, ['session.closed'])
  assert.ok(waited >= 190, `written after the linger (${waited.toFixed(0)} ms)`)
  // close() does not wait for a linger.
  void log.append(rec('stream.denied'))
  const t2 = performance.now()
  await log.close()
  assert.ok(performance.now() - t2 < 150, 'close() wrote the lingering record at once')
  assert.deepEqual(sink.writes[2]!.types, ['stream.denied'])
})

test('linger 0, and batch mode, write every record at once', async () => {
  for (const options of [
    { mode: 'blocking-strict' as const, lingerMs: 0 },
    { mode: 'batch' as const, lingerMs: 500 },
  ]) {
    const sink = new RecordingSink()
    const log = new AuditLog({ sinks: [sink], ...options })
    const t0 = performance.now()
    await log.append(rec('stream.closed'))
    await waitFor(() => sink.writes.length === 1, `${options.mode}: written`, 1000)
    assert.ok(performance.now() - t0 < 100, `${options.mode}: at once`)
    await log.close()
  }
})

test('refusals go to their own trail: a flood of them rotates no stream or session record away', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  const main = await FileSink.open({
    path,
    maxBytes: 4096,
    retention: 2,
    accepts: (r) => !isDenialType(r.type),
  })
  const denied = await FileSink.open({
    path: deniedTrailPath(path),
    maxBytes: 4096,
    retention: 2,
    name: 'file-denials',
    accepts: (r) => isDenialType(r.type),
  })
  const log = new AuditLog({ sinks: [main, denied] })
  defer(t, () => log.close())
  const history = [
    rec('session.opened', { sessionId: 'c1' }),
    rec('stream.opened', { sessionId: 'c1', streamId: 's1' }),
    rec('stream.closed', { sessionId: 'c1', streamId: 's1' }),
  ]
  for (const r of history) await log.append(r)
  // 2,000 refusals with long names: many times both trails' size.
  await Promise.all(
    Array.from({ length: 2000 }, (_, i) =>
      log.append(rec(i % 2 === 0 ? 'stream.denied' : 'request.denied', { pod: 'x'.repeat(200) })),
    ),
  )
  await log.flush()
  assert.ok(denied.stats.rotations >= 1, 'the denials trail rotated')
  assert.equal(main.stats.rotations, 0, 'the main trail did not')
  const { records } = await readAll(path)
  for (const h of history)
    assert.ok(
      records.some((r) => r.id === h.id),
      `${h.type} survives`,
    )
  const fromMain: string[] = []
  await readTrail(path, (r) => fromMain.push(r.type), { denials: false })
  assert.deepEqual(fromMain, ['session.opened', 'stream.opened', 'stream.closed'])
  // A failing denials trail fails closed like any sink (blocking-strict).
  assert.equal(log.healthy(), true)
})

test('a record goes only to the sinks that accept it; a ticket waits for those alone', async (t) => {
  const seen: Record<string, string[]> = { a: [], b: [] }
  const sink = (name: 'a' | 'b', accepts: (r: AuditRecord) => boolean): AuditSink => ({
    name,
    accepts,
    write: async (records) => {
      for (const r of records) seen[name]!.push(r.type)
    },
    close: async () => undefined,
  })
  const log = new AuditLog({
    sinks: [
      sink('a', (r) => r.type !== 'stream.denied'),
      sink('b', (r) => r.type === 'stream.denied'),
    ],
    lingerMs: 0,
  })
  defer(t, () => log.close())
  await log.append(rec('stream.opened'))
  await log.append(rec('stream.denied'))
  await log.append(rec('gateway.started'))
  assert.deepEqual(seen, { a: ['stream.opened', 'gateway.started'], b: ['stream.denied'] })
})
