import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import type { TestContext } from 'node:test'
import {
  DEFAULT_AUDIT_FILE,
  DEV_AUDIT_FILE,
  defaultAuditFile,
  formatBytes,
  formatDuration,
  runAuditCommand,
} from '../../src/cli/audit-command.js'
import { AUDIT_SCHEMA } from '../../src/protocol/audit-record.js'
import { hasControlChars } from '../../src/shared/text.js'
import type { AuditRecord } from '../../src/protocol/audit-record.js'
import { FileSink } from '../../src/gateway/audit/file-sink.js'
import { createAuditRecord } from '../../src/gateway/audit/record.js'
import { defer, tempDir as auditTempDir } from '../gateway/audit/helpers.js'

/** The repository root (tests run from dist/test/cli). */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url))

class Capture extends Writable {
  text = ''
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString()
    cb()
  }
}

async function run(
  argv: string[],
  extra: { signal?: AbortSignal; now?: () => Date; pollMs?: number } = {},
): Promise<{ code: number; out: string; err: string }> {
  const stdout = new Capture()
  const stderr = new Capture()
  const code = await runAuditCommand(argv, { stdout, stderr, ...extra })
  return { code, out: stdout.text, err: stderr.text }
}

async function tempDir(t: TestContext): Promise<string> {
  return auditTempDir(t, 'pfgate-cli-audit-')
}

let seq = 0
function r(
  time: string,
  type: AuditRecord['type'],
  fields: Partial<AuditRecord> = {},
): AuditRecord {
  return { schema: AUDIT_SCHEMA, id: `id-${++seq}`, time, type, ...fields }
}

const T = (m: number): string => new Date(Date.UTC(2024, 4, 1, 10, m)).toISOString()

/** A trail of two rotated files and a live file that ends with a partial line. */
async function sampleTrail(dir: string): Promise<{ path: string; all: AuditRecord[] }> {
  const path = join(dir, 'audit.log')
  const alice = { user: 'alice', groups: ['dev'], namespace: 'default', pod: 'web-0', port: 8080 }
  const bob = { user: 'bob', namespace: 'shop', pod: 'db-0', port: 5432 }
  const files: AuditRecord[][] = [
    [
      r(T(0), 'session.opened', { user: 'alice', sessionId: 'c1', sourceAddress: '10.0.0.1:5000' }),
      r(T(1), 'stream.opened', { ...alice, sessionId: 'c1', streamId: 's1' }),
    ],
    [
      r(T(2), 'stream.denied', { ...bob, status: 403, reason: 'forbidden' }),
      r(T(3), 'stream.closed', {
        ...alice,
        streamId: 's1',
        bytesClientToPod: 1536,
        bytesPodToClient: 5 * 1024 * 1024,
        durationMs: 123_400,
        endedBy: 'client',
      }),
    ],
    [
      r(T(4), 'stream.failed', {
        ...bob,
        status: 502,
        reason: 'connect-refused',
        error: { code: 'PFG_ERR_RELAY_CONNECT_REFUSED', message: 'refused' },
      }),
      r(T(5), 'stream.closed', { ...bob, streamId: 's2', endedBy: 'limit', reason: 'idle' }),
      r(T(6), 'session.closed', {
        user: 'alice',
        sessionId: 'c1',
        endedBy: 'admin',
        endedByUser: 'root',
      }),
    ],
  ]
  const text = (rs: AuditRecord[]): string => rs.map((x) => `${JSON.stringify(x)}\n`).join('')
  await writeFile(`${path}.2`, text(files[0]!))
  await writeFile(`${path}.1`, text(files[1]!))
  await writeFile(path, `${text(files[2]!)}{"schema":"pfgate.aud`)
  return { path, all: files.flat() }
}

const ids = (out: string): string[] =>
  out
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (JSON.parse(l) as AuditRecord).id)

