/**
 * The error registry and docs/errors.md list the same codes with the same statuses, and
 * every code is used somewhere in src/ or marked reserved in the doc.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ERROR_CODES, AppError, appError, isAppError } from '../../src/shared/errors.js'
import type { AppErrorCode } from '../../src/shared/errors.js'

/** The repository root (tests run from dist/test/shared). */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url))

interface DocRow {
  status: number
  text: string
}

function docRows(): Map<string, DocRow> {
  const rows = new Map<string, DocRow>()
  const doc = readFileSync(join(ROOT, 'docs', 'errors.md'), 'utf8')
  for (const line of doc.split('\n')) {
    const m = /^\|\s*`(PFG_ERR_[A-Z0-9_]+)`\s*\|\s*([0-9]{3}|—)\s*\|(.*)\|\s*$/.exec(line)
    if (m === null) continue
    assert.ok(!rows.has(m[1] as string), `${m[1]} is listed twice in docs/errors.md`)
    rows.set(m[1] as string, { status: m[2] === '—' ? 0 : Number(m[2]), text: m[3] as string })
  }
  return rows
}

function sources(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...sources(p))
    else if (name.endsWith('.ts')) out.push(p)
  }
  return out
}

test('docs/errors.md lists every registered code, and nothing else', () => {
  const rows = docRows()
  const registered = Object.keys(ERROR_CODES)
  assert.ok(registered.length > 30)
  for (const code of registered) assert.ok(rows.has(code), `${code} is missing from docs/errors.md`)
  for (const code of rows.keys()) {
    assert.ok(code in ERROR_CODES, `docs/errors.md lists ${code}, which errors.ts does not have`)
  }
})

test('the doc gives each code its registered status', () => {
  for (const [code, row] of docRows()) {
    assert.equal(row.status, ERROR_CODES[code as AppErrorCode].status, code)
  }
})

test('every code is used in src/, or marked reserved in the doc', () => {
  const files = sources(join(ROOT, 'src')).filter((f) => !f.endsWith(join('shared', 'errors.ts')))
  const text = files.map((f) => readFileSync(f, 'utf8')).join('\n')
  const rows = docRows()
  const unused: string[] = []
  for (const code of Object.keys(ERROR_CODES)) {
    const used = text.includes(`'${code}'`)
    const reserved = /_Reserved_/.test(rows.get(code)?.text ?? '')
    if (!used && !reserved) unused.push(code)
  }
  assert.deepEqual(unused, [], 'codes neither used nor reserved')
})

test('codes are well-formed and statuses are HTTP errors or 0', () => {
  for (const [code, { status, summary }] of Object.entries(ERROR_CODES)) {
    assert.match(
      code,
      /^PFG_ERR_(CONFIG|GATEWAY|AUTH|ROUTE|PROTO|RELAY|LIMIT|AUDIT|AGENT|CLI)_[A-Z0-9_]+$/,
    )
    assert.ok(status === 0 || (status >= 400 && status <= 599), `${code}: ${status}`)
    assert.ok(summary.length > 5, code)
  }
})

test('AppError carries code and status; isAppError recognises it by shape', () => {
  const e = appError('PFG_ERR_LIMIT_HEADER_TOO_LARGE', 'too big')
  assert.ok(e instanceof AppError)
  assert.deepEqual(
    [e.code, e.statusCode, e.message],
    ['PFG_ERR_LIMIT_HEADER_TOO_LARGE', 431, 'too big'],
  )
  assert.equal(appError('PFG_ERR_RELAY_CONNECT_REFUSED', 'x', { statusCode: 404 }).statusCode, 404)
  assert.equal(isAppError(e), true)
  const lookalike = Object.assign(new Error('x'), { code: 'PFG_ERR_AUTH_MISSING', statusCode: 401 })
  assert.equal(isAppError(lookalike), true)
  assert.equal(isAppError(Object.assign(new Error('x'), { code: 'ENOENT', statusCode: 1 })), false)
  assert.equal(isAppError({ code: 'PFG_ERR_AUTH_MISSING', statusCode: 401 }), false)
})
