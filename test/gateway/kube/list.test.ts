import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  MAX_LABEL_SELECTOR,
  humanDuration,
  matchesLabels,
  parseLabelSelector,
  podTable,
  wantsTable,
} from '../../../src/gateway/kube/list.js'
import { isAppError } from '../../../src/shared/errors.js'

test('label selectors: the equality forms kubectl -l sends', () => {
  assert.deepEqual(parseLabelSelector(undefined), [])
  assert.deepEqual(parseLabelSelector(''), [])
  assert.deepEqual(parseLabelSelector('app=echo,tier!=db, env==prod ,ready,!legacy'), [
    { key: 'app', op: '=', value: 'echo' },
    { key: 'tier', op: '!=', value: 'db' },
    { key: 'env', op: '=', value: 'prod' },
    { key: 'ready', op: 'exists' },
    { key: 'legacy', op: '!exists' },
  ])
  assert.deepEqual(parseLabelSelector('app.kubernetes.io/name=web'), [
    { key: 'app.kubernetes.io/name', op: '=', value: 'web' },
  ])
  for (const bad of ['app in (a,b)', 'x notin (y)', '=v', 'a=b c', 'a=' + 'x'.repeat(64), '-a=b']) {
    assert.throws(
      () => parseLabelSelector(bad),
      (e: unknown) => isAppError(e) && e.code === 'PFG_ERR_ROUTE_BAD_QUERY' && e.statusCode === 400,
      bad,
    )
  }
})

test('a label selector over the length cap is refused before it is parsed', () => {
  const long = `app=${'a,app='.repeat(MAX_LABEL_SELECTOR / 6)}`
  assert.ok(long.length > MAX_LABEL_SELECTOR)
  assert.throws(
    () => parseLabelSelector(long),
    (e: unknown) =>
      isAppError(e) && e.code === 'PFG_ERR_ROUTE_BAD_QUERY' && /too long/.test(e.message),
  )
})

test('parsing a label selector costs time linear in its length, whatever it holds', () => {
  // `a+++…+b` in a query string: one key full of spaces and no operator. A backtracking
  // pattern tries every split of it (quadratic: ~65 ms at this length before the fix);
  // a benign selector of the same length is the yardstick (both linear: a ratio near 1).
  const n = MAX_LABEL_SELECTOR - 2
  const hostile = `a${' '.repeat(n)}b`
  const benign = `a${'b'.repeat(n)}`
  const cost = (sel: string): number => {
    let best = Infinity
    for (let i = 0; i < 7; i++) {
      const t = performance.now()
      assert.throws(() => parseLabelSelector(sel), /invalid label key/)
      best = Math.min(best, performance.now() - t)
    }
    return best
  }
  cost(benign)
  const ratio = cost(hostile) / Math.max(cost(benign), 0.01)
  assert.ok(ratio < 50, `the hostile selector cost ${ratio.toFixed(1)}× the benign one`)
})

test('label matching', () => {
  const labels = { app: 'echo', tier: 'web' }
  const m = (sel: string): boolean => matchesLabels(labels, parseLabelSelector(sel))
  assert.equal(m('app=echo'), true)
  assert.equal(m('app=web'), false)
  assert.equal(m('app!=web'), true)
  assert.equal(m('db!=x'), true, 'a missing key is != anything')
  assert.equal(m('tier'), true)
  assert.equal(m('!tier'), false)
  assert.equal(m('app=echo,tier=web'), true)
  assert.equal(m('app=echo,tier=db'), false)
  assert.equal(matchesLabels(undefined, parseLabelSelector('app=echo')), false)
  assert.equal(matchesLabels(undefined, parseLabelSelector('')), true)
})

test('AGE as kubectl prints it (duration.HumanDuration)', () => {
  const s = 1000
  const cases: [number, string][] = [
    [-5 * s, '<invalid>'],
    [-1 * s, '0s'],
    [0, '0s'],
    [119 * s, '119s'],
    [120 * s, '2m'],
    [125 * s, '2m5s'],
    [599 * s, '9m59s'],
    [600 * s, '10m'],
    [179 * 60 * s, '179m'],
    [3 * 3600 * s, '3h'],
    [(3 * 3600 + 60) * s, '3h1m'],
    [8 * 3600 * s, '8h'],
    [47 * 3600 * s, '47h'],
    [48 * 3600 * s, '2d'],
    [(7 * 24 + 5) * 3600 * s, '7d5h'],
    [8 * 24 * 3600 * s, '8d'],
    [729 * 24 * 3600 * s, '729d'],
    [730 * 24 * 3600 * s, '2y'],
    [731 * 24 * 3600 * s, '2y1d'],
    [9 * 365 * 24 * 3600 * s, '9y'],
  ]
  for (const [ms, want] of cases) assert.equal(humanDuration(ms), want, `${ms} ms`)
})

test('a Table only when kubectl asks for meta.k8s.io/v1 as=Table', () => {
  assert.equal(
    wantsTable(
      'application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json',
    ),
    true,
  )
  assert.equal(wantsTable('application/json, */*'), false)
  assert.equal(wantsTable('application/json;as=Table;v=v1beta1;g=meta.k8s.io'), false)
  assert.equal(wantsTable(undefined), false)
  const t = podTable(
    [
      {
        namespace: 'default',
        name: 'echo',
        uid: 'u1',
        nodeName: 'node-a',
        phase: 'Running',
        ports: [],
        creationTimestamp: '2026-01-01T00:00:00Z',
      },
    ],
    Date.parse('2026-01-01T00:05:30Z'),
  ) as { rows: { cells: string[] }[]; columnDefinitions: { name: string }[] }
  assert.deepEqual(
    t.columnDefinitions.map((c) => c.name),
    ['Name', 'Ready', 'Status', 'Restarts', 'Age', 'Node'],
  )
  assert.deepEqual(t.rows[0]!.cells, ['echo', '1/1', 'Running', '0', '5m30s', 'node-a'])
})
