import { test } from 'node:test'
import assert from 'node:assert/strict'
import { constants as fsConstants } from 'node:fs'
import {
  appendFile,
  readdir,
  readFile,
  readlink,
  stat,
  truncate,
  writeFile,
} from 'node:fs/promises'
import { join } from 'node:path'
import { FileSink } from '../../../src/gateway/audit/file-sink.js'
import { errorCode } from '../../../src/shared/errors.js'
import { defer, mountTmpfs, readAll, rec, tempDir, waitFor } from './helpers.js'

test('the trail file is created 0600 in a new 0700 directory, and appended to', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'logs', 'audit', 'audit.log')
  const sink = await FileSink.open({ path })
  defer(t, () => sink.close())
  assert.equal((await stat(path)).mode & 0o777, 0o600)
  assert.equal((await stat(join(dir, 'logs'))).mode & 0o777, 0o700)
  assert.equal((await stat(join(dir, 'logs', 'audit'))).mode & 0o777, 0o700)
  assert.ok(sink.stats.dirSyncs >= 2, 'the new directory entries were fsynced')
  const a = rec('stream.opened', { streamId: 's1' })
  const b = rec('stream.closed', { streamId: 's1', bytesClientToPod: 5, bytesPodToClient: 7 })
  await sink.write([a])
  await sink.write([b])
  await sink.close()
  // Reopening appends after what is there.
  const again = await FileSink.open({ path })
  await again.write([rec('session.closed')])
  await again.close()
  const { records, malformed } = await readAll(path)
  assert.equal(malformed, 0)
  assert.deepEqual(
    records.map((r) => r.type),
    ['stream.opened', 'stream.closed', 'session.closed'],
  )
  assert.deepEqual(records[1], b)
})

test('an existing trail file with wider permissions is set back to 0600', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  await writeFile(path, '', { mode: 0o644 })
  const sink = await FileSink.open({ path })
  await sink.close()
  assert.equal((await stat(path)).mode & 0o777, 0o600)
})

/** The open flags (from /proc/self/fdinfo) of this process's descriptors open on `path`. */
async function openFlags(path: string): Promise<number[]> {
  const out: number[] = []
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '')
    if (target !== path) continue
    const info = await readFile(`/proc/self/fdinfo/${fd}`, 'utf8')
    out.push(parseInt(/^flags:\s*([0-7]+)/m.exec(info)![1]!, 8))
  }
  return out
}

test('fsync always: the trail is opened O_DSYNC (each write durable on return); other policies are not', async (t) => {
  const dir = await tempDir(t)
  for (const fsync of ['always', 'interval', 'never'] as const) {
    const path = join(dir, `audit-${fsync}.log`)
    const sink = await FileSink.open({ path, fsync })
    defer(t, () => sink.close())
    await sink.write([rec('stream.opened', { streamId: fsync })])
    const flags = await openFlags(path)
    assert.equal(flags.length, 1, `one descriptor on ${path}`)
    assert.equal(
      (flags[0]! & fsConstants.O_DSYNC) !== 0,
      fsync === 'always',
      `O_DSYNC with fsync: ${fsync}`,
    )
    assert.notEqual(flags[0]! & fsConstants.O_APPEND, 0, 'O_APPEND')
    await sink.close()
    assert.equal((await readAll(path)).records.length, 1)
  }
})

test('group commit: 400 concurrent writes cost a handful of fdatasyncs, not 400', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  const sink = await FileSink.open({ path, fsync: 'always' })
  defer(t, () => sink.close())
  const n = 400
  await Promise.all(
    Array.from({ length: n }, (_, i) => sink.write([rec('stream.opened', { streamId: `s${i}` })])),
  )
  const { syncs, writes, records } = sink.stats
  console.log(
    `group commit (file sink): ${n} concurrent writes -> ${writes} writes, ${syncs} syncs`,
  )
  assert.equal(records, n)
  assert.ok(syncs <= 3, `expected at most 3 fdatasyncs, got ${syncs}`)
  assert.equal(syncs, writes, 'fsync=always: one sync per batch')
  const { records: read } = await readAll(path)
  assert.deepEqual(
    read.map((r) => r.streamId),
    Array.from({ length: n }, (_, i) => `s${i}`),
    'in the order handed in',
  )
})

