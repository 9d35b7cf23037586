/**
 * Pinned values: each test compares what it saw with `pinned.json` beside this file (in the
 * source tree), key by key. `PFGATE_PIN_UPDATE=1` rewrites the keys a run visits instead: a
 * change of the forward core's behaviour then shows as a reviewed diff of that file.
 */
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'

/** dist/test/gateway/forward → test/gateway/forward/pinned.json */
const FILE = new URL('../../../../test/gateway/forward/pinned.json', import.meta.url).pathname

let cache: Record<string, unknown> | undefined

function load(): Record<string, unknown> {
  cache ??= existsSync(FILE)
    ? (JSON.parse(readFileSync(FILE, 'utf8')) as Record<string, unknown>)
    : {}
  return cache
}

/** Asserts that `value` is what `key` pinned (or pins it under PFGATE_PIN_UPDATE=1). */
export function pinned(key: string, value: unknown): void {
  const all = load()
  const plain = JSON.parse(JSON.stringify(value)) as unknown
  if (process.env['PFGATE_PIN_UPDATE'] === '1') {
    all[key] = plain
    const sorted = Object.fromEntries(Object.entries(all).sort(([a], [b]) => a.localeCompare(b)))
    writeFileSync(FILE, `${JSON.stringify(sorted, null, 2)}\n`)
    return
  }
  assert.ok(key in all, `nothing pinned under "${key}" (run with PFGATE_PIN_UPDATE=1)`)
  assert.deepEqual(plain, all[key], key)
}