test('usage errors exit 2, bad input exits 1, --help exits 0', async () => {
  assert.equal((await run([])).code, 2)
  const unknown = await run(['query', '--bogus'])
  assert.equal(unknown.code, 2)
  assert.match(unknown.err, /bogus/)
  assert.match(unknown.err, /Usage:/)
  assert.equal((await run(['tail'])).code, 2)
  assert.equal((await run(['query', 'extra'])).code, 2)
  const help = await run(['--help'])
  assert.equal(help.code, 0)
  assert.match(help.out, /pfgate audit query/)
  for (const bad of [
    ['--port', '0'],
    ['--port', 'http'],
    ['--since', 'yesterday'],
    ['--until', '5 minutes'],
    ['--outcome', 'great'],
    ['-o', 'yaml'],
    ['--type', 'Stream Opened'],
  ]) {
    const res = await run(['query', '--file', '/nonexistent/audit.log', ...bad])
    assert.equal(res.code, 1, bad.join(' '))
    assert.match(res.err, new RegExp(`--${bad[0] === '-o' ? 'output' : bad[0]!.slice(2)}`))
  }
})

test('the default trail: $PFGATE_AUDIT_FILE, else the dev trail when present, else /var/log; help and docs say so', async (t) => {
  assert.equal(defaultAuditFile({ PFGATE_AUDIT_FILE: '/srv/a.log' }), '/srv/a.log')
  const dir = await tempDir(t)
  const cwd = process.cwd()
  t.after(() => process.chdir(cwd))
  process.chdir(dir)
  assert.equal(defaultAuditFile({ PFGATE_AUDIT_FILE: '' }), DEFAULT_AUDIT_FILE)
  await mkdir(join(dir, '.pfgate', 'audit'), { recursive: true })
  await writeFile(join(dir, DEV_AUDIT_FILE), '')
  assert.equal(defaultAuditFile({}), DEV_AUDIT_FILE)
  process.chdir(cwd)
  // The same order, in the help and in docs/audit.md.
  const order = ['$PFGATE_AUDIT_FILE', DEV_AUDIT_FILE, DEFAULT_AUDIT_FILE]
  const inOrder = (text: string): boolean => {
    const at = order.map((s) => text.indexOf(s))
    return at.every((p, i) => p >= 0 && (i === 0 || p > (at[i - 1] as number)))
  }
  const help = (await run(['--help'])).out.replace(/\s+/g, ' ')
  assert.ok(inOrder(help), help)
  const doc = readFileSync(join(ROOT, 'docs', 'audit.md'), 'utf8')
  const section = doc.slice(doc.indexOf('## `pfgate audit`')).replace(/\s+/g, ' ')
  assert.ok(inOrder(section), "docs/audit.md names the default trails in the CLI's order")
})

test('a missing trail exits 1 with a clear message', async (t) => {
  const dir = await tempDir(t)
  const res = await run(['query', '--file', join(dir, 'audit.log')])
  assert.equal(res.code, 1)
  assert.match(res.err, /no such file: .*audit\.log/)
  const nodir = await run(['query', '--file', join(dir, 'nope', 'audit.log')])
  assert.equal(nodir.code, 1)
  assert.match(nodir.err, /cannot read/)
  const f = await run(['follow', '--file', join(dir, 'audit.log')])
  assert.equal(f.code, 1)
})