test('fsync policies: interval syncs on a timer, never does not sync', async (t) => {
  const dir = await tempDir(t)
  const interval = await FileSink.open({
    path: join(dir, 'a.log'),
    fsync: 'interval',
    fsyncIntervalMs: 300,
  })
  const never = await FileSink.open({ path: join(dir, 'b.log'), fsync: 'never' })
  defer(t, () => Promise.all([interval.close(), never.close()]))
  for (let i = 0; i < 5; i++) {
    await interval.write([rec('stream.opened')])
    await never.write([rec('stream.opened')])
  }
  assert.equal(interval.stats.syncs, 0, 'write() does not wait for a sync')
  await waitFor(() => interval.stats.syncs >= 1, 'the timer to sync', 3000)
  const synced = interval.stats.syncs
  await new Promise((r) => setTimeout(r, 700))
  assert.equal(interval.stats.syncs, synced, 'no sync when nothing was written')
  assert.equal(never.stats.syncs, 0)
})

test('rotation by size keeps `retention` files and deletes older ones', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  // A leftover from a larger retention setting: deleted at the first rotation.
  await writeFile(join(dir, 'audit.log.7'), '{}\n')
  const sink = await FileSink.open({ path, maxBytes: 2000, retention: 3 })
  defer(t, () => sink.close())
  const n = 60
  for (let i = 0; i < n; i++) await sink.write([rec('stream.closed', { streamId: `s${i}` })])
  await sink.close()
  const names = (await readdir(dir)).sort()
  assert.deepEqual(names, ['audit.log', 'audit.log.1', 'audit.log.2', 'audit.log.3'])
  for (const name of names) {
    const size = (await stat(join(dir, name))).size
    assert.ok(size <= 2000, `${name} is ${size} bytes`)
    assert.equal((await stat(join(dir, name))).mode & 0o777, 0o600)
  }
  assert.ok(sink.stats.rotations > 3)
  // What is kept is the newest records, contiguous and in order.
  const { records, malformed } = await readAll(path)
  assert.equal(malformed, 0)
  const ids = records.map((r) => Number(r.streamId!.slice(1)))
  assert.equal(ids.at(-1), n - 1)
  assert.deepEqual(
    ids,
    ids.map((_, i) => ids[0]! + i),
  )
})

test('a partial last line left by a crash is terminated on open and skipped by readers', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  const first = rec('stream.opened', { streamId: 'a' })
  await writeFile(path, `${JSON.stringify(first)}\n{"schema":"pfgate.audit/v1","id":"x`, {
    mode: 0o600,
  })
  // A reader before the restart: one record, one partial tail.
  let read = await readAll(path)
  assert.deepEqual(read.records, [first])
  assert.equal(read.partialTails, 1)
  const sink = await FileSink.open({ path })
  await sink.write([rec('stream.closed', { streamId: 'a' })])
  await sink.close()
  read = await readAll(path)
  assert.deepEqual(
    read.records.map((r) => r.type),
    ['stream.opened', 'stream.closed'],
  )
  assert.equal(read.malformed, 1, 'the cut line is one skipped line')
  assert.equal(read.partialTails, 0)
})

test('a full file system fails the write without leaving a partial line; it works again once there is space', async (t) => {
  const mnt = await mountTmpfs(t, 64)
  const path = join(mnt, 'audit.log')
  const sink = await FileSink.open({ path })
  defer(t, () => sink.close())
  await sink.write([rec('stream.opened', { streamId: 'before' })])
  // Fill the file system.
  const filler = join(mnt, 'filler')
  const block = Buffer.alloc(4096, 0x61)
  for (;;) {
    try {
      await appendFile(filler, block)
    } catch (err) {
      assert.equal(errorCode(err), 'ENOSPC')
      break
    }
  }
  // Leave room for part of the next batch only, so that it is written in part.
  const { size: full } = await stat(filler)
  await truncate(filler, full - 8192)
  const sizeBefore = (await stat(path)).size
  const big = Array.from({ length: 60 }, (_, i) =>
    rec('stream.closed', { streamId: `x${i}`, reason: 'r'.repeat(300) }),
  )
  await assert.rejects(sink.write(big), (err) => errorCode(err) === 'ENOSPC')
  assert.equal(sink.stats.failures, 1)
  assert.equal((await stat(path)).size, sizeBefore, 'the partial batch was cut off')
  // Make room; the next write succeeds and the file has whole lines only.
  await writeFile(filler, '')
  await sink.write([rec('stream.closed', { streamId: 'after' })])
  const { records, malformed, partialTails } = await readAll(path)
  assert.deepEqual(
    records.map((r) => r.streamId),
    ['before', 'after'],
  )
  assert.equal(malformed, 0)
  assert.equal(partialTails, 0)
  assert.ok((await readFile(path, 'utf8')).endsWith('\n'))
})
