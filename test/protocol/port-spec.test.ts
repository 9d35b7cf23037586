import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parsePortSpec, parsePortSpecs } from '../../src/protocol/port-spec.js'
import { isAppError } from '../../src/shared/errors.js'

const good: [string, number, number | string][] = [
  ['5000', 5000, 5000],
  ['8888:5000', 8888, 5000],
  [':5000', 0, 5000],
  ['0:5000', 0, 5000],
  ['1:65535', 1, 65535],
  ['65535', 65535, 65535],
  ['8080:http', 8080, 'http'],
  [':http', 0, 'http'],
]
for (const [raw, local, remote] of good) {
  test(`port spec ${raw} parses`, () => {
    assert.deepEqual(parsePortSpec(raw), { local, remote, raw, protocol: 'tcp' })
    assert.deepEqual(parsePortSpec(`${raw}/udp`), {
      local,
      remote,
      raw: `${raw}/udp`,
      protocol: 'udp',
    })
    assert.equal(parsePortSpec(`${raw}/tcp`).protocol, 'tcp')
  })
}

const bad = [
  '53/UDP',
  '53/sctp',
  '53/udp/udp',
  '/udp',
  '53:/udp',
  '0',
  '65536',
  '1:2:3',
  '-1',
  '',
  ':',
  '5000:',
  '5000:0',
  '70000:80',
  '80:70000',
  '-1:80',
  '05000',
  '8080:HTTP',
  'HTTP',
  ' 80',
  '80 ',
  '1e3:',
  '0x50:',
]
for (const raw of bad) {
  test(`port spec ${JSON.stringify(raw)} is rejected with PFG_ERR_CLI_USAGE`, () => {
    assert.throws(
      () => parsePortSpec(raw),
      (err: unknown) =>
        isAppError(err) &&
        err.code === 'PFG_ERR_CLI_USAGE' &&
        err.message.includes(JSON.stringify(raw)),
    )
  })
}

test('a bare port name takes its local port from what the name resolves to', () => {
  // As kubectl: `abc`, `1e3`, `0x50` are port names (a letter, IANA syntax), not numbers.
  for (const raw of ['abc', '1e3', '0x50'])
    assert.equal(parsePortSpec(raw).localFromRemote, true, raw)
  assert.deepEqual(parsePortSpec('http'), {
    local: 0,
    remote: 'http',
    raw: 'http',
    protocol: 'tcp',
    localFromRemote: true,
  })
})

test('at least one port is required', () => {
  assert.throws(() => parsePortSpecs([]), { code: 'PFG_ERR_CLI_USAGE' })
})

test('several ports keep their order', () => {
  assert.deepEqual(
    parsePortSpecs(['5000', '6000']).map((p) => p.remote),
    [5000, 6000],
  )
})