test('query reads rotated files in time order, skips the partial last line, and filters', async (t) => {
  const dir = await tempDir(t)
  const { path, all } = await sampleTrail(dir)
  const q = async (...args: string[]): Promise<string[]> => {
    const res = await run(['query', '--file', path, '-o', 'json', ...args])
    assert.equal(res.code, 0, res.err)
    return ids(res.out)
  }
  const pick = (f: (r: AuditRecord) => boolean): string[] => all.filter(f).map((r) => r.id)
  assert.deepEqual(
    await q(),
    all.map((r) => r.id),
  )
  const res = await run(['query', '--file', path, '-o', 'json'])
  assert.match(res.err, /unterminated last line/)
  assert.deepEqual(
    await q('--user', 'bob'),
    pick((r) => r.user === 'bob'),
  )
  assert.deepEqual(
    await q('-n', 'default'),
    pick((r) => r.namespace === 'default'),
  )
  assert.deepEqual(
    await q('--pod', 'db-0', '--port', '5432'),
    pick((r) => r.pod === 'db-0'),
  )
  assert.deepEqual(
    await q('--port', '8080,5432', '--type', 'stream.closed'),
    pick((r) => r.type === 'stream.closed'),
  )
  assert.deepEqual(
    await q('--type', 'session'),
    pick((r) => r.type.startsWith('session.')),
  )
  assert.deepEqual(
    await q('--outcome', 'denied'),
    pick((r) => r.type === 'stream.denied'),
  )
  assert.deepEqual(
    await q('--outcome', 'failed,limit'),
    pick((r) => r.type === 'stream.failed' || r.endedBy === 'limit'),
  )
  assert.deepEqual(
    await q('--outcome', 'admin'),
    pick((r) => r.endedBy === 'admin'),
  )
  assert.deepEqual(
    await q('--outcome', 'ok', '--type', 'stream'),
    pick((r) => r.streamId === 's1'),
  )
  assert.deepEqual(
    await q('--since', T(2), '--until', T(5)),
    pick((r) => r.time >= T(2) && r.time < T(5)),
  )
  assert.deepEqual(
    await q('--session', 'c1'),
    pick((r) => r.sessionId === 'c1'),
  )
  // Durations are relative to now.
  const now = new Date(Date.parse(T(10)))
  const rel = await run(['query', '--file', path, '-o', 'json', '--since', '5m'], {
    now: () => now,
  })
  assert.deepEqual(
    ids(rel.out),
    pick((r) => r.time >= T(5)),
  )
  const none = await run(['query', '--file', path, '--user', 'carol'])
  assert.equal(none.code, 0)
  assert.equal(none.out, '')
  assert.match(none.err, /No matching records/)
})

test('query table output has aligned columns', async (t) => {
  const dir = await tempDir(t)
  const { path, all } = await sampleTrail(dir)
  const res = await run(['query', '--file', path])
  assert.equal(res.code, 0)
  const lines = res.out.trimEnd().split('\n')
  assert.equal(lines.length, all.length + 1)
  const header = lines[0]!
  const cols = ['TIME', 'TYPE', 'USER', 'TARGET', 'BYTES ↑/↓', 'DURATION', 'END/REASON']
  const starts = cols.map((c) => header.indexOf(c))
  assert.ok(
    starts.every((s, i) => i === 0 || s > starts[i - 1]!),
    header,
  )
  for (const line of lines.slice(1)) {
    for (const s of starts.slice(1)) assert.equal(line[s - 1], ' ', `column at ${s}: ${line}`)
  }
  const closed = lines.find((l) => l.includes('stream.closed') && l.includes('alice'))!
  assert.match(closed, /default\/web-0:8080/)
  assert.match(closed, /1\.5K\/5\.0M/)
  assert.match(closed, /2m03s/)
  assert.match(closed, /client/)
  assert.match(
    lines.find((l) => l.includes('stream.denied'))!,
    /403 forbidden/,
  )
  assert.match(
    lines.find((l) => l.includes('session.closed'))!,
    /admin:root/,
  )
  assert.match(
    lines.find((l) => l.includes('session.opened'))!,
    /from 10\.0\.0\.1:5000/,
  )
  assert.equal(formatBytes(512), '512')
  assert.equal(formatBytes(20 * 1024 * 1024 * 1024), '20G')
  assert.equal(formatDuration(850), '850ms')
  assert.equal(formatDuration(12_340), '12.3s')
  assert.equal(formatDuration(7_440_000), '2h04m')
})

