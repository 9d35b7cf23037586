#!/usr/bin/env node
// Runs the compiled test files (dist/test/**/*.test.js) with node's test runner.
// Node 20's `node --test` does not expand globs, so the files are listed here.
// Usage: node scripts/run-tests.mjs [substring ...]   (only files whose path contains one)
import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { spawnSync } from 'node:child_process'

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
const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root })
process.exit(r.status ?? 1)
