import { test } from 'node:test'
import assert from 'node:assert/strict'
import { sizesFor } from '../../src/gateway/buffer-budget.js'

const KiB = 1024
const MiB = 1024 * KiB

test('the budget is shared out: full speed while streams are few, floors when many', () => {
  const B = 256 * MiB
  const cases: [number, number, number][] = [
    // streams, window, high-water mark
    [1, 4 * MiB, 256 * KiB],
    [15, 4 * MiB, 256 * KiB],
    [16, 2 * MiB, 256 * KiB],
    [100, 512 * KiB, 256 * KiB],
    [300, 128 * KiB, 64 * KiB],
    [1000, 32 * KiB, 16 * KiB],
    [2048, 16 * KiB, 16 * KiB],
    [20_000, 16 * KiB, 16 * KiB],
  ]
  for (const [n, window, highWaterMark] of cases) {
    assert.deepEqual(sizesFor(B, n), { window, highWaterMark }, `${n} streams`)
  }
  // Until the floors, each direction's window + read and write buffers + a chunk fit the
  // share; and the sizes only shrink as streams multiply.
  let prev = sizesFor(B, 1)
  for (let n = 1; n <= 30_000; n++) {
    const { window, highWaterMark } = sizesFor(B, n)
    if (n <= 1500) assert.ok(window + 2 * highWaterMark + 16 * KiB <= B / (2 * n), `${n} streams`)
    assert.ok(window <= prev.window && highWaterMark <= prev.highWaterMark, `${n} streams`)
    prev = { window, highWaterMark }
  }
})