test('table: a close without byte counts shows ? (unknown), records without them -', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  const target = { user: 'alice', namespace: 'default', pod: 'web-0', port: 8080, streamId: 's9' }
  const records = [
    r(T(0), 'stream.opened', target),
    // What crash recovery writes: no bytes, no duration (docs/audit.md#crash-recovery).
    r(T(1), 'stream.closed', { ...target, endedBy: 'gateway-restart', reason: 'gateway-restart' }),
    r(T(2), 'session.closed', { user: 'alice', sessionId: 'c9', endedBy: 'gateway-restart' }),
  ]
  await writeFile(path, records.map((x) => `${JSON.stringify(x)}\n`).join(''))
  const res = await run(['query', '--file', path])
  assert.equal(res.code, 0)
  const [header, opened, closed, session] = res.out.trimEnd().split('\n') as [
    string,
    string,
    string,
    string,
  ]
  const cell = (line: string, col: string): string =>
    line.slice(header.indexOf(col)).split(/\s{2,}/)[0] as string
  assert.equal(cell(opened, 'BYTES ↑/↓'), '-')
  assert.equal(cell(opened, 'DURATION'), '-')
  assert.equal(cell(closed, 'BYTES ↑/↓'), '?/?')
  assert.equal(cell(closed, 'DURATION'), '?')
  assert.equal(cell(session, 'BYTES ↑/↓'), '?/?')
  assert.equal(cell(session, 'DURATION'), '?')
})

test('follow prints new records as they are written, across rotation, until stopped', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  const sink = await FileSink.open({ path, maxBytes: 1500, retention: 50 })
  defer(t, () => sink.close())
  const old = createAuditRecord('stream.opened', { user: 'alice', streamId: 'old' })
  await sink.write([old])
  const stdout = new Capture()
  const stderr = new Capture()
  const ac = new AbortController()
  const done = runAuditCommand(['follow', '--file', path, '-o', 'json', '--user', 'alice'], {
    stdout,
    stderr,
    signal: ac.signal,
    pollMs: 60, // slow polls: several rotations happen between two of them
  })
  await new Promise((res) => setTimeout(res, 80))
  const written: string[] = []
  for (let i = 0; i < 40; i++) {
    const user = i % 4 === 3 ? 'bob' : 'alice'
    const rec = createAuditRecord('stream.closed', {
      user,
      streamId: `f${i}`,
      reason: 'x'.repeat(40),
    })
    await sink.write([rec])
    if (user === 'alice') written.push(rec.id)
  }
  assert.ok(sink.stats.rotations >= 4, 'the file rotated while following')
  const deadline = Date.now() + 5000
  while (ids(stdout.text).length < written.length && Date.now() < deadline)
    await new Promise((res) => setTimeout(res, 10))
  ac.abort()
  assert.equal(await done, 0, stderr.text)
  assert.deepEqual(ids(stdout.text), written, 'every new matching record, once, in order')
  assert.equal(stderr.text, '')

  // --since: the history first, then new records.
  const ac2 = new AbortController()
  const out2 = new Capture()
  const done2 = runAuditCommand(
    ['follow', '--file', path, '-o', 'json', '--since', '1h', '--stream', 'old,late'],
    {
      stdout: out2,
      stderr,
      signal: ac2.signal,
      pollMs: 10,
    },
  )
  await new Promise((res) => setTimeout(res, 50))
  const late = createAuditRecord('stream.closed', { streamId: 'late' })
  await sink.write([late])
  const until = Date.now() + 5000
  while (ids(out2.text).length < 2 && Date.now() < until)
    await new Promise((res) => setTimeout(res, 10))
  await new Promise((res) => setTimeout(res, 50))
  ac2.abort()
  assert.equal(await done2, 0)
  assert.deepEqual(ids(out2.text), [old.id, late.id], 'the rotated history, then the new one')
})

