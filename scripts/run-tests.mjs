#!/usr/bin/env node
// Runs the compiled test files (dist/test/**/*.test.js) with node's test runner.
// Node 20's `node --test` does not expand globs, so the files are listed here.
// Usage: node scripts/run-tests.mjs [substring ...]   (only files whose path contains one)
//
// The tests run with a temp directory of their own (TMPDIR), which must be empty again
// when they are done: whatever a test leaves behind there fails the run, by name. Nothing
// of other programs on the machine is counted, and nothing is left in the system's.
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { spawnSync } from 'node:child_process'

/** Entries a run may leave: npm's compile cache (Node ≥ 22, npm exec in a test), not ours. */
const NOT_LEAKS = new Set(['node-compile-cache'])

const root = new URL('..', import.meta.url).pathname
const testRoot = join(root, 'dist', 'test')
const filters = process.argv.slice(2).filter((a) => !a.startsWith('--'))
const passthrough = process.argv.slice(2).filter((a) => a.startsWith('--'))

function walk(dir) {
  const out = []
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...walk(p))
    else if (name.endsWith('.test.js')) out.push(p)
  }
  return out
}

const files = walk(testRoot).filter(
  (f) => filters.length === 0 || filters.some((s) => relative(root, f).includes(s)),
)
if (files.length === 0) {
  console.error(`run-tests: no test files matched ${JSON.stringify(filters)} under ${testRoot}`)
  process.exit(1)
}
const args = ['--test', '--test-concurrency=1', '--test-timeout=300000', ...passthrough, ...files]
const runTmp = mkdtempSync(join(tmpdir(), 'pfgate-test-run-'))
let status
let left = []
try {
  const r = spawnSync(process.execPath, args, {
    stdio: 'inherit',
    cwd: root,
    env: { ...process.env, TMPDIR: runTmp },
  })
  status = r.status ?? 1
  left = readdirSync(runTmp).filter((name) => !NOT_LEAKS.has(name))
} finally {
  rmSync(runTmp, { recursive: true, force: true })
}
if (left.length > 0) {
  console.error(
    `run-tests: the tests left ${left.length} entr${left.length === 1 ? 'y' : 'ies'} in their ` +
      `temp directory (removed now): ${left.join(', ')}`,
  )
  status = 1
}
process.exit(status)
