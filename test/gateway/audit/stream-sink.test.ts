import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { StreamSink } from '../../../src/gateway/audit/stream-sink.js'
import { AuditLineDecoder } from '../../../src/protocol/audit-record.js'
import { rec } from './helpers.js'

/** A writable whose writes complete only when the test says so (a slow reader). */
function slowWritable(): { stream: Writable; chunks: Buffer[]; release: () => void } {
  const chunks: Buffer[] = []
  let waiting: (() => void)[] = []
  const stream = new Writable({
    highWaterMark: 64,
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk)
      waiting.push(() => cb())
    },
  })
  const release = (): void => {
    const w = waiting
    waiting = []
    for (const cb of w) cb()
  }
  return { stream, chunks, release }
}

test('stdout sink: JSON lines, and write() waits while the reader is slow (backpressure)', async () => {
  const { stream, chunks, release } = slowWritable()
  const sink = new StreamSink({ stream })
  const records = [rec('stream.opened', { streamId: 'a' }), rec('stream.closed', { streamId: 'a' })]
  let done = false
  const p = sink.write(records).then(() => {
    done = true
  })
  await new Promise((r) => setTimeout(r, 50))
  assert.equal(done, false, 'not resolved while the stream has not taken the bytes')
  assert.equal(chunks.length, 1)
  release()
  await p
  assert.equal(done, true)
  // A second write is not started before the first resolved, and ends up after it.
  const q = sink.write([rec('session.closed')])
  await new Promise((r) => setTimeout(r, 20))
  release()
  await q
  const decoder = new AuditLineDecoder()
  const got = decoder.push(Buffer.concat(chunks))
  assert.equal(decoder.pendingBytes, 0, 'whole lines')
  assert.deepEqual(
    got.map((r) => r.type),
    ['stream.opened', 'stream.closed', 'session.closed'],
  )
  assert.equal(sink.records, 3)
  await sink.close()
  await assert.rejects(sink.write([rec('session.closed')]), /closed/)
})

test('stdout sink: a broken stream makes write() reject', async () => {
  const stream = new Writable({
    write(_chunk, _enc, cb) {
      cb(new Error('EPIPE: the reader went away'))
    },
  })
  stream.on('error', () => {})
  const sink = new StreamSink({ stream })
  await assert.rejects(sink.write([rec('stream.opened')]), /EPIPE/)
  await assert.rejects(sink.write([rec('stream.opened')]), /closed|destroyed|EPIPE/)
})