test('a hostile trail forges no row: every cell is escaped and cut short, JSON too', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  // Written raw, as an older gateway (or anything else) could have: names not checked.
  const forged = '\n2030-01-01T00:00:00.000Z  stream.closed  root-admin  kube-system/etcd-0:2379'
  const records = [
    r(T(0), 'stream.denied', { pod: `x${forged}\u001b[8m`, namespace: 'default', port: 1 }),
    r(T(1), 'stream.opened', { user: `eve\u001b]0;pwned\u0007\u202e`, pod: 'web', port: 80 }),
    r(T(2), 'stream.closed', { user: 'eve', pod: 'p'.repeat(5000), reason: 'x\u009b31m' }),
  ]
  await writeFile(path, records.map((x) => `${JSON.stringify(x)}\n`).join(''))
  const table = await run(['query', '--file', path])
  assert.equal(table.code, 0, table.err)
  const lines = table.out.trimEnd().split('\n')
  assert.equal(lines.length, records.length + 1, 'one line per record')
  assert.ok(!lines.some((l) => l.startsWith('2030')), 'no forged row')
  assert.ok(!hasControlChars(table.out.replaceAll('\n', '')), 'no control')
  assert.match(lines[1]!, /default\/x\\x0a2030-01-01T00:00:00\.000Z {2}stream\.closed/)
  assert.match(lines[2]!, /eve\\x1b\]0;pwned\\x07\\u202e/)
  assert.ok(lines[3]!.length < 600, 'a long name is cut')
  assert.match(lines[3]!, /…\[\+\d+\]/)
  // json: the same values, with what a terminal acts on escaped.
  const json = await run(['query', '--file', path, '-o', 'json'])
  assert.ok(!hasControlChars(json.out.replaceAll('\n', '')))
  assert.deepEqual(
    json.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditRecord),
    records,
  )
  // follow prints the same escaped cells.
  const ac = new AbortController()
  const out = new Capture()
  const done = runAuditCommand(['follow', '--file', path, '--since', '100000d'], {
    stdout: out,
    stderr: new Capture(),
    signal: ac.signal,
    pollMs: 10,
  })
  const until = Date.now() + 5000
  while (out.text.split('\n').length < 4 && Date.now() < until)
    await new Promise((res) => setTimeout(res, 10))
  ac.abort()
  assert.equal(await done, 0)
  assert.ok(!hasControlChars(out.text.replaceAll('\n', '')))
  assert.ok(!out.text.split('\n').some((l) => l.startsWith('2030')))
})

