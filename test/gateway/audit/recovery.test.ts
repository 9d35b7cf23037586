import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { recoverDanglingRecords } from '../../../src/gateway/audit/recovery.js'
import { FileSink } from '../../../src/gateway/audit/file-sink.js'
import { readAll, rec, tempDir } from './helpers.js'

const WRITER = new URL('./fixtures/trail-writer.js', import.meta.url).pathname

/** Runs the fixture; `onLine` may return true to SIGKILL it. Resolves with its exit. */
async function runWriter(
  args: string[],
  onLine: (line: string) => boolean = () => false,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; lines: string[] }> {
  const child = spawn(process.execPath, [WRITER, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  const lines: string[] = []
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  for await (const line of createInterface({ input: child.stdout })) {
    lines.push(line)
    if (onLine(line) && child.exitCode === null) child.kill('SIGKILL')
  }
  const [code, signal] = await exited
  clearTimeout(timer)
  return { code, signal, lines }
}

test('after a SIGKILL mid-transfer, a restart closes every dangling stream and session, once', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  let opened = 0
  const run = await runWriter(['write', path], (line) => {
    if (line.startsWith('opened ')) opened++
    return opened >= 300
  })
  assert.equal(run.signal, 'SIGKILL')
  const reportedOpen = run.lines.filter((l) => l.startsWith('opened ')).map((l) => l.slice(7))
  const reportedClosed = run.lines.filter((l) => l.startsWith('closed ')).map((l) => l.slice(7))
  assert.ok(reportedOpen.length >= 300)

  const before = await readAll(path)
  const rotated = (await readdir(dir)).filter((n) => n.startsWith('audit.log.'))
  console.log(
    `killed after ${reportedOpen.length} opens; trail: ${before.records.length} records in ${rotated.length + 1} files, ${before.partialTails} partial tail(s)`,
  )
  assert.ok(rotated.length >= 1, 'the trail rotated while writing')
  const openedIds = new Set(
    before.records.filter((r) => r.type === 'stream.opened').map((r) => r.streamId),
  )
  const closedIds = new Set(
    before.records.filter((r) => r.type === 'stream.closed').map((r) => r.streamId),
  )
  // blocking-strict: every acknowledged append is in the trail.
  for (const id of reportedOpen) assert.ok(openedIds.has(id), `open of ${id} is durable`)
  for (const id of reportedClosed) assert.ok(closedIds.has(id), `close of ${id} is durable`)
  const dangling = [...openedIds].filter((id) => !closedIds.has(id))
  assert.ok(dangling.length >= 50, `streams left open: ${dangling.length}`)

  const closes = await recoverDanglingRecords(path)
  const streamCloses = closes.filter((r) => r.type === 'stream.closed')
  assert.deepEqual(streamCloses.map((r) => r.streamId).sort(), dangling.sort())
  const sessionCloses = closes.filter((r) => r.type === 'session.closed')
  assert.deepEqual(
    sessionCloses.map((r) => r.sessionId),
    ['c1'],
  )
  for (const r of closes) {
    assert.equal(r.endedBy, 'gateway-restart')
    assert.equal(r.reason, 'gateway-restart')
    assert.equal(r.gateway, 'gw-1', 'the instance whose stream it was')
    assert.equal(r.user, 'alice')
    assert.deepEqual(r.groups, ['dev'])
    assert.equal(r.bytesClientToPod, undefined, 'bytes unknown: omitted')
    assert.equal(r.durationMs, undefined)
  }
  const one = streamCloses[0]!
  const open = before.records.find(
    (r) => r.type === 'stream.opened' && r.streamId === one.streamId,
  )!
  for (const k of ['namespace', 'pod', 'podUid', 'port', 'sessionId'] as const)
    assert.equal(one[k], open[k], k)

  // The restart: a new process appends the closes.
  const restart = await runWriter(['recover', path])
  assert.equal(restart.code, 0)
  assert.deepEqual(restart.lines, [`recovered ${closes.length}`])
  const after = await readAll(path)
  assert.equal(after.partialTails, 0)
  assert.ok(after.malformed <= 1, 'at most the one line cut by the kill')
  assert.equal(after.malformed, before.partialTails)
  // Nothing dangles any more, and a later restart closes nothing again.
  assert.deepEqual(await recoverDanglingRecords(path), [])
  const again = await runWriter(['recover', path])
  assert.deepEqual(again.lines, ['recovered 0'])
})

test('recovery reads rotated files and ignores opens whose close is in a later file', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  const sink = await FileSink.open({ path, maxBytes: 600, retention: 10 })
  await sink.write([rec('session.opened', { sessionId: 'k' })])
  for (let i = 0; i < 6; i++)
    await sink.write([rec('stream.opened', { sessionId: 'k', streamId: `s${i}` })])
  for (let i = 0; i < 6; i += 2) await sink.write([rec('stream.closed', { streamId: `s${i}` })])
  await sink.write([rec('stream.failed', { streamId: 's5', reason: 'audit-unavailable' })])
  await sink.close()
  assert.ok(sink.stats.rotations >= 2)
  const closes = await recoverDanglingRecords(path)
  assert.deepEqual(
    closes.map((r) => `${r.type} ${r.streamId ?? r.sessionId}`),
    ['stream.closed s1', 'stream.closed s3', 'session.closed k'],
  )
  assert.deepEqual(await recoverDanglingRecords(join(dir, 'none.log')), [])
})

test('stream ids are matched per gateway instance', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  const sink = await FileSink.open({ path })
  // Instance 1 died with stream 7 open; instance 2 reused the id and closed its own 7.
  await sink.write([
    rec('stream.opened', { gateway: 'gw-1', streamId: '7' }),
    rec('stream.opened', { gateway: 'gw-2', streamId: '7' }),
    rec('stream.closed', { gateway: 'gw-2', streamId: '7' }),
  ])
  const closes = await recoverDanglingRecords(path)
  assert.deepEqual(
    closes.map((r) => `${r.gateway} ${r.streamId}`),
    ['gw-1 7'],
  )
  await sink.write(closes)
  await sink.close()
  assert.deepEqual(await recoverDanglingRecords(path), [], 'closed once, not on every restart')
})

test('a session closed by recovery names every user its streams name', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  const sink = await FileSink.open({ path })
  await sink.write([
    rec('session.opened', { sessionId: 'c', user: 'alice' }),
    rec('stream.opened', { sessionId: 'c', streamId: 's1', user: 'alice' }),
    rec('stream.closed', { sessionId: 'c', streamId: 's1', user: 'alice' }),
    rec('stream.opened', { sessionId: 'c', streamId: 's2', user: 'bob' }),
    rec('session.opened', { sessionId: 'd', user: 'carol' }),
  ])
  await sink.close()
  const closes = await recoverDanglingRecords(path)
  const c = closes.find((r) => r.type === 'session.closed' && r.sessionId === 'c')
  assert.deepEqual(c?.users, ['alice', 'bob'])
  assert.equal(c?.user, undefined, 'no single user for a session that carried two')
  const d = closes.find((r) => r.type === 'session.closed' && r.sessionId === 'd')
  assert.deepEqual([d?.user, d?.users], ['carol', ['carol']])
})
