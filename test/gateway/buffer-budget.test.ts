import { test } from 'node:test'
import assert from 'node:assert/strict'
import { BufferBudget, sizesFor } from '../../src/gateway/buffer-budget.js'
import type { Stop } from '../../src/protocol/stream-end.js'
import type { LiveStream } from '../../src/gateway/forward/stream-table.js'
import { GatewayMetrics } from '../../src/gateway/metrics.js'
import { silentLogger } from '../../src/shared/log.js'

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

/** A live stream as the backstop sees it: bytes held, last activity, and how it was ended. */
function fakeStream(id: string, held: number, lastActivity: number, killed: string[]): LiveStream {
  return {
    id,
    relay: { buffered: () => held, lastActivity, setHighWaterMark: () => undefined },
    kill: (stop: Stop) => killed.push(`${id} ${stop.endedBy} ${stop.reason}`),
  } as unknown as LiveStream
}

test('the backstop resets the streams that moved no byte for longest, until the cost fits', async (t) => {
  const now = 1_000_000
  const cases: { memory: number; killed: string[] }[] = [
    // 12 MiB held on a 10 MiB budget: the oldest stall goes.
    { memory: 0, killed: ['a limit limit:buffer-budget'] },
    // What the buffers really cost (ArrayBuffer memory) is 20 MiB: two go.
    { memory: 20 * MiB, killed: ['a limit limit:buffer-budget', 'b limit limit:buffer-budget'] },
  ]
  for (const c of cases) {
    const killed: string[] = []
    const budget = new BufferBudget({
      budgetBytes: 10 * MiB,
      metrics: new GatewayMetrics(),
      logger: silentLogger(),
      now: () => now,
      memory: () => c.memory,
    })
    t.after(() => budget.close())
    budget.started(fakeStream('b', 4 * MiB, now - 5000, killed))
    budget.started(fakeStream('a', 4 * MiB, now - 10_000, killed))
    // Moving bytes right now: never a candidate; holding nothing: never either.
    budget.started(fakeStream('c', 4 * MiB, now - 100, killed))
    budget.started(fakeStream('d', 0, now - 20_000, killed))
    await new Promise((r) => setTimeout(r, 700))
    budget.close()
    assert.deepEqual(killed, c.killed)
    assert.equal(budget.buffered, 12 * MiB)
  }
})

test('after a sweep ends streams, their freed but uncollected buffers do not end the others', async (t) => {
  let now = 1_000_000
  let memory = 20 * MiB
  const killed: string[] = []
  const budget = new BufferBudget({
    budgetBytes: 10 * MiB,
    metrics: new GatewayMetrics(),
    logger: silentLogger(),
    now: () => now,
    memory: () => memory,
  })
  t.after(() => budget.close())
  const a = fakeStream('a', 4 * MiB, now - 10_000, killed)
  const b = fakeStream('b', 4 * MiB, now - 5000, killed)
  budget.started(a)
  budget.started(b)
  budget.started(fakeStream('c', 4 * MiB, now - 3000, killed))
  budget.started(fakeStream('e', 4 * MiB, now - 100, killed))
  await new Promise((r) => setTimeout(r, 700))
  // 20 MiB of ArrayBuffer memory on a 10 MiB budget: the two stalled longest went.
  assert.deepEqual(killed, ['a limit limit:buffer-budget', 'b limit limit:buffer-budget'])
  budget.ended(a)
  budget.ended(b)
  // Their buffers are not collected yet: ArrayBuffer memory still says 20 MiB, while the live
  // relays hold 8 MiB. The next sweeps must not end c for what a and b left behind.
  now += 1000
  await new Promise((r) => setTimeout(r, 600))
  assert.deepEqual(killed, ['a limit limit:buffer-budget', 'b limit limit:buffer-budget'])
  // Once the collector had its chance, ArrayBuffer memory counts again.
  now += 2000
  memory = 20 * MiB
  await new Promise((r) => setTimeout(r, 600))
  budget.close()
  assert.deepEqual(killed, [
    'a limit limit:buffer-budget',
    'b limit limit:buffer-budget',
    'c limit limit:buffer-budget',
  ])
})