test('query and follow read the denials trail beside the trail, merged by time', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  const denied = join(dir, 'audit.denied.log')
  const text = (rs: AuditRecord[]): string => rs.map((x) => `${JSON.stringify(x)}\n`).join('')
  const main = [
    r(T(1), 'session.opened', { user: 'alice', sessionId: 'c1' }),
    r(T(3), 'session.closed', { users: ['alice', 'bob'], sessionId: 'c1' }),
  ]
  const refusals = [
    r(T(0), 'request.denied', {
      method: 'GET',
      path: '/api',
      status: 401,
      reason: 'unauthenticated',
    }),
    r(T(2), 'denials.suppressed', {
      sourceAddress: '203.0.113.7',
      count: 4812,
      reasons: { unauthenticated: 4800, forbidden: 12 },
      users: ['bob'],
    }),
  ]
  await writeFile(path, text(main))
  await writeFile(`${denied}.1`, text(refusals.slice(0, 1)))
  await writeFile(denied, text(refusals.slice(1)))
  const q = await run(['query', '--file', path, '-o', 'json'])
  assert.equal(q.code, 0, q.err)
  assert.deepEqual(ids(q.out), [refusals[0]!.id, main[0]!.id, refusals[1]!.id, main[1]!.id])
  const denials = await run(['query', '--file', path, '-o', 'json', '--outcome', 'denied'])
  assert.deepEqual(
    ids(denials.out),
    refusals.map((x) => x.id),
  )
  // --user matches a session's users and a summary's.
  const bob = await run(['query', '--file', path, '-o', 'json', '--user', 'bob'])
  assert.deepEqual(ids(bob.out), [refusals[1]!.id, main[1]!.id])
  const table = await run(['query', '--file', path])
  assert.match(table.out, /GET \/api +- +- +401 unauthenticated/)
  assert.match(
    table.out,
    /from 203\.0\.113\.7 .*4812 refusals counted: unauthenticated×4800 forbidden×12/,
  )
  assert.match(table.out, /session\.closed +alice,bob/)

  // follow: a denials trail that appears later is followed from its start.
  const dir2 = await tempDir(t)
  const p2 = join(dir2, 'audit.log')
  const sink = await FileSink.open({ path: p2 })
  defer(t, () => sink.close())
  const stdout = new Capture()
  const ac = new AbortController()
  const done = runAuditCommand(['follow', '--file', p2, '-o', 'json'], {
    stdout,
    stderr: new Capture(),
    signal: ac.signal,
    pollMs: 10,
  })
  await new Promise((res) => setTimeout(res, 50))
  const deniedSink = await FileSink.open({ path: join(dir2, 'audit.denied.log') })
  defer(t, () => deniedSink.close())
  const a = createAuditRecord('stream.denied', { reason: 'unauthenticated' })
  await deniedSink.write([a])
  const b = createAuditRecord('stream.opened', { streamId: 'x' })
  await sink.write([b])
  const deadline = Date.now() + 5000
  while (ids(stdout.text).length < 2 && Date.now() < deadline)
    await new Promise((res) => setTimeout(res, 10))
  ac.abort()
  assert.equal(await done, 0)
  assert.deepEqual(ids(stdout.text).sort(), [a.id, b.id].sort())
})

test('query merges several replicas’ trails (--file repeated) by time; --gateway picks one', async (t) => {
  const dir = await tempDir(t)
  const text = (rs: AuditRecord[]): string => rs.map((x) => `${JSON.stringify(x)}\n`).join('')
  const a = [
    r(T(1), 'stream.opened', { gateway: 'gw-a', streamId: 's-a-1' }),
    r(T(4), 'stream.closed', { gateway: 'gw-a', streamId: 's-a-1' }),
  ]
  const b = [
    r(T(2), 'stream.opened', { gateway: 'gw-b', streamId: 's-b-1' }),
    r(T(3), 'stream.closed', { gateway: 'gw-b', streamId: 's-b-1' }),
  ]
  const c = [r(T(0), 'gateway.started', { gateway: 'gw-c' })]
  const paths = ['a', 'b', 'c'].map((x) => join(dir, x, 'audit.log'))
  for (const [i, recs] of [a, b, c].entries()) {
    await mkdir(join(dir, ['a', 'b', 'c'][i] as string))
    await writeFile(paths[i] as string, text(recs))
  }
  const q = await run(['query', ...paths.flatMap((p) => ['--file', p]), '-o', 'json'])
  assert.equal(q.code, 0, q.err)
  assert.deepEqual(ids(q.out), [c[0]!.id, a[0]!.id, b[0]!.id, b[1]!.id, a[1]!.id])
  const onlyB = await run([
    'query',
    '-f',
    paths[0]!,
    '-f',
    paths[1]!,
    '--gateway',
    'gw-b',
    '-o',
    'json',
  ])
  assert.deepEqual(
    ids(onlyB.out),
    b.map((x) => x.id),
  )
  // One missing trail is an error, not a silently partial answer.
  const missing = await run(['query', '-f', paths[0]!, '-f', join(dir, 'nope', 'audit.log')])
  assert.equal(missing.code, 1)
  assert.match(missing.err, /no such file/)
  const follow = await run(['follow', '-f', paths[0]!, '-f', paths[1]!])
  assert.equal(follow.code, 1)
  assert.match(follow.err, /follow reads one trail/)
})
