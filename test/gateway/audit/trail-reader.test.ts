import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  AuditLineDecoder,
  deniedTrailPath,
  orderTrailFiles,
  rotatedTrailPath,
} from '../../../src/protocol/audit-record.js'
import type { AuditRecord } from '../../../src/protocol/audit-record.js'
import { listTrailFiles, readTrail } from '../../../src/gateway/audit/trail-reader.js'
import { rec, tempDir } from './helpers.js'

test('trail files are ordered oldest first; unrelated names are ignored', () => {
  const names = ['audit.log', 'audit.log.2', 'x.log', 'audit.log.10', 'audit.log.1', 'audit.log.0']
  assert.deepEqual(orderTrailFiles('audit.log', [...names, 'audit.log.tmp', 'audit.log.01']), [
    'audit.log.10',
    'audit.log.2',
    'audit.log.1',
    'audit.log',
  ])
  assert.equal(rotatedTrailPath('/a/audit.log', 0), '/a/audit.log')
  assert.equal(rotatedTrailPath('/a/audit.log', 3), '/a/audit.log.3')
})

test('the decoder splits lines across arbitrary chunk boundaries, multi-byte text included', () => {
  const records = [
    rec('stream.opened', { user: 'zoë', userAgent: '日本語 ✓' }),
    rec('stream.closed', { user: 'zoë' }),
  ]
  const bytes = Buffer.from(records.map((r) => `${JSON.stringify(r)}\n`).join(''))
  for (let step = 1; step < 40; step += 7) {
    const d = new AuditLineDecoder()
    const got = []
    for (let i = 0; i < bytes.length; i += step) got.push(...d.push(bytes.subarray(i, i + step)))
    assert.deepEqual(got, records, `chunk size ${step}`)
    assert.equal(d.end(), 0)
    assert.equal(d.malformed, 0)
  }
})

test('the reader goes through rotated files in order and skips a partial last line and junk', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  const line = (id: string): string => `${JSON.stringify(rec('stream.closed', { streamId: id }))}\n`
  await writeFile(`${path}.2`, line('1') + line('2'))
  // A crash left a cut line, which the restarted writer terminated; NUL bytes too.
  await writeFile(
    `${path}.1`,
    `${line('3')}{"schema":"pfgate.audit/v1","id":\n\0\0\0\n${line('4')}`,
  )
  await writeFile(path, `${line('5')}${line('6').slice(0, 30)}`)
  assert.deepEqual(await listTrailFiles(path), [`${path}.2`, `${path}.1`, path])
  const ids: string[] = []
  const s = await readTrail(path, (r) => ids.push(r.streamId!))
  assert.deepEqual(ids, ['1', '2', '3', '4', '5'])
  assert.equal(s.malformed, 2)
  assert.equal(s.partialTails, 1)
  assert.deepEqual(await listTrailFiles(join(dir, 'nowhere', 'audit.log')), [])
})

test('the reader merges the denials trail in by time; readers accept v1 and v2 records', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'audit.log')
  assert.equal(deniedTrailPath(path), join(dir, 'audit.denied.log'))
  assert.equal(deniedTrailPath('/x/trail'), '/x/trail.denied')
  assert.equal(deniedTrailPath('/x.d/trail'), '/x.d/trail.denied')
  const at = (s: number, type: AuditRecord['type'], id: string, schema?: string): string =>
    `${JSON.stringify({
      ...rec(type, { streamId: id }),
      time: new Date(Date.UTC(2024, 0, 1, 0, 0, s)).toISOString(),
      ...(schema !== undefined ? { schema } : {}),
    })}\n`
  await writeFile(
    `${path}.1`,
    at(1, 'stream.opened', 'a', 'pfgate.audit/v1') + at(4, 'stream.closed', 'd'),
  )
  await writeFile(path, at(6, 'stream.opened', 'f'))
  await writeFile(
    `${deniedTrailPath(path)}.1`,
    at(0, 'stream.denied', 'z') + at(2, 'stream.denied', 'b'),
  )
  await writeFile(
    deniedTrailPath(path),
    at(4, 'request.denied', 'e') + at(5, 'stream.denied', 'e2'),
  )
  const ids: string[] = []
  await readTrail(path, (r) => ids.push(r.streamId!))
  assert.deepEqual(ids, ['z', 'a', 'b', 'd', 'e', 'e2', 'f'], 'ties: the main trail first')
  const main: string[] = []
  await readTrail(path, (r) => main.push(r.streamId!), { denials: false })
  assert.deepEqual(main, ['a', 'd', 'f'])
})
